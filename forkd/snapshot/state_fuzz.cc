// libFuzzer target for the snapshot parsers (ParseState, ParseManifest).
//
//   CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -G Ninja -DFORKD_FUZZ=ON \
//       -DFORKD_BUILD_BENCH=OFF
//   cmake --build build-fuzz --target snapshot_state_fuzz snapshot_seed_corpus
//   build-fuzz/forkd/snapshot/snapshot_seed_corpus /tmp/snap-corpus
//   build-fuzz/forkd/snapshot/snapshot_state_fuzz /tmp/snap-corpus -max_total_time=300 \
//       -dict=forkd/snapshot/state_fuzz.dict
#include <cstddef>
#include <cstdint>

#include "forkd/snapshot/state_fuzz_entry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  forkd::snapshot::FuzzSnapshotInput(data, size);
  return 0;
}

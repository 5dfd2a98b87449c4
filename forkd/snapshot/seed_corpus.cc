// Writes valid `state` files and a manifest into a directory as the fuzzer's seed corpus, so
// fuzzing starts from inputs that already pass the magic/version/section framing.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "forkd/snapshot/manifest.h"
#include "forkd/snapshot/state_format.h"
#include "forkd/snapshot/test_states.h"

int main(int argc, char** argv) {
  using namespace forkd::snapshot;
  if (argc != 2) {
    (void)std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path out = argv[1];
  std::filesystem::create_directories(out);
  auto put = [&](const std::string& name, const void* data, size_t n) {
    std::ofstream f(out / name, std::ios::binary);
    f.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
  };
  auto state = [&](const std::string& name, const SnapshotState& s) {
    auto b = SerializeState(s);
    if (!b.ok()) {
      (void)std::fprintf(stderr, "%s\n", std::string(b.status().message()).c_str());
      std::exit(1);
    }
    put(name, b->data(), b->size());
  };
  state("minimal", testing::MinimalState());
  state("one_vcpu", testing::RandomState(1, 1, 1));
  state("four_vcpus", testing::RandomState(2, 4, 5));
  Manifest m;
  m.format_version = kFormatVersion;
  m.chunk_size = 4096;
  m.memory_size = 2 * 4096 + 100;
  m.memory_chunks.resize(3);
  const std::string text = SerializeManifest(m);
  put("manifest", text.data(), text.size());
  return 0;
}

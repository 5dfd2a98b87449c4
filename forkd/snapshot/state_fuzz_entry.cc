#include "forkd/snapshot/state_fuzz_entry.h"

#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>

#include "forkd/snapshot/manifest.h"
#include "forkd/snapshot/state_format.h"

namespace forkd::snapshot {
namespace {
[[noreturn]] void Violated(const char* what) {
  (void)std::fprintf(stderr, "snapshot fuzz property violated: %s\n", what);
  std::abort();
}
}  // namespace

void FuzzSnapshotInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  if (auto state = ParseState(bytes); state.ok()) {
    auto again = SerializeState(*state);
    if (!again.ok()) Violated("parsed state does not serialize");
    auto reparsed = ParseState(*again);
    if (!reparsed.ok()) Violated("re-serialized state does not parse");
    if (!(*reparsed == *state)) Violated("state round trip changed the state");
    // Only optional unknown sections may make the input differ from our canonical encoding,
    // so a canonical encoding must reproduce itself exactly.
    auto third = SerializeState(*reparsed);
    if (!third.ok() || *third != *again) Violated("serialization is not deterministic");
  }
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto m = ParseManifest(text); m.ok()) {
    if (SerializeManifest(*m) != text) Violated("manifest round trip changed the text");
  }
}

}  // namespace forkd::snapshot

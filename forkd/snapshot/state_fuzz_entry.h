// The body of the libFuzzer target (state_fuzz.cc), kept in the library so the regular gcc
// build can run it over a mutated corpus (state_fuzz_regression_test.cc).
#pragma once

#include <cstddef>
#include <cstdint>

namespace forkd::snapshot {

// Feeds `data` to ParseState and ParseManifest. Aborts if a property is violated:
//  - anything ParseState accepts must serialize again and re-parse to an equal state with the
//    same bytes (the parser accepts exactly what the writer produces);
//  - anything ParseManifest accepts must serialize back to the same text.
// Crashes, over-reads and leaks are left to the sanitizers.
void FuzzSnapshotInput(const uint8_t* data, size_t size);

}  // namespace forkd::snapshot

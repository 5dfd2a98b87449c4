// libFuzzer's entry for one harness: FORKD_FUZZ_ENTRY names it (CMakeLists.txt).
#include <cstddef>
#include <cstdint>

#include "forkd/vmm/fuzz/entries.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return forkd::vmm::fuzz::FORKD_FUZZ_ENTRY(data, size);
}

// Linked only into vmm_unit_filtered_test: arms the real per-thread filters
// before main, so every device thread the device unit tests start (queue
// notifier, vsock muxer, net pump) installs the real device filter at its
// start (seccomp::EnterThread) and runs the real device code under it. A
// call missing from the device list kills the test binary with SIGSYS.
// gtest's own main thread stays unfiltered.
#include <cstdio>
#include <cstdlib>

#include "forkd/vmm/seccomp/thread_filters.h"

namespace {

const bool armed = [] {
  absl::Status st = forkd::vmm::seccomp::ArmThreadFilters();
  if (!st.ok()) {
    (void)std::fprintf(stderr, "arm seccomp filters: %s\n", st.ToString().c_str());
    std::abort();
  }
  return true;
}();

}  // namespace

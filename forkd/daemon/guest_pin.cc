#include "forkd/daemon/guest_pin.h"

namespace forkd::daemon {

absl::StatusOr<std::unique_ptr<templates::PinnedGuests>> OpenGuestPin(const Flags& flags) {
  return templates::PinnedGuests::Open(
      {.kernel = flags.kernel,
       .kernel_sha256 = flags.kernel_sha256,
       .initrd = flags.initrd,
       .initrd_sha256 = flags.initrd_sha256,
       .probe_guest = flags.probe_guest,
       .insecure_skip_guest_verify = flags.insecure_skip_guest_verify});
}

}  // namespace forkd::daemon

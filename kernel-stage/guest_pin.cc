#include "kernel-stage/guest_pin.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernel-stage/pinned_file.h"

namespace forkd::kernel_stage {

std::string DescribePin(const GuestPin& pin) {
  return absl::StrCat("kernel ", HexDigest(pin.kernel_sha256), " initrd ",
                      HexDigest(pin.initrd_sha256), " agent-protocol ", pin.agent_protocol,
                      pin.unpinned ? " (unpinned)" : "");
}

absl::Status CheckPin(const GuestPin& expected, const GuestPin& stamped) {
  if (expected.unpinned) {
    return absl::InvalidArgumentError("CheckPin: the expected pin must itself be pinned");
  }
  if (stamped.unpinned) {
    return PinMismatch(
        absl::StrCat("guest pin: snapshot is unpinned (", DescribePin(stamped),
                     "; made with --insecure-skip-guest-verify); this daemon is pinned to ",
                     DescribePin(expected)));
  }
  std::vector<std::string> diffs;
  if (stamped.kernel_sha256 != expected.kernel_sha256) {
    diffs.push_back(absl::StrCat("snapshot kernel SHA-256 ", HexDigest(stamped.kernel_sha256),
                                 " is not the pinned ", HexDigest(expected.kernel_sha256)));
  }
  if (stamped.initrd_sha256 != expected.initrd_sha256) {
    diffs.push_back(absl::StrCat("snapshot initrd SHA-256 ", HexDigest(stamped.initrd_sha256),
                                 " is not the pinned ", HexDigest(expected.initrd_sha256)));
  }
  if (stamped.agent_protocol != expected.agent_protocol) {
    diffs.push_back(absl::StrCat("snapshot agent protocol ", stamped.agent_protocol,
                                 " is not the expected ", expected.agent_protocol));
  }
  if (diffs.empty()) return absl::OkStatus();
  return PinMismatch(absl::StrCat("guest pin: ", absl::StrJoin(diffs, "; ")));
}

}  // namespace forkd::kernel_stage

#include "forkd/pipeline/restore_pin.h"

#include <poll.h>
#include <sys/wait.h>

#include "common/errno_status.h"
#include "forkd/sandbox/vmm_exit.h"
#include "forkd/snapshot/snapshot_dir.h"
#include "kernel-stage/digest.h"
#include "kernel-stage/pinned_file.h"
#include "spdlog/spdlog.h"

namespace forkd::pipeline {

namespace ks = forkd::kernel_stage;

namespace {
// Hang guard: a forkd-vmm that refused has written its EXIT line and is exiting.
constexpr int kExitWaitMs = 10000;
}  // namespace

absl::StatusOr<ks::GuestPin> ReadSnapshotPin(const std::filesystem::path& snapshot_dir) {
  static const snapshot::CpuIdentity host = snapshot::HostCpuIdentity();
  FORKD_ASSIGN_OR_RETURN(
      snapshot::OpenedSnapshot s,
      snapshot::OpenSnapshot(snapshot_dir, snapshot::VerifyMode::kStateOnly, host));
  const snapshot::SnapshotHeader& h = s.state.header;
  return ks::GuestPin{.kernel_sha256 = h.kernel_sha256,
                      .initrd_sha256 = h.initrd_sha256,
                      .agent_protocol = h.guest_protocol_version,
                      .unpinned = h.unpinned};
}

absl::StatusOr<std::vector<std::string>> RestorePinArgs(const templates::PinnedGuests& guests,
                                                        const templates::TemplateMeta& meta,
                                                        bool warn_waiver) {
  const std::string who = "template " + meta.id;
  auto stamped = ReadSnapshotPin(meta.snapshot());
  if (!stamped.ok()) return Annotate(stamped.status(), who + ": read the snapshot's guest pin");
  auto expected = guests.ExpectedPin(meta.guest);
  if (!expected.ok()) return Annotate(expected.status(), who);
  if (stamped->unpinned && guests.insecure_skip_guest_verify()) {
    if (!warn_waiver) return std::vector<std::string>{};
    spdlog::warn(
        "--insecure-skip-guest-verify: restoring {} from an unpinned snapshot ({}); nobody "
        "vouched for its guest",
        who, ks::DescribePin(*stamped));
    return std::vector<std::string>{};
  }
  if (absl::Status s = ks::CheckPin(*expected, *stamped); !s.ok()) return Annotate(s, who);
  return std::vector<std::string>{
      "--expect-kernel-sha256",  ks::HexDigest(expected->kernel_sha256),
      "--expect-initrd-sha256",  ks::HexDigest(expected->initrd_sha256),
      "--expect-agent-protocol", std::to_string(expected->agent_protocol)};
}

absl::Status ExplainRestoreFailure(const absl::Status& failed, int vmm_pidfd, int keeper_pidfd) {
  if (failed.ok() || vmm_pidfd < 0) return failed;
  pollfd p{vmm_pidfd, POLLIN, 0};
  int n = 0;
  while ((n = ::poll(&p, 1, kExitWaitMs)) < 0 && errno == EINTR) {
  }
  if (n <= 0) return failed;  // still running (or poll failed): not a refusal we can name
  // The VMM is its keeper's child: the keeper's status is the VMM's.
  const sandbox::VmmExit exit =
      sandbox::KeeperReport(keeper_pidfd, std::chrono::milliseconds(kExitWaitMs));
  if (exit.kind == sandbox::VmmExit::Kind::kExited && exit.value == kVmmPinRefusedExit) {
    return ks::PinMismatch("forkd-vmm refused the snapshot's guest pin (exit 4): " +
                           std::string(failed.message()));
  }
  return failed;
}

}  // namespace forkd::pipeline

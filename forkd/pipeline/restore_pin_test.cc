#include "forkd/pipeline/restore_pin.h"

#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "agent/protocol.h"
#include "common/unique_fd.h"
#include "forkd/snapshot/snapshot_dir.h"
#include "forkd/snapshot/test_states.h"
#include "gtest/gtest.h"
#include "kernel-stage/digest.h"
#include "kernel-stage/pinned_file.h"
#include "tests/support/temp_dir.h"

namespace forkd::pipeline {
namespace {

namespace fs = std::filesystem;
namespace ks = forkd::kernel_stage;

class RestorePinTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kernel_ = (tmp_.path() / "kernel").string();
    probe_ = (tmp_.path() / "probe").string();
    std::ofstream(kernel_) << "kernel bytes";
    std::ofstream(probe_) << "probe bytes";
    k_ = *ks::HashFile(kernel_);
    p_ = *ks::HashFile(probe_);
  }
  std::unique_ptr<templates::PinnedGuests> Guests(bool insecure) {
    auto g = templates::PinnedGuests::Open({.kernel = kernel_,
                                            .kernel_sha256 = insecure ? "" : ks::HexDigest(k_),
                                            .probe_guest = probe_,
                                            .insecure_skip_guest_verify = insecure});
    EXPECT_TRUE(g.ok()) << g.status();
    return g.ok() ? std::move(*g) : nullptr;
  }
  // A template `id` of `guest` whose snapshot is stamped with `pin`.
  templates::TemplateMeta Template(const std::string& id, const std::string& guest,
                                   const ks::GuestPin& pin) {
    templates::TemplateMeta m{.id = id, .guest = guest, .dir = tmp_.path() / id};
    fs::create_directories(m.snapshot());
    snapshot::SnapshotState s = snapshot::testing::MinimalState();
    s.header.cpu = snapshot::HostCpuIdentity();
    s.header.kernel_sha256 = pin.kernel_sha256;
    s.header.initrd_sha256 = pin.initrd_sha256;
    s.header.guest_protocol_version = pin.agent_protocol;
    s.header.unpinned = pin.unpinned;
    std::ofstream(snapshot::MemoryPath(m.snapshot())).close();
    fs::resize_file(snapshot::MemoryPath(m.snapshot()), s.header.memory[0].size);
    EXPECT_TRUE(snapshot::SaveSnapshot(m.snapshot(), s).ok());
    return m;
  }
  ks::GuestPin Linux() const {
    return {.kernel_sha256 = k_,
            .initrd_sha256 = ks::EmptySha256(),
            .agent_protocol = agent::kProtocolVersion};
  }

  forkd::testing::TempDir tmp_{"forkd_restore_pin"};
  std::string kernel_, probe_;
  ks::Sha256Digest k_{}, p_{};
};

TEST_F(RestorePinTest, MatchingStampGivesTheExpectations) {
  auto g = Guests(false);
  ASSERT_NE(g, nullptr);
  auto args = RestorePinArgs(*g, Template("a", "linux", Linux()));
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(*args, (std::vector<std::string>{
                       "--expect-kernel-sha256", ks::HexDigest(k_), "--expect-initrd-sha256",
                       ks::HexDigest(ks::EmptySha256()), "--expect-agent-protocol",
                       std::to_string(agent::kProtocolVersion)}));
  // A probe template expects the probe guest's digest.
  ks::GuestPin probe = Linux();
  probe.kernel_sha256 = p_;
  auto pargs = RestorePinArgs(*g, Template("p", "probe", probe));
  ASSERT_TRUE(pargs.ok()) << pargs.status();
  EXPECT_EQ((*pargs)[1], ks::HexDigest(p_));
}

TEST_F(RestorePinTest, OtherKernelIsRefusedNamingBoth) {
  auto g = Guests(false);
  ASSERT_NE(g, nullptr);
  ks::GuestPin other = Linux();
  other.kernel_sha256 = p_;  // the probe's digest, not the pinned kernel
  auto args = RestorePinArgs(*g, Template("b", "linux", other));
  ASSERT_EQ(args.status().code(), absl::StatusCode::kFailedPrecondition) << args.status();
  EXPECT_TRUE(ks::IsPinMismatch(args.status()));
  const std::string msg(args.status().message());
  EXPECT_NE(msg.find(ks::HexDigest(k_)), std::string::npos) << msg;
  EXPECT_NE(msg.find(ks::HexDigest(p_)), std::string::npos) << msg;
  EXPECT_NE(msg.find("template b"), std::string::npos) << msg;
  // A Linux stamp on a probe template is another kernel too.
  EXPECT_FALSE(RestorePinArgs(*g, Template("c", "probe", Linux())).ok());
  // Another agent protocol.
  ks::GuestPin proto = Linux();
  proto.agent_protocol += 1;
  EXPECT_TRUE(ks::IsPinMismatch(RestorePinArgs(*g, Template("d", "linux", proto)).status()));
}

TEST_F(RestorePinTest, UnpinnedIsRefusedUnlessWaived) {
  ks::GuestPin unpinned = Linux();
  unpinned.unpinned = true;
  const templates::TemplateMeta m = Template("u", "linux", unpinned);
  auto pinned = Guests(false);
  ASSERT_NE(pinned, nullptr);
  auto refused = RestorePinArgs(*pinned, m);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("unpinned"), std::string_view::npos);
  // Positive control: the waiver restores it, with no expectations.
  auto waived = Guests(true);
  ASSERT_NE(waived, nullptr);
  auto args = RestorePinArgs(*waived, m);
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_TRUE(args->empty());
  // The waiver still checks a pinned stamp.
  ks::GuestPin other = Linux();
  other.kernel_sha256 = p_;
  EXPECT_FALSE(RestorePinArgs(*waived, Template("w", "linux", other)).ok());
}

pid_t ChildExiting(int code) {
  const pid_t pid = ::fork();
  if (pid == 0) _exit(code);
  return pid;
}

TEST(ExplainRestoreFailureTest, ExitFourIsAPinRefusal) {
  const absl::Status failed =
      absl::InternalError("forkd-vmm answered 'EXIT error: x' instead of READY");
  // One child plays the VMM and its keeper (whose status is the VMM's,
  // sandbox/vmm_exit.h); 128+4 is the keeper saying signal 4 killed the VMM.
  for (int code : {4, 1, 132}) {
    const pid_t pid = ChildExiting(code);
    ASSERT_GT(pid, 0);
    UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    ASSERT_TRUE(pidfd);
    absl::Status s = ExplainRestoreFailure(failed, pidfd.get(), pidfd.get());
    if (code == 4) {
      EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
      EXPECT_TRUE(ks::IsPinMismatch(s));
      EXPECT_NE(s.message().find("EXIT error: x"), std::string_view::npos) << s;
    } else {
      EXPECT_EQ(s, failed) << "exit " << code << " is not a pin refusal";
    }
    // Not reaped by ExplainRestoreFailure: the caller's reap still finds the child.
    int st = 0;
    EXPECT_EQ(::waitpid(pid, &st, 0), pid);
  }
  EXPECT_TRUE(ExplainRestoreFailure(absl::OkStatus(), -1, -1).ok());
}

}  // namespace
}  // namespace forkd::pipeline

// The guest pin through the real forkd over its unix socket, with the stand-in
// VMM (tests/daemon/standin_vmm.cc), which stamps and checks snapshots with
// the same libraries as forkd-vmm (docs/guest-pin.md):
//   - a wrong digest at start: forkd refuses to start (exit 4, both digests);
//   - the kernel or initramfs replaced after start: the next template build is
//     refused naming both digests; running forks are untouched;
//   - a template stamped with another kernel: Fork is FAILED_PRECONDITION
//     naming both, the template is FAILED in ListTemplates;
//   - an unpinned snapshot: refused by a pinned daemon, restored (with a
//     warning on each restore) by an --insecure-skip-guest-verify one;
//   - a snapshot swapped between forkd's check and the VMM's: forkd-vmm exits
//     4 and Fork is the same FAILED_PRECONDITION, never a ready fork.
// Every refusal has its positive control.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "agent/protocol.h"
#include "forkd/api/forkd.grpc.pb.h"
#include "forkd/snapshot/snapshot_dir.h"
#include "forkd/snapshot/test_states.h"
#include "gtest/gtest.h"
#include "kernel-stage/digest.h"
#include "tests/daemon/forkd_harness.h"
#include "tests/support/requirements.h"
#include "tests/support/temp_dir.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);

namespace forkd::testing {
namespace {

namespace fs = std::filesystem;
namespace ks = forkd::kernel_stage;

std::string Sha(const std::string& path) { return ks::HexDigest(*ks::HashFile(path)); }

absl::Status ToAbsl(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

class PinTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kernel_ = (tmp_.path() / "vmlinux").string();
    initrd_ = (tmp_.path() / "initramfs").string();
    std::ofstream(kernel_) << "kernel image A";
    std::ofstream(initrd_) << "initramfs A";
  }
  void TearDown() override { StopForkd(); }

  std::vector<std::string> Pinned() const {
    return {"--kernel", kernel_, "--kernel-sha256", Sha(kernel_),
            "--initrd", initrd_, "--initrd-sha256", Sha(initrd_)};
  }
  std::vector<std::string> Waived() const {
    return {"--kernel", kernel_, "--initrd", initrd_, "--insecure-skip-guest-verify"};
  }
  ::testing::AssertionResult StartForkd(std::vector<std::string> flags,
                                        const std::string& vmm = "") {
    StopForkd();
    forkd_ = std::make_unique<ForkdProcess>(tmp_.path(), std::move(flags));
    if (!vmm.empty()) forkd_->set_vmm(vmm);
    return forkd_->Start();
  }
  // Terminates what is left, stops forkd and checks nothing of a sandbox remains.
  void StopForkd() {
    if (!forkd_) return;
    if (forkd_->pid() > 0) {
      grpc::ClientContext ctx;
      v1::ListSandboxesResponse all;
      if (api().ListSandboxes(&ctx, {}, &all).ok()) {
        for (const auto& sb : all.sandboxes()) (void)Terminate(sb.sandbox_id());
      }
      forkd_->Stop();
      EXPECT_EQ(Leftovers(forkd_->data()), "") << forkd_->Log();
    }
    forkd_.reset();
  }
  v1::Forkd::Stub& api() { return forkd_->api(); }

  absl::Status CreateLinux(const std::string& id) {
    grpc::ClientContext ctx;
    v1::CreateTemplateRequest req;
    req.set_template_id(id);
    req.mutable_linux();
    req.set_force(true);  // this host's /dev/kvm may be PVM; the stand-in boots nothing
    auto reader = api().CreateTemplate(&ctx, req);
    v1::TemplateProgress p;
    while (reader->Read(&p)) {
    }
    return ToAbsl(reader->Finish());
  }
  absl::StatusOr<v1::ForkResponse> Fork(const std::string& tmpl, const std::string& id = "") {
    grpc::ClientContext ctx;
    v1::ForkRequest req;
    req.set_template_id(tmpl);
    req.set_count(1);
    req.set_cold(true);
    if (!id.empty()) req.mutable_spec()->set_sandbox_id(id);
    v1::ForkResponse resp;
    grpc::Status s = api().Fork(&ctx, req, &resp);
    if (!s.ok()) return ToAbsl(s);
    return resp;
  }
  absl::StatusOr<std::string> Echo(const std::string& id, const std::string& word) {
    grpc::ClientContext ctx;
    v1::ExecRequest req;
    req.set_sandbox_id(id);
    req.add_argv("echo");
    req.add_argv(word);
    v1::ExecResponse resp;
    grpc::Status s = api().Exec(&ctx, req, &resp);
    if (!s.ok()) return ToAbsl(s);
    return resp.stdout();
  }
  absl::Status Terminate(const std::string& id) {
    grpc::ClientContext ctx;
    v1::TerminateRequest req;
    req.set_sandbox_id(id);
    v1::TerminateResponse resp;
    return ToAbsl(api().Terminate(&ctx, req, &resp));
  }
  std::optional<v1::Template> Find(const std::string& id) {
    grpc::ClientContext ctx;
    v1::ListTemplatesResponse all;
    EXPECT_TRUE(api().ListTemplates(&ctx, {}, &all).ok());
    for (const auto& t : all.templates()) {
      if (t.template_id() == id) return t;
    }
    return std::nullopt;
  }
  uint32_t Live() {
    grpc::ClientContext ctx;
    v1::Capacity c;
    EXPECT_TRUE(api().GetCapacity(&ctx, {}, &c).ok());
    return c.live_sandboxes();
  }
  // Runs forkd to its end (it must refuse to start): exit status and log.
  std::pair<int, std::string> RunRefusedForkd(const std::vector<std::string>& flags) {
    const fs::path log = tmp_.path() / "refused.log";
    std::vector<std::string> args = {FORKD_DAEMON_PATH,
                                     "--data-dir",
                                     (tmp_.path() / "refused-data").string(),
                                     "--listen",
                                     "unix:" + (tmp_.path() / "refused.sock").string(),
                                     "--vmm",
                                     TestVmmBinary(),
                                     "--vmm-keeper",
                                     FORKD_KEEPER_PATH,
                                     "--probe-guest",
                                     FORKD_PROBE_GUEST_PATH};
    args.insert(args.end(), flags.begin(), flags.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
      if (std::freopen(log.c_str(), "w", stderr) == nullptr) _exit(126);
      ::execv(argv[0], argv.data());
      _exit(127);
    }
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    std::ifstream in(log);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return {st, text};
  }

  TempDir tmp_{"forkd_pin"};
  std::string kernel_, initrd_;
  std::unique_ptr<ForkdProcess> forkd_;
};

TEST_F(PinTest, WrongDigestRefusesToStartNamingBoth) {
  const std::string want = Sha(initrd_);  // a valid digest, not the kernel's
  auto [st, log] = RunRefusedForkd({"--kernel", kernel_, "--kernel-sha256", want, "--initrd",
                                    initrd_, "--initrd-sha256", Sha(initrd_)});
  ASSERT_TRUE(WIFEXITED(st)) << st;
  EXPECT_EQ(WEXITSTATUS(st), 4) << log;
  EXPECT_NE(log.find(want), std::string::npos) << log;
  EXPECT_NE(log.find(Sha(kernel_)), std::string::npos) << log;
  EXPECT_NE(log.find(kernel_), std::string::npos) << log;
  // The initramfs likewise.
  auto [st2, log2] = RunRefusedForkd({"--kernel", kernel_, "--kernel-sha256", Sha(kernel_),
                                      "--initrd", initrd_, "--initrd-sha256", Sha(kernel_)});
  ASSERT_TRUE(WIFEXITED(st2)) << st2;
  EXPECT_EQ(WEXITSTATUS(st2), 4) << log2;
  EXPECT_NE(log2.find(Sha(initrd_)), std::string::npos) << log2;
  EXPECT_NE(log2.find(Sha(kernel_)), std::string::npos) << log2;
  // Positive control: the right digests start and serve.
  ASSERT_TRUE(StartForkd(Pinned()));
}

TEST_F(PinTest, ReplacedKernelRefusesTheNextBuildAndRunningForksAreUntouched) {
  ASSERT_TRUE(StartForkd(Pinned()));
  const std::string pinned = Sha(kernel_);
  ASSERT_TRUE(CreateLinux("a").ok()) << forkd_->Log();
  auto running = Fork("a", "running");
  ASSERT_TRUE(running.ok()) << running.status() << forkd_->Log();

  // Same size, other bytes: only the digest can tell.
  std::ofstream(kernel_) << "kernel image B";
  const std::string swapped = Sha(kernel_);
  ASSERT_NE(swapped, pinned);
  absl::Status b = CreateLinux("b");
  EXPECT_EQ(b.code(), absl::StatusCode::kFailedPrecondition) << b;
  EXPECT_NE(b.message().find(pinned), std::string_view::npos) << b;
  EXPECT_NE(b.message().find(swapped), std::string_view::npos) << b;
  EXPECT_FALSE(Find("b").has_value()) << "a refused build leaves no template";

  // The running fork is untouched, and the template still forks: its
  // snapshot carries the pinned kernel, whatever the file on disk is now.
  auto out = Echo("running", "still-here");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "still-here\n");
  auto again = Fork("a", "again");
  ASSERT_TRUE(again.ok()) << again.status() << forkd_->Log();
  EXPECT_TRUE(Terminate("running").ok());
  EXPECT_TRUE(Terminate("again").ok());

  // Positive control: the pinned bytes back, the build goes through.
  std::ofstream(kernel_) << "kernel image A";
  absl::Status c = CreateLinux("c");
  EXPECT_TRUE(c.ok()) << c << forkd_->Log();

  // The initramfs replaced: refused the same way.
  const std::string pinned_initrd = Sha(initrd_);
  std::ofstream(initrd_) << "initramfs B";
  absl::Status d = CreateLinux("d");
  EXPECT_EQ(d.code(), absl::StatusCode::kFailedPrecondition) << d;
  EXPECT_NE(d.message().find(pinned_initrd), std::string_view::npos) << d;
  EXPECT_NE(d.message().find(Sha(initrd_)), std::string_view::npos) << d;
}

TEST_F(PinTest, TemplateStampedWithAnotherKernelIsRefused) {
  ASSERT_TRUE(StartForkd(Pinned()));
  const std::string old_kernel = Sha(kernel_);
  ASSERT_TRUE(CreateLinux("old").ok()) << forkd_->Log();
  auto before = Fork("old", "before");
  ASSERT_TRUE(before.ok()) << before.status() << forkd_->Log();
  StopForkd();

  // The operator moves to another kernel; the old template stays on disk.
  std::ofstream(kernel_) << "kernel image, the new one";
  const std::string new_kernel = Sha(kernel_);
  ASSERT_TRUE(StartForkd(Pinned()));
  auto listed = Find("old");
  ASSERT_TRUE(listed.has_value());
  EXPECT_EQ(listed->state(), v1::Template::FAILED);
  EXPECT_NE(listed->error().find(old_kernel), std::string::npos) << listed->error();
  auto refused = Fork("old", "refused");
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_NE(refused.status().message().find(old_kernel), std::string_view::npos)
      << refused.status();
  EXPECT_NE(refused.status().message().find(new_kernel), std::string_view::npos)
      << refused.status();
  EXPECT_EQ(Live(), 0u) << "a refused fork is no capacity";
  grpc::ClientContext ctx;
  v1::GetSandboxRequest get;
  get.set_sandbox_id("refused");
  v1::Sandbox sb;
  EXPECT_EQ(api().GetSandbox(&ctx, get, &sb).error_code(), grpc::StatusCode::NOT_FOUND)
      << "nothing was reserved or spawned for it";

  // Positive control: a template of the new kernel forks.
  ASSERT_TRUE(CreateLinux("new").ok()) << forkd_->Log();
  auto ok = Fork("new", "fresh");
  ASSERT_TRUE(ok.ok()) << ok.status() << forkd_->Log();
  EXPECT_EQ(Live(), 1u);
}

TEST_F(PinTest, UnpinnedSnapshotOnlyUnderTheWaiver) {
  ASSERT_TRUE(StartForkd(Waived()));
  ASSERT_TRUE(CreateLinux("loose").ok()) << forkd_->Log();
  EXPECT_NE(forkd_->Log().find("template loose boots kernel"), std::string::npos)
      << "the waiver warns on every build:\n"
      << forkd_->Log();
  // Positive control: the waiver restores its unpinned snapshot, and says so.
  auto ok = Fork("loose", "waived");
  ASSERT_TRUE(ok.ok()) << ok.status() << forkd_->Log();
  auto out = Echo("waived", "hi");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NE(forkd_->Log().find("restoring template loose from an unpinned snapshot"),
            std::string::npos)
      << forkd_->Log();
  StopForkd();

  // The same files, now pinned: the unpinned snapshot is refused.
  ASSERT_TRUE(StartForkd(Pinned()));
  auto refused = Fork("loose", "pinned");
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_NE(refused.status().message().find("unpinned"), std::string_view::npos)
      << refused.status();
  EXPECT_EQ(Live(), 0u);
  // Positive control: a pinned build on this daemon forks.
  ASSERT_TRUE(CreateLinux("tight").ok()) << forkd_->Log();
  auto tight = Fork("tight", "tight");
  ASSERT_TRUE(tight.ok()) << tight.status() << forkd_->Log();
}

// The command line of a sandbox's VMM, NUL-separated arguments joined by ' '.
std::string CmdlineOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::string c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::replace(c.begin(), c.end(), '\0', ' ');
  return c;
}

TEST_F(PinTest, EveryRestorePassesTheExpectationsStandbyToo) {
  std::vector<std::string> flags = Pinned();
  flags.insert(flags.end(), {"--standby", "1"});
  ASSERT_TRUE(StartForkd(flags));
  ASSERT_TRUE(CreateLinux("a").ok()) << forkd_->Log();
  const std::string expect = "--expect-kernel-sha256 " + Sha(kernel_) + " --expect-initrd-sha256 " +
                             Sha(initrd_) + " --expect-agent-protocol " +
                             std::to_string(agent::kProtocolVersion);
  // A cold restore.
  auto cold = Fork("a", "cold");
  ASSERT_TRUE(cold.ok()) << cold.status() << forkd_->Log();
  EXPECT_NE(CmdlineOf(cold->sandboxes(0).vmm_pid()).find(expect), std::string::npos)
      << CmdlineOf(cold->sandboxes(0).vmm_pid());
  // A standby VMM (restored ahead by the pool). Hang guard only: the pool
  // fills within milliseconds of the template being ready.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (Find("a")->standby() == 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(Find("a")->standby(), 1u) << forkd_->Log();
  grpc::ClientContext ctx;
  v1::ForkRequest req;
  req.set_template_id("a");
  req.set_count(1);
  req.mutable_spec()->set_sandbox_id("warm");
  v1::ForkResponse warm;
  ASSERT_TRUE(api().Fork(&ctx, req, &warm).ok()) << forkd_->Log();
  ASSERT_TRUE(warm.sandboxes(0).timings().from_standby());
  const std::string line = CmdlineOf(warm.sandboxes(0).vmm_pid());
  EXPECT_NE(line.find("--standby"), std::string::npos) << line;
  EXPECT_NE(line.find(expect), std::string::npos) << line;
  auto out = Echo("warm", "warm");
  ASSERT_TRUE(out.ok()) << out.status();
}

TEST_F(PinTest, SnapshotSwappedAfterTheCheckIsRefusedByTheVmmWithExitFour) {
  // A snapshot stamped with another kernel, as forkd-vmm would write it.
  const fs::path other = tmp_.path() / "other-snap";
  fs::create_directories(other);
  snapshot::SnapshotState s = snapshot::testing::MinimalState();
  s.header.cpu = snapshot::HostCpuIdentity();
  s.header.kernel_sha256 = ks::Sha256(std::span<const uint8_t>(
      reinterpret_cast<const uint8_t*>("another kernel"), sizeof("another kernel") - 1));
  s.header.initrd_sha256 = *ks::HashFile(initrd_);
  s.header.guest_protocol_version = agent::kProtocolVersion;
  std::ofstream(snapshot::MemoryPath(other)).close();
  fs::resize_file(snapshot::MemoryPath(other), s.header.memory[0].size);
  ASSERT_TRUE(snapshot::SaveSnapshot(other, s).ok());
  const std::string other_kernel = ks::HexDigest(s.header.kernel_sha256);

  // The VMM forkd runs swaps the template's snapshot for that one once
  // `swap` exists, just before the stand-in opens it: the window between
  // forkd's own check and the VMM's, made deterministic.
  const fs::path swap = tmp_.path() / "swap";
  const fs::path wrapper = tmp_.path() / "swapping-vmm";
  std::ofstream(wrapper) << "#!/bin/sh\nprev=\nfor a in \"$@\"; do\n"
                         << "  if [ \"$prev\" = --restore ] && [ -e '" << swap.string()
                         << "' ]; then\n"
                         << "    cp '" << other.string() << "/state' '" << other.string()
                         << "/manifest' '" << other.string() << "/memory' \"$a\"/ || exit 1\n"
                         << "  fi\n  prev=$a\ndone\nexec '" << TestVmmBinary() << "' \"$@\"\n";
  fs::permissions(wrapper, fs::perms::owner_all);
  ASSERT_TRUE(StartForkd(Pinned(), wrapper.string()));
  ASSERT_TRUE(CreateLinux("a").ok()) << forkd_->Log();
  // Positive control: without the swap the fork is admitted.
  auto ok = Fork("a", "control");
  ASSERT_TRUE(ok.ok()) << ok.status() << forkd_->Log();
  ASSERT_TRUE(Terminate("control").ok());

  std::ofstream(swap).close();
  auto refused = Fork("a", "swapped");
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  const std::string msg(refused.status().message());
  EXPECT_NE(msg.find("exit 4"), std::string::npos) << msg;
  EXPECT_NE(msg.find(other_kernel), std::string::npos) << msg;
  EXPECT_NE(msg.find(Sha(kernel_)), std::string::npos) << msg;
  EXPECT_EQ(Live(), 0u) << "never counted as capacity";
  grpc::ClientContext ctx;
  v1::GetSandboxRequest get;
  get.set_sandbox_id("swapped");
  v1::Sandbox sb;
  ASSERT_TRUE(api().GetSandbox(&ctx, get, &sb).ok());
  EXPECT_EQ(sb.state(), v1::Sandbox::REAPED) << "never reported ready";

  // Now that the swap is on disk, forkd's own check refuses before spawning.
  auto precheck = Fork("a", "after");
  ASSERT_EQ(precheck.status().code(), absl::StatusCode::kFailedPrecondition) << precheck.status();
  EXPECT_EQ(std::string(precheck.status().message()).find("exit 4"), std::string::npos)
      << precheck.status();
  EXPECT_NE(precheck.status().message().find(other_kernel), std::string_view::npos)
      << precheck.status();
}

}  // namespace
}  // namespace forkd::testing

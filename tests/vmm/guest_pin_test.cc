// Tier 2: the guest pin in forkd-vmm (docs/guest-pin.md). A boot hashes the bytes it loads and
// refuses a kernel that is not the pinned one; every snapshot is stamped with the pin; a restore
// with an expectation refuses a snapshot stamped with another kernel, initramfs or agent
// protocol, and an unpinned one. Every refusal has a positive control with the right values.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "agent/protocol.h"
#include "forkd/snapshot/snapshot_dir.h"
#include "forkd/snapshot/state_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernel-stage/digest.h"
#include "tests/support/requirements.h"
#include "tests/support/temp_dir.h"
#include "tests/vmm/vmm_process.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kKvm);

namespace forkd::vmm::testing {
namespace {

namespace fs = std::filesystem;
namespace ks = kernel_stage;
using ::testing::AllOf;
using ::testing::HasSubstr;

struct Finished {
  int code = -1;
  std::string output;  // stderr (the control lines without --control-fd, warnings, usage)
};

// Runs forkd-vmm with `args` (no control fd, no pin added) to its end,
// unjailed: these tests are about the pin, and the jail check comes first.
Finished RunToExit(const std::vector<std::string>& args) {
  std::vector<std::string> argv_s = {ForkdVmmPath(), "--no-jail"};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return {};
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    if (null < 0 || ::dup2(null, STDOUT_FILENO) < 0 || ::dup2(p[1], STDERR_FILENO) < 0) _exit(127);
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  ::close(p[1]);
  Finished f;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof buf)) > 0) f.output.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  int status = 0;
  if (pid > 0 && ::waitpid(pid, &status, 0) == pid && WIFEXITED(status)) {
    f.code = WEXITSTATUS(status);
  }
  return f;
}

std::string Hex(const ks::Sha256Digest& d) { return ks::HexDigest(d); }

ks::Sha256Digest ProbeDigest() {
  auto d = ks::HashFile(ProbeGuestPath());
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *d : ks::Sha256Digest{};
}

// A digest that is not the probe guest's.
ks::Sha256Digest Other(ks::Sha256Digest d) {
  d[0] ^= 0xff;
  return d;
}

absl::StatusOr<snapshot::SnapshotHeader> StampOf(const fs::path& dir) {
  auto s = snapshot::ReadState(snapshot::StatePath(dir));
  if (!s.ok()) return s.status();
  return s->header;
}

// Boots the probe guest with `args`, snapshots it into `dir` and stops.
void SnapshotProbe(const std::vector<std::string>& extra, const fs::path& dir) {
  std::vector<std::string> args = {"--kernel", ProbeGuestPath(), "--mem-mib", "64"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto src = VmmProcess::Spawn(args);
  ASSERT_TRUE(src.ok()) << src.status();
  ASSERT_EQ((*src)->ReadLine(), "READY");
  ASSERT_TRUE((*src)->SnapshotAndStop(dir.string()).ok());
}

// Restores `dir` with `expect` flags: "READY" then a clean stop, or the EXIT line and code.
struct RestoreOutcome {
  std::string line;
  int code = -1;
};
RestoreOutcome Restore(const fs::path& dir, const std::vector<std::string>& expect) {
  std::vector<std::string> args = {"--restore", dir.string()};
  args.insert(args.end(), expect.begin(), expect.end());
  auto p = VmmProcess::Spawn(args);
  if (!p.ok()) return {std::string(p.status().message()), -1};
  RestoreOutcome o{(*p)->ReadLine().value_or("<none>")};
  if (o.line == "READY") {
    (*p)->Send("STOP");
    (void)(*p)->ReadLine();
  }
  o.code = (*p)->Wait();
  return o;
}

TEST(GuestPin, BootRefusesKernelBytesThatAreNotThePinnedOnes) {
  forkd::testing::TempDir tmp;
  const std::string kernel = (tmp.path() / "vmlinux").string();
  fs::copy_file(ProbeGuestPath(), kernel);
  auto pinned = ks::HashFile(kernel);
  ASSERT_TRUE(pinned.ok()) << pinned.status();

  // Positive control: the pinned bytes boot.
  auto good =
      VmmProcess::Spawn({"--kernel", kernel, "--kernel-sha256", Hex(*pinned), "--mem-mib", "64"});
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ((*good)->ReadLine(), "READY");
  (*good)->Send("STOP");
  EXPECT_EQ((*good)->ReadLine(), "EXIT stopped: host request");
  EXPECT_EQ((*good)->Wait(), 0);

  // The file is changed on disk after its digest was taken (one byte appended: still a loadable
  // ELF, so only the pin can catch it).
  std::ofstream(kernel, std::ios::binary | std::ios::app) << '\0';
  auto swapped = ks::HashFile(kernel);
  ASSERT_TRUE(swapped.ok()) << swapped.status();
  auto bad =
      VmmProcess::Spawn({"--kernel", kernel, "--kernel-sha256", Hex(*pinned), "--mem-mib", "64"});
  ASSERT_TRUE(bad.ok()) << bad.status();
  const std::string line = (*bad)->ReadLine().value_or("<none>");
  EXPECT_THAT(line, AllOf(HasSubstr("EXIT error: "), HasSubstr("FAILED_PRECONDITION"),
                          HasSubstr("expected " + Hex(*pinned)),
                          HasSubstr("actual " + Hex(*swapped)), HasSubstr(kernel)));
  EXPECT_EQ((*bad)->Wait(), 4);
}

TEST(GuestPin, InitramfsIsPinnedToo) {
  forkd::testing::TempDir tmp;
  const std::string initrd = (tmp.path() / "initrd").string();
  std::ofstream(initrd, std::ios::binary) << "not really a cpio, the probe guest ignores it";
  auto digest = ks::HashFile(initrd);
  ASSERT_TRUE(digest.ok()) << digest.status();
  const std::vector<std::string> base = {
      "--kernel",        ProbeGuestPath(),   "--mem-mib",      "64", "--initrd", initrd,
      "--kernel-sha256", Hex(ProbeDigest()), "--initrd-sha256"};
  std::vector<std::string> good_args = base, bad_args = base;
  good_args.push_back(Hex(*digest));
  bad_args.push_back(Hex(Other(*digest)));

  auto good = VmmProcess::Spawn(good_args);  // positive control
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ((*good)->ReadLine(), "READY");
  (*good)->Send("STOP");
  EXPECT_EQ((*good)->ReadLine(), "EXIT stopped: host request");
  EXPECT_EQ((*good)->Wait(), 0);

  auto bad = VmmProcess::Spawn(bad_args);
  ASSERT_TRUE(bad.ok()) << bad.status();
  EXPECT_THAT((*bad)->ReadLine().value_or("<none>"),
              AllOf(HasSubstr("initramfs " + initrd), HasSubstr("expected " + Hex(Other(*digest))),
                    HasSubstr("actual " + Hex(*digest))));
  EXPECT_EQ((*bad)->Wait(), 4);
}

TEST(GuestPin, ThePinIsMandatoryUnlessExplicitlyWaived) {
  forkd::testing::TempDir tmp;
  const std::string initrd = (tmp.path() / "initrd").string();
  std::ofstream(initrd, std::ios::binary) << "x";
  const std::string probe = ProbeGuestPath(), digest = Hex(ProbeDigest());
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--kernel", probe},
           {"--kernel", probe, "--kernel-sha256", digest, "--initrd", initrd},
           {"--kernel", probe, "--kernel-sha256", digest.substr(1)},
           {"--kernel", probe, "--kernel-sha256", digest, "--insecure-skip-guest-verify"},
           {"--kernel", probe, "--kernel-sha256", digest, "--expect-kernel-sha256", digest},
           {"--restore", "/nonexistent", "--expect-kernel-sha256", digest},
           {"--restore", "/nonexistent", "--kernel-sha256", digest}}) {
    const Finished f = RunToExit(args);
    EXPECT_EQ(f.code, 2) << args.back() << ": " << f.output;
  }
  const Finished missing = RunToExit({"--kernel", probe});
  EXPECT_THAT(missing.output, HasSubstr("--kernel-sha256 is required"));

  // Positive control and the waiver: the insecure boot runs (the probe resets itself), and warns.
  const Finished waived = RunToExit({"--kernel", probe, "--insecure-skip-guest-verify", "--cmdline",
                                     "probe.mode=reset", "--mem-mib", "64"});
  EXPECT_EQ(waived.code, 0) << waived.output;
  EXPECT_THAT(waived.output,
              AllOf(HasSubstr("WARNING: --insecure-skip-guest-verify"), HasSubstr("EXIT reset")));
  const Finished pinned = RunToExit({"--kernel", probe, "--kernel-sha256", digest, "--cmdline",
                                     "probe.mode=reset", "--mem-mib", "64"});
  EXPECT_EQ(pinned.code, 0) << pinned.output;
  EXPECT_THAT(pinned.output, ::testing::Not(HasSubstr("WARNING: --insecure")));
}

TEST(GuestPin, SnapshotIsStampedAndRestoresOnlyUnderTheSamePin) {
  forkd::testing::TempDir tmp;
  const fs::path dir = tmp.path() / "snap";
  const ks::Sha256Digest kernel = ProbeDigest();
  const ks::Sha256Digest no_initrd = ks::EmptySha256();
  ASSERT_NO_FATAL_FAILURE(SnapshotProbe({"--agent-protocol", "7"}, dir));  // pinned by Spawn

  auto stamp = StampOf(dir);
  ASSERT_TRUE(stamp.ok()) << stamp.status();
  EXPECT_EQ(stamp->kernel_sha256, kernel);
  EXPECT_EQ(stamp->initrd_sha256, no_initrd);
  EXPECT_EQ(stamp->guest_protocol_version, 7u);
  EXPECT_FALSE(stamp->unpinned);

  const std::vector<std::string> right = {"--expect-kernel-sha256",  Hex(kernel),
                                          "--expect-initrd-sha256",  Hex(no_initrd),
                                          "--expect-agent-protocol", "7"};
  RestoreOutcome ok = Restore(dir, right);  // positive control
  EXPECT_EQ(ok.line, "READY");
  EXPECT_EQ(ok.code, 0);

  RestoreOutcome other_kernel =
      Restore(dir, {"--expect-kernel-sha256", Hex(Other(kernel)), "--expect-initrd-sha256",
                    Hex(no_initrd), "--expect-agent-protocol", "7"});
  EXPECT_THAT(other_kernel.line, AllOf(HasSubstr("EXIT error: FAILED_PRECONDITION"),
                                       HasSubstr("snapshot kernel SHA-256 " + Hex(kernel) +
                                                 " is not the pinned " + Hex(Other(kernel)))));
  EXPECT_EQ(other_kernel.code, 4);

  RestoreOutcome other_initrd =
      Restore(dir, {"--expect-kernel-sha256", Hex(kernel), "--expect-initrd-sha256",
                    Hex(Other(no_initrd)), "--expect-agent-protocol", "7"});
  EXPECT_THAT(other_initrd.line, HasSubstr("snapshot initrd SHA-256 " + Hex(no_initrd) +
                                           " is not the pinned " + Hex(Other(no_initrd))));
  EXPECT_EQ(other_initrd.code, 4);

  // Without --expect-agent-protocol the restore expects this tree's protocol, not 7.
  RestoreOutcome other_protocol = Restore(
      dir, {"--expect-kernel-sha256", Hex(kernel), "--expect-initrd-sha256", Hex(no_initrd)});
  EXPECT_THAT(other_protocol.line, HasSubstr("snapshot agent protocol 7 is not the expected " +
                                             std::to_string(agent::kProtocolVersion)));
  EXPECT_EQ(other_protocol.code, 4);
}

TEST(GuestPin, AForkCarriesItsSnapshotsPinIntoItsOwnSnapshots) {
  forkd::testing::TempDir tmp;
  const fs::path first = tmp.path() / "first", second = tmp.path() / "second";
  ASSERT_NO_FATAL_FAILURE(SnapshotProbe({}, first));
  auto fork = VmmProcess::Spawn({"--restore", first.string()});
  ASSERT_TRUE(fork.ok()) << fork.status();
  ASSERT_EQ((*fork)->ReadLine(), "READY");
  ASSERT_TRUE((*fork)->SnapshotAndStop(second.string()).ok());
  auto a = StampOf(first), b = StampOf(second);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->kernel_sha256, b->kernel_sha256);
  EXPECT_EQ(a->initrd_sha256, b->initrd_sha256);
  EXPECT_EQ(a->guest_protocol_version, b->guest_protocol_version);
  EXPECT_EQ(a->guest_protocol_version, agent::kProtocolVersion);
  EXPECT_FALSE(b->unpinned);
}

TEST(GuestPin, UnpinnedSnapshotIsRefusedByAPinnedRestore) {
  forkd::testing::TempDir tmp;
  const fs::path dir = tmp.path() / "unpinned";
  ASSERT_NO_FATAL_FAILURE(SnapshotProbe({"--insecure-skip-guest-verify"}, dir));
  auto stamp = StampOf(dir);
  ASSERT_TRUE(stamp.ok()) << stamp.status();
  EXPECT_TRUE(stamp->unpinned);
  // The digests still say what was loaded; only nobody vouched for them.
  EXPECT_EQ(stamp->kernel_sha256, ProbeDigest());

  const std::vector<std::string> expect = {"--expect-kernel-sha256", Hex(ProbeDigest()),
                                           "--expect-initrd-sha256", Hex(ks::EmptySha256())};
  RestoreOutcome refused = Restore(dir, expect);
  EXPECT_THAT(refused.line,
              AllOf(HasSubstr("FAILED_PRECONDITION"), HasSubstr("snapshot is unpinned"),
                    HasSubstr(Hex(ProbeDigest()))));
  EXPECT_EQ(refused.code, 4);
  // Positive control: the same snapshot restores when nothing is expected.
  RestoreOutcome plain = Restore(dir, {});
  EXPECT_EQ(plain.line, "READY");
  EXPECT_EQ(plain.code, 0);
}

}  // namespace
}  // namespace forkd::vmm::testing

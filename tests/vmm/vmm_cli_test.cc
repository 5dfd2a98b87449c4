// forkd-vmm's isolation flags, before any VM exists (no /dev/kvm needed):
// the jail is the default, the debugging flags are loud, a jail without
// root is refused, and the seccomp test hook exists only in the test build.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace forkd::vmm {
namespace {

struct Result {
  int code = -1;
  std::string out, err;
};

// Runs `binary args...` (as `uid` when not negative) and collects its output.
Result Exec(const std::string& binary, const std::vector<std::string>& args, int uid = -1) {
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) return {};
  std::vector<std::string> argv_s = {binary};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::dup2(out[1], 1) < 0 || ::dup2(err[1], 2) < 0) _exit(126);
    if (uid >= 0 && (::setresgid(uid, uid, uid) != 0 || ::setresuid(uid, uid, uid) != 0)) {
      _exit(125);
    }
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  Result r;
  for (auto [fd, dst] : {std::pair{out[0], &r.out}, std::pair{err[0], &r.err}}) {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) dst->append(buf, static_cast<size_t>(n));
    ::close(fd);
  }
  int status = 0;
  (void)::waitpid(pid, &status, 0);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  return r;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ForkdVmmCli, RefusesToRunUnjailedUnlessTold) {
  Result r = Exec(FORKD_VMM_BINARY_PATH, {"--restore", "/nonexistent"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("runs guest code jailed"), std::string::npos) << r.err;
}

TEST(ForkdVmmCli, TheDebuggingFlagsAreLoud) {
  // Fails later (no snapshot, or no /dev/kvm), but only after the warnings.
  Result r =
      Exec(FORKD_VMM_BINARY_PATH, {"--restore", "/nonexistent", "--no-jail", "--no-seccomp"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("WARNING: --no-jail"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("WARNING: --no-seccomp"), std::string::npos) << r.err;
  // Positive control: without them, no warning.
  Result quiet = Exec(FORKD_VMM_BINARY_PATH, {"--restore", "/nonexistent"});
  EXPECT_EQ(quiet.err.find("WARNING"), std::string::npos) << quiet.err;
}

TEST(ForkdVmmCli, TheJailNeedsRoot) {
  const std::vector<std::string> args = {"--restore",  "/nonexistent", "--jail-root", "/tmp",
                                         "--jail-uid", "61400",        "--jail-gid",  "61400"};
  Result r = Exec(FORKD_VMM_BINARY_PATH, args, ::geteuid() == 0 ? 65534 : -1);
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("the jail needs root"), std::string::npos) << r.err;
  if (::geteuid() == 0) {
    // Positive control: as root it gets past that check (and fails on the
    // missing snapshot or /dev/kvm instead).
    Result root = Exec(FORKD_VMM_BINARY_PATH, args);
    EXPECT_EQ(root.err.find("the jail needs root"), std::string::npos) << root.err;
  }
}

TEST(ForkdVmmCli, PrintSeccompIsTheDoc) {
  Result r = Exec(FORKD_VMM_BINARY_PATH, {"--print-seccomp"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, ReadFile(std::string(FORKD_SOURCE_DIR) + "/docs/vmm-seccomp.md"));
}

// The hook that makes a thread attempt a forbidden call is neither a flag
// nor code of the shipped binary.
TEST(ForkdVmmCli, TheSeccompTestHookIsOnlyInTheTestBuild) {
  Result r = Exec(FORKD_VMM_BINARY_PATH,
                  {"--restore", "/nonexistent", "--no-jail", "--test-forbidden-syscall", "vcpu"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("unknown argument '--test-forbidden-syscall'"), std::string::npos) << r.err;
  Result hook = Exec(FORKD_VMM_TEST_HOOK_PATH, {"--restore", "/nonexistent", "--no-jail",
                                                "--test-forbidden-syscall", "vcpu"});
  EXPECT_EQ(hook.err.find("unknown argument"), std::string::npos) << hook.err;
  EXPECT_EQ(ReadFile(FORKD_VMM_BINARY_PATH).find("AttemptForbiddenCall"), std::string::npos);
  EXPECT_NE(ReadFile(FORKD_VMM_TEST_HOOK_PATH).find("AttemptForbiddenCall"), std::string::npos);
}

// Keeping the VM generation ID across a restore ("VMGenID off", the control of
// tests/svm/linux_vmgenid_test.cc) is not a flag of the shipped binary.
TEST(ForkdVmmCli, TheSameVmGenerationSwitchIsOnlyInTheTestBuild) {
  Result r = Exec(FORKD_VMM_BINARY_PATH,
                  {"--restore", "/nonexistent", "--no-jail", "--test-same-vm-generation"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("unknown argument '--test-same-vm-generation'"), std::string::npos) << r.err;
  Result hook = Exec(FORKD_VMM_TEST_HOOK_PATH,
                     {"--restore", "/nonexistent", "--no-jail", "--test-same-vm-generation"});
  EXPECT_EQ(hook.err.find("unknown argument"), std::string::npos) << hook.err;
  EXPECT_NE(hook.code, 0);  // the snapshot does not exist
}

}  // namespace
}  // namespace forkd::vmm

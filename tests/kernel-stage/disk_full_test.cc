// kernel-stage on a full disk: the destination is a 1 MiB tmpfs mounted in a private mount
// namespace of a child process (gone when the child exits; the machine's mounts are never
// touched). Needs root. Positive control: the same with room for the file.
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernel-stage/digest.h"
#include "tests/support/requirements.h"
#include "tests/support/temp_dir.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);

namespace forkd::kernel_stage {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

struct Outcome {
  int code = -1;
  int leftovers = -1;  // entries left in the destination directory
  std::string err;
};

// In a child with its own mount namespace: mount a tmpfs of `size` on `mnt`, stage `source`
// into it, and report the exit code and what is left in the directory.
Outcome StageOntoTmpfs(const fs::path& scratch, const std::string& size, const std::string& source,
                       const std::string& sha256) {
  const fs::path mnt = scratch / ("mnt-" + size), result = scratch / ("result-" + size),
                 err = scratch / ("stderr-" + size);
  fs::create_directories(mnt);
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", mnt.c_str(), "tmpfs", 0, ("size=" + size).c_str()) != 0) {
      _exit(100);
    }
    const pid_t stage = ::fork();
    if (stage == 0) {
      const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      const int o = ::open("/dev/null", O_WRONLY);
      if (e < 0 || o < 0 || ::dup2(e, 2) < 0 || ::dup2(o, 1) < 0) _exit(127);
      ::execl(KERNEL_STAGE_BINARY, KERNEL_STAGE_BINARY, "--source", source.c_str(), "--sha256",
              sha256.c_str(), "--dest", (mnt / "vmlinux").c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    int status = 0;
    if (stage < 0 || ::waitpid(stage, &status, 0) != stage || !WIFEXITED(status)) _exit(101);
    int left = 0;
    for ([[maybe_unused]] const auto& entry : fs::directory_iterator(mnt)) ++left;
    std::ofstream(result) << WEXITSTATUS(status) << " " << left << "\n";
    _exit(0);
  }
  Outcome o;
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0) {
    ADD_FAILURE() << "namespace child failed: " << status;
    return o;
  }
  std::ifstream(result) >> o.code >> o.leftovers;
  std::stringstream s;
  s << std::ifstream(err).rdbuf();
  o.err = s.str();
  return o;
}

TEST(KernelStageDiskFull, FullDiskIsItsOwnFailureAndLeavesNothing) {
  forkd::testing::TempDir tmp("kernel_stage_disk_full");
  const fs::path source = tmp.path() / "vmlinux";
  std::string kernel(3 * 1024 * 1024, 'k');
  std::ofstream(source, std::ios::binary) << kernel;
  const std::string hex =
      HexDigest(Sha256({reinterpret_cast<const uint8_t*>(kernel.data()), kernel.size()}));

  const Outcome full = StageOntoTmpfs(tmp.path(), "1m", source.string(), hex);
  EXPECT_EQ(full.code, 14) << full.err;
  EXPECT_THAT(full.err, HasSubstr("disk-full"));
  EXPECT_THAT(full.err, HasSubstr("ENOSPC"));
  EXPECT_EQ(full.leftovers, 0) << "a temp file or a partial dest was left";

  const Outcome roomy = StageOntoTmpfs(tmp.path(), "8m", source.string(), hex);  // control
  EXPECT_EQ(roomy.code, 0) << roomy.err;
  EXPECT_EQ(roomy.leftovers, 2);  // vmlinux and vmlinux.sha256
}

}  // namespace
}  // namespace forkd::kernel_stage

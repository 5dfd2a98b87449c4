// forkd's cgroup v2 placement of VMMs (cgroup.h) on the real cgroup2 mount:
// where the parent may live, the refusal of missing controllers unless the
// operator allows running without them, the limits written, and removal.
// Every test works in a cgroup of its own below the mount and removes it.
#include "forkd/sandbox/cgroup.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/assert_ok.h"
#include "tests/support/requirements.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);

namespace forkd::sandbox {
namespace {

namespace fs = std::filesystem;

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

class CgroupPlacerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto mount = Cgroup2Mount();
    if (!mount.ok()) GTEST_SKIP() << "no cgroup2 mount: " << mount.status();
    if (::access(mount->c_str(), W_OK) != 0) GTEST_SKIP() << *mount << " is not writable";
    mount_ = *mount;
    parent_ = absl::StrCat(mount_, "/forkd-cgroup-test-", ::getpid());
  }
  void TearDown() override {
    if (parent_.empty()) return;
    std::error_code ec;
    // Children first (rmdir only: a cgroup is never removed recursively).
    if (fs::is_directory(parent_, ec)) {
      for (const auto& e : fs::directory_iterator(parent_, ec)) {
        if (e.is_directory()) (void)::rmdir(e.path().c_str());
      }
      (void)::rmdir(parent_.c_str());
    }
  }
  // The VM controllers this host's cgroup2 root does not offer.
  std::set<std::string> MissingAtRoot() const {
    std::set<std::string> missing;
    auto have = ControllersOf(mount_);
    for (const char* c : kVmControllers) {
      if (!have.ok() || !have->count(c)) missing.insert(c);
    }
    return missing;
  }
  std::string mount_, parent_;
};

TEST_F(CgroupPlacerTest, AParentOutsideTheCgroup2MountIsRefused) {
  std::string warning;
  for (const std::string& bad :
       {std::string("/tmp/forkd-not-a-cgroup"), mount_, mount_ + "-sibling/forkd"}) {
    auto p = CgroupPlacer::Init({.parent = bad}, &warning);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << p.status();
    EXPECT_NE(p.status().message().find(bad), std::string::npos) << p.status();
  }
  EXPECT_FALSE(fs::exists("/tmp/forkd-not-a-cgroup"));
}

// A host whose cgroup2 lacks memory/pids/cpu (this development host
// delegates only hugetlb): refused, naming the controllers, and the parent
// forkd made is removed again; allowed, it starts with a warning naming them
// and records them as missing. On a host with all three, the positive path.
TEST_F(CgroupPlacerTest, MissingControllersAreRefusedUnlessAllowed) {
  const std::set<std::string> missing = MissingAtRoot();
  std::string warning;
  auto strict = CgroupPlacer::Init({.parent = parent_}, &warning);
  if (missing.empty()) {
    ASSERT_OK(strict.status());
    EXPECT_TRUE(strict->missing().empty());
    EXPECT_TRUE(warning.empty()) << warning;
    GTEST_SKIP() << "this host's cgroup2 offers memory, pids and cpu: no refusal to show "
                    "(the positive path passed)";
  }
  ASSERT_FALSE(strict.ok());
  EXPECT_EQ(strict.status().code(), absl::StatusCode::kFailedPrecondition) << strict.status();
  for (const auto& c : missing) {
    EXPECT_NE(strict.status().message().find(c), std::string::npos) << c << ": " << strict.status();
  }
  EXPECT_NE(strict.status().message().find("--allow-missing-cgroup-controllers"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(parent_)) << "a refused start left its parent cgroup behind";

  auto lax = CgroupPlacer::Init({.parent = parent_, .allow_missing_controllers = true}, &warning);
  ASSERT_OK(lax.status());
  EXPECT_EQ(lax->missing(), missing);
  EXPECT_TRUE(fs::is_directory(parent_));
  for (const auto& c : missing) EXPECT_NE(warning.find(c), std::string::npos) << warning;
  EXPECT_NE(warning.find("WITHOUT"), std::string::npos) << warning;
}

// The VM's cgroup is made where PathFor says, with the limits the host can
// take (all three where it has the controllers), and removed; removing a
// cgroup that is gone is not an error.
TEST_F(CgroupPlacerTest, CreatesTheVmCgroupWithItsLimitsAndRemovesIt) {
  std::string warning;
  auto p = CgroupPlacer::Init(
      {.parent = parent_, .allow_missing_controllers = true, .memory_overhead_bytes = 1 << 20},
      &warning);
  ASSERT_OK(p.status());
  const VmLimits limits = p->LimitsFor(128);
  EXPECT_EQ(limits.memory_max, (128ull << 20) + (1 << 20));
  const std::string dir = p->PathFor("k1", "");
  EXPECT_EQ(dir, parent_ + "/forkd-vm-k1");
  EXPECT_EQ(p->PathFor("k1", "/sys/fs/cgroup/pod"), "/sys/fs/cgroup/pod/forkd-vm-k1");
  ASSERT_OK(p->Create(dir, "", limits));
  ASSERT_TRUE(fs::is_directory(dir));
  if (!p->missing().count("memory")) {
    EXPECT_EQ(Read(dir + "/memory.max"), std::to_string(limits.memory_max));
  }
  if (!p->missing().count("pids")) {
    EXPECT_EQ(Read(dir + "/pids.max"), std::to_string(limits.pids_max));
  }
  if (!p->missing().count("cpu")) {
    EXPECT_EQ(Read(dir + "/cpu.weight"), std::to_string(limits.cpu_weight));
  }
  // A second VM of the same key is a collision, never a shared cgroup.
  EXPECT_FALSE(p->Create(dir, "", limits).ok());
  ASSERT_OK(RemoveVmCgroup(dir));
  EXPECT_FALSE(fs::exists(dir));
  ASSERT_OK(RemoveVmCgroup(dir));
  ASSERT_OK(RemoveVmCgroup(""));
  if (!p->missing().empty()) {
    GTEST_SKIP() << "limits not checked for the controllers this host lacks (" << warning << ")";
  }
}

// A caller's cgroup_path (a pod's cgroup on Kubernetes) that cannot
// delegate the controllers (it holds a process of its own: cgroup v2's
// no-internal-process rule) is refused, and nothing is made; allowed, the
// VM's cgroup is made under it without those limits.
TEST_F(CgroupPlacerTest, ACallersCgroupThatCannotDelegateIsRefusedUnlessAllowed) {
  const std::string given = parent_ + "/pod";
  std::string warning;
  if (!MissingAtRoot().empty()) {
    // Positive path only: a strict placer cannot start on this host
    // (MissingControllersAreRefusedUnlessAllowed).
    auto lax = CgroupPlacer::Init({.parent = parent_, .allow_missing_controllers = true}, &warning);
    ASSERT_OK(lax.status());
    ASSERT_EQ(::mkdir(given.c_str(), 0755), 0) << ::strerror(errno);
    const std::string dir = lax->PathFor("k2", given);
    ASSERT_OK(lax->Create(dir, given, lax->LimitsFor(64)));
    ASSERT_OK(RemoveVmCgroup(dir));
    GTEST_SKIP() << "this host's cgroup2 lacks VM controllers: the refusal of a caller's cgroup "
                    "needs a strict placer, which cannot start here";
  }
  auto strict = CgroupPlacer::Init({.parent = parent_}, &warning);
  ASSERT_OK(strict.status());
  ASSERT_EQ(::mkdir(given.c_str(), 0755), 0) << ::strerror(errno);
  // Positive control: an empty caller's cgroup delegates, the VM's is made.
  const std::string ok_dir = strict->PathFor("k2", given);
  ASSERT_OK(strict->Create(ok_dir, given, strict->LimitsFor(64)));
  ASSERT_OK(RemoveVmCgroup(ok_dir));
  // Turn the controllers off again and put a process into the caller's
  // cgroup: they can no longer be enabled in its subtree_control.
  for (const char* c : kVmControllers) {
    std::ofstream(given + "/cgroup.subtree_control") << "-" << c;
  }
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  std::ofstream(given + "/cgroup.procs") << child;
  const std::string dir = strict->PathFor("k3", given);
  auto st = strict->Create(dir, given, strict->LimitsFor(64));
  ::kill(child, SIGKILL);
  (void)::waitpid(child, nullptr, 0);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.message().find(given), std::string::npos) << st;
  EXPECT_FALSE(fs::exists(dir));
}

}  // namespace
}  // namespace forkd::sandbox

// The jail, entered by a forked child exactly as forkd-vmm enters it; the
// parent checks the child from outside (/proc/<pid>/status, fd, environ,
// limits, cgroup) and the child reports what it can and cannot reach from
// inside. Every "cannot" has a positive control.
#include "forkd/vmm/jail/jail.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"
#include "forkd/sandbox/cgroup.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/assert_ok.h"
#include "tests/support/requirements.h"
#include "tests/support/temp_dir.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);

namespace forkd::vmm::jail {
namespace {

constexpr uid_t kUid = 61234;
constexpr gid_t kGid = 61235;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// "Key:\tvalue" lines of /proc/<pid>/status.
std::map<std::string, std::string> Status(pid_t pid) {
  std::map<std::string, std::string> out;
  std::istringstream in(ReadAll(absl::StrCat("/proc/", pid, "/status")));
  std::string line;
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string v = line.substr(colon + 1);
    v.erase(0, v.find_first_not_of(" \t"));
    out[line.substr(0, colon)] = v;
  }
  return out;
}

// A child that enters the jail, runs `inside` (whose lines it sends back),
// then waits until the parent is done looking at it.
class JailedChild {
 public:
  JailedChild(JailConfig config, const std::function<std::string()>& inside) {
    int report[2], go[2];
    if (::pipe2(report, O_CLOEXEC) != 0 || ::pipe2(go, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(report[0]);
      ::close(go[1]);
      config.keep_fds.push_back(report[1]);
      config.keep_fds.push_back(go[0]);
      absl::Status st = EnterJail(config);
      std::string out = st.ok() ? inside() : "ERR " + st.ToString() + "\n";
      out += "DONE\n";
      (void)!::write(report[1], out.data(), out.size());
      char c;
      (void)!::read(go[0], &c, 1);  // EOF: the parent is done
      _exit(st.ok() ? 0 : 1);
    }
    ::close(report[1]);
    ::close(go[0]);
    report_ = UniqueFd(report[0]);
    go_ = UniqueFd(go[1]);
    std::string buf;
    char tmp[4096];
    while (buf.find("DONE\n") == std::string::npos) {
      const ssize_t n = ::read(report_.get(), tmp, sizeof tmp);
      if (n <= 0) break;
      buf.append(tmp, static_cast<size_t>(n));
    }
    report_text_ = buf;
  }
  ~JailedChild() { Finish(); }
  int Finish() {
    go_.reset();
    if (pid_ <= 0) return -1;
    int status = 0;
    (void)::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }
  pid_t pid() const { return pid_; }
  const std::string& report() const { return report_text_; }

 private:
  pid_t pid_ = -1;
  UniqueFd report_, go_;
  std::string report_text_;
};

class Jail : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(root_.path().empty());
    ASSERT_FALSE(data_.path().empty());
    // What a VM's snapshot and socket directories look like to the jail uid.
    ASSERT_EQ(::chmod(data_.path().c_str(), 0755), 0);
    ro_ = data_.path() / "snapshot";
    rw_ = data_.path() / "sockets";
    std::filesystem::create_directories(ro_);
    std::filesystem::create_directories(rw_);
    std::ofstream(ro_ / "state") << "snapshot-bytes";
    // World-writable, so only the read-only mount can refuse the write.
    ASSERT_EQ(::chmod((ro_ / "state").c_str(), 0666), 0);
    ASSERT_EQ(::chown(rw_.c_str(), kUid, kGid), 0);
  }
  JailConfig Config() const {
    JailConfig c;
    c.root = root_.path();
    c.uid = kUid;
    c.gid = kGid;
    c.read_only = {ro_};
    c.read_write = {rw_};
    // No /dev/kvm on every test machine: /dev/null stands in for a device node.
    c.devices = {"/dev/null"};
    c.expected_parent = ::getpid();
    return c;
  }
  forkd::testing::TempDir root_{"forkd_jail_root"}, data_{"forkd_jail_data"};
  std::filesystem::path ro_, rw_;
};

std::string Try(const char* what, int rc) {
  return std::string(what) + "=" + (rc == 0 ? std::string("ok") : std::string(ErrnoName(errno))) +
         "\n";
}

TEST_F(Jail, NoCapabilitiesNoNewPrivsTheJailIdsAndNotDumpable) {
  // Positive control: this (root) process has capabilities, so the parse is meaningful.
  auto self = Status(::getpid());
  ASSERT_NE(self["CapEff"], "0000000000000000");
  ASSERT_NE(self["CapBnd"], "0000000000000000");
  JailedChild child(Config(), [] {
    return absl::StrCat("dumpable=", ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), "\n");
  });
  ASSERT_EQ(child.report(), "dumpable=0\nDONE\n");
  auto st = Status(child.pid());
  for (const char* cap : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    EXPECT_EQ(st[cap], "0000000000000000") << cap;
  }
  EXPECT_EQ(st["NoNewPrivs"], "1");
  EXPECT_EQ(st["Uid"], absl::StrCat(kUid, "\t", kUid, "\t", kUid, "\t", kUid));
  EXPECT_EQ(st["Gid"], absl::StrCat(kGid, "\t", kGid, "\t", kGid, "\t", kGid));
  EXPECT_EQ(st["Groups"], "");
  // Not dumpable: its /proc/<pid> files (mem, environ, ...) belong to root,
  // not to the jail uid that another VMM may share.
  struct stat ps {};
  ASSERT_EQ(::stat(absl::StrCat("/proc/", child.pid(), "/mem").c_str(), &ps), 0);
  EXPECT_EQ(ps.st_uid, 0u);
  EXPECT_EQ(child.Finish(), 0);
}

TEST_F(Jail, TheFileSystemHoldsOnlyWhatWasBound) {
  const std::string ro = ro_, rw = rw_;
  JailedChild child(Config(), [ro, rw] {
    std::string out;
    auto open_rd = [](const std::string& p) {
      int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd >= 0) ::close(fd);
      return fd >= 0 ? 0 : -1;
    };
    // Host paths: gone.
    out += Try("etc_passwd", open_rd("/etc/passwd"));
    out += Try("dotdot_passwd", open_rd("/../../../etc/passwd"));
    out += Try("proc", open_rd("/proc/self/status"));
    out += Try("sys", open_rd("/sys/kernel"));
    out += Try("dev_zero", open_rd("/dev/zero"));
    // What was bound: there (positive controls), with the right mode.
    out += Try("snapshot_read", open_rd(ro + "/state"));
    int w = ::open((ro + "/state").c_str(), O_WRONLY | O_CLOEXEC);
    out += Try("snapshot_write", w >= 0 ? 0 : -1);
    int c = ::open((rw + "/vsock.sock").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    out += Try("sockets_create", c >= 0 ? 0 : -1);
    int d = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    out += Try("device_write", d >= 0 && ::write(d, "x", 1) == 1 ? 0 : -1);
    int r = ::open("/new-file", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    out += Try("root_create", r >= 0 ? 0 : -1);
    out += Try("mknod", ::mknod((rw + "/kvm").c_str(), S_IFCHR | 0600, makedev(10, 232)));
    out += Try("setuid0", ::setuid(0));
    out += Try("chroot", ::chroot("/"));
    // The root directory lists only the first components of what was bound.
    std::set<std::string> names;
    if (DIR* dir = ::opendir("/")) {
      while (dirent* e = ::readdir(dir)) names.insert(e->d_name);
      ::closedir(dir);
    }
    out += "root=";
    for (const auto& n : names) out += n + ",";
    out += "\n";
    std::set<std::string> devs;
    if (DIR* dir = ::opendir("/dev")) {
      while (dirent* e = ::readdir(dir)) devs.insert(e->d_name);
      ::closedir(dir);
    }
    out += "dev=";
    for (const auto& n : devs) out += n + ",";
    out += "\n";
    return out;
  });
  // Positive control: these exist on the host.
  ASSERT_EQ(::access("/etc/passwd", R_OK), 0);
  ASSERT_EQ(::access("/dev/zero", R_OK), 0);
  const std::string top = ro_.string().substr(1, ro_.string().find('/', 1) - 1);
  EXPECT_EQ(child.report(), absl::StrCat("etc_passwd=ENOENT\n"
                                         "dotdot_passwd=ENOENT\n"
                                         "proc=ENOENT\n"
                                         "sys=ENOENT\n"
                                         "dev_zero=ENOENT\n"
                                         "snapshot_read=ok\n"
                                         "snapshot_write=EROFS\n"
                                         "sockets_create=ok\n"
                                         "device_write=ok\n"
                                         "root_create=EROFS\n"
                                         "mknod=EPERM\n"
                                         "setuid0=EPERM\n"
                                         "chroot=EPERM\n"
                                         "root=.,..,dev,",
                                         top,
                                         ",\n"
                                         "dev=.,..,null,\n"
                                         "DONE\n"));
  EXPECT_EQ(child.Finish(), 0);
  // Nothing was written into the caller's directory: the jail root was a tmpfs.
  EXPECT_TRUE(std::filesystem::is_empty(root_.path()));
}

TEST_F(Jail, OnlyNamedFdsSurviveAndTheEnvironmentIsGone) {
  ASSERT_EQ(::setenv("FORKD_JAIL_TEST_SECRET", "hunter2", 1), 0);
  // Inherited without CLOEXEC: an fd the VMM was never told about.
  UniqueFd stray(::open("/dev/null", O_RDONLY));
  UniqueFd named(::open("/dev/null", O_RDONLY));
  ASSERT_TRUE(stray && named);
  // Positive control: this process's exec-time environment (what
  // /proc/<pid>/environ shows, and what the child inherits) is not empty.
  const std::string own_env = ReadAll("/proc/self/environ");
  ASSERT_FALSE(std::all_of(own_env.begin(), own_env.end(), [](char ch) { return ch == '\0'; }));
  JailConfig c = Config();
  c.keep_fds = {named.get()};
  JailedChild child(c, [] {
    return absl::StrCat("secret=", ::getenv("FORKD_JAIL_TEST_SECRET") ? "visible" : "gone",
                        " path=", ::getenv("PATH") ? "visible" : "gone", "\n");
  });
  ASSERT_EQ(child.report(), "secret=gone path=gone\nDONE\n");
  std::set<int> fds;
  for (const auto& e :
       std::filesystem::directory_iterator(absl::StrCat("/proc/", child.pid(), "/fd"))) {
    fds.insert(std::stoi(e.path().filename().string()));
  }
  EXPECT_EQ(fds.count(stray.get()), 0u) << "the stray fd survived";
  EXPECT_EQ(fds.count(named.get()), 1u);
  // 0, 1, 2, the named fd and the test's two pipe ends: nothing else.
  EXPECT_EQ(fds.size(), 6u);
  const std::string env = ReadAll(absl::StrCat("/proc/", child.pid(), "/environ"));
  EXPECT_TRUE(std::all_of(env.begin(), env.end(), [](char ch) { return ch == '\0'; }));
  EXPECT_EQ(child.Finish(), 0);
  (void)::unsetenv("FORKD_JAIL_TEST_SECRET");
}

TEST_F(Jail, RlimitsAreSet) {
  JailConfig c = Config();
  c.limits = {.nofile = 321, .fsize = 1 << 20, .nproc = 17};
  JailedChild child(c, [] { return std::string(); });
  ASSERT_EQ(child.report(), "DONE\n");
  const std::string limits = ReadAll(absl::StrCat("/proc/", child.pid(), "/limits"));
  auto row = [&](const std::string& name) {
    const size_t at = limits.find(name);
    if (at == std::string::npos) return std::string("missing");
    std::vector<std::string> f =
        absl::StrSplit(limits.substr(at + name.size(), limits.find('\n', at) - at - name.size()),
                       ' ', absl::SkipEmpty());
    return f.size() >= 2 ? f[0] + " " + f[1] : std::string("short");
  };
  EXPECT_EQ(row("Max open files"), "321 321");
  EXPECT_EQ(row("Max file size"), "1048576 1048576");
  EXPECT_EQ(row("Max processes"), "17 17");
  EXPECT_EQ(row("Max core file size"), "0 0");
  EXPECT_EQ(child.Finish(), 0);
}

// The jailed process dies with its parent (PR_SET_PDEATHSIG survives the
// uid change because it is armed after it); without the jail it does not.
TEST_F(Jail, DiesWithItsParent) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);  // orphans come to us
  for (bool jailed : {false, true}) {
    int pidpipe[2], ready[2];
    ASSERT_EQ(::pipe2(pidpipe, O_CLOEXEC), 0);
    ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
    const JailConfig c = Config();
    const pid_t middle = ::fork();
    if (middle == 0) {
      const pid_t grandchild = ::fork();
      if (grandchild == 0) {
        JailConfig gc = c;
        gc.expected_parent = ::getppid();
        gc.keep_fds = {ready[1]};
        if (jailed && !EnterJail(gc).ok()) _exit(1);
        (void)!::write(ready[1], "r", 1);
        ::pause();
        _exit(0);
      }
      // The parent goes away only once the grandchild is jailed (its
      // PR_SET_PDEATHSIG armed), so the test never races the arming.
      char r;
      if (::read(ready[0], &r, 1) != 1) _exit(1);
      (void)!::write(pidpipe[1], &grandchild, sizeof grandchild);
      _exit(0);
    }
    ::close(pidpipe[1]);
    ::close(ready[0]);
    ::close(ready[1]);
    pid_t grandchild = -1;
    ASSERT_EQ(::read(pidpipe[0], &grandchild, sizeof grandchild),
              static_cast<ssize_t>(sizeof grandchild));
    ::close(pidpipe[0]);
    int status = 0;
    ASSERT_EQ(::waitpid(middle, &status, 0), middle);
    if (!jailed) {
      // Positive control: still alive after its parent is gone.
      EXPECT_EQ(::waitpid(grandchild, &status, WNOHANG), 0);
      ::kill(grandchild, SIGKILL);
      ASSERT_EQ(::waitpid(grandchild, &status, 0), grandchild);
    } else {
      ASSERT_EQ(::waitpid(grandchild, &status, 0), grandchild);
      EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
          << "exited=" << WIFEXITED(status) << " code=" << WEXITSTATUS(status);
    }
  }
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
}

TEST_F(Jail, RefusesRootIdsAndRefusesWithoutRoot) {
  JailConfig c = Config();
  c.uid = 0;
  EXPECT_EQ(EnterJail(c).code(), absl::StatusCode::kInvalidArgument);
  // A non-root process cannot make the jail (forkd-vmm then refuses to run
  // unless --no-jail); checked in a child that gave up root first.
  JailedChild child(Config(), [] { return std::string(); });
  ASSERT_EQ(child.Finish(), 0);  // positive control: as root it works
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setresuid(kUid, kUid, kUid) != 0) _exit(2);
    JailConfig nc = Config();
    nc.expected_parent = 0;
    _exit(EnterJail(nc).code() == absl::StatusCode::kFailedPrecondition ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

// cgroup v2 placement: the child joins the cgroup the caller made (forkd's
// side, the limits, is forkd/sandbox/cgroup_test.cc). Skips (with the
// reason) where cgroup v2 is not mounted writable.
TEST_F(Jail, JoinsTheCallersCgroup) {
  auto mount = sandbox::Cgroup2Mount();
  if (!mount.ok()) GTEST_SKIP() << "no cgroup2 mount: " << mount.status();
  if (::access(mount->c_str(), W_OK) != 0) GTEST_SKIP() << *mount << " is not writable";
  const std::string dir = absl::StrCat(*mount, "/forkd-jail-test-", ::getpid());
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0) << "mkdir " << dir << ": " << ::strerror(errno);
  {
    JailConfig c = Config();
    c.cgroup = dir;
    JailedChild child(c, [] { return std::string(); });
    EXPECT_EQ(child.report(), "DONE\n");
    const std::string cg = ReadAll(absl::StrCat("/proc/", child.pid(), "/cgroup"));
    EXPECT_NE(cg.find(absl::StrCat("0::/forkd-jail-test-", ::getpid(), "\n")), std::string::npos)
        << cg;
    EXPECT_EQ(child.Finish(), 0);
  }
  ASSERT_OK(sandbox::RemoveVmCgroup(dir));
}

}  // namespace
}  // namespace forkd::vmm::jail

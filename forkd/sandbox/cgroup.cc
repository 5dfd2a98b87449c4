#include "forkd/sandbox/cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "common/errno_status.h"
#include "common/unique_fd.h"

namespace forkd::sandbox {
namespace fs = std::filesystem;

namespace {

absl::Status WriteFile(const std::string& path, const std::string& value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open " + path);
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
    return ErrnoStatus(errno, "write '" + value + "' to " + path);
  }
  return absl::OkStatus();
}

std::vector<std::string> Words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

bool Under(const std::string& path, const std::string& root) {
  return path == root || (path.size() > root.size() && path.compare(0, root.size(), root) == 0 &&
                          path[root.size()] == '/');
}

// Enables the VM controllers `dir` offers in its cgroup.subtree_control
// (each on its own: one the kernel refuses must not hide the others).
void EnableIn(const std::string& dir) {
  auto have = ControllersOf(dir);
  if (!have.ok()) return;
  for (const char* c : kVmControllers) {
    if (have->count(c)) (void)WriteFile(dir + "/cgroup.subtree_control", std::string("+") + c);
  }
}

// Enables the controllers from the mount down to `dir` (each ancestor's
// subtree_control, then `dir`'s own) and returns the ones `dir`'s children
// would lack.
absl::StatusOr<std::set<std::string>> PrepareParent(const std::string& mount,
                                                    const std::string& dir) {
  std::vector<std::string> chain;
  for (fs::path p = dir; Under(p.string(), mount); p = p.parent_path()) {
    chain.insert(chain.begin(), p.string());
    if (p.string() == mount) break;
  }
  for (const auto& d : chain) EnableIn(d);
  FORKD_ASSIGN_OR_RETURN(std::string sub, [&]() -> absl::StatusOr<std::string> {
    std::ifstream in(dir + "/cgroup.subtree_control");
    if (!in) return absl::NotFoundError("cannot read " + dir + "/cgroup.subtree_control");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }());
  std::set<std::string> enabled;
  for (auto& w : Words(sub)) enabled.insert(w);
  std::set<std::string> missing;
  for (const char* c : kVmControllers) {
    if (!enabled.count(c)) missing.insert(c);
  }
  return missing;
}

std::string Join(const std::set<std::string>& s) {
  std::string out;
  for (const auto& x : s) out += (out.empty() ? "" : ", ") + x;
  return out;
}

}  // namespace

absl::StatusOr<std::string> Cgroup2Mount() {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return absl::UnavailableError("cannot read /proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // "<id> <parent> <maj:min> <root> <mount point> <options> ... - <fstype> <source> ..."
    const size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    const auto after = Words(line.substr(dash + 3));
    const auto before = Words(line.substr(0, dash));
    if (!after.empty() && after[0] == "cgroup2" && before.size() > 4) return before[4];
  }
  return absl::NotFoundError("no cgroup2 file system is mounted");
}

absl::StatusOr<std::set<std::string>> ControllersOf(const std::string& dir) {
  std::ifstream in(dir + "/cgroup.controllers");
  if (!in) return absl::NotFoundError("cannot read " + dir + "/cgroup.controllers");
  std::stringstream ss;
  ss << in.rdbuf();
  std::set<std::string> out;
  for (auto& w : Words(ss.str())) out.insert(w);
  return out;
}

absl::StatusOr<CgroupPlacer> CgroupPlacer::Init(const CgroupPolicy& policy, std::string* warning) {
  CgroupPlacer p;
  p.policy_ = policy;
  if (!policy.enabled) return p;
  FORKD_ASSIGN_OR_RETURN(p.mount_, Cgroup2Mount());
  p.parent_ = policy.parent.empty() ? p.mount_ + "/forkd.slice" : policy.parent;
  if (!Under(p.parent_, p.mount_) || p.parent_ == p.mount_) {
    return absl::InvalidArgumentError("--vmm-cgroup-parent " + p.parent_ +
                                      " is not a directory below the cgroup2 mount " + p.mount_);
  }
  bool created = true;
  if (::mkdir(p.parent_.c_str(), 0755) != 0) {
    if (errno != EEXIST) return ErrnoStatus(errno, "mkdir cgroup " + p.parent_);
    created = false;
  }
  FORKD_ASSIGN_OR_RETURN(p.missing_, PrepareParent(p.mount_, p.parent_));
  if (!p.missing_.empty()) {
    const std::string what = "the cgroup v2 controller(s) " + Join(p.missing_) +
                             " cannot be enabled for " + p.parent_ + " (the host's cgroup2 at " +
                             p.mount_ + " offers only '" +
                             Join(ControllersOf(p.mount_).value_or(std::set<std::string>{})) + "')";
    if (!policy.allow_missing_controllers) {
      if (created) (void)::rmdir(p.parent_.c_str());  // refused: nothing of forkd's stays
      return absl::FailedPreconditionError(what +
                                           "; VMs would run without those limits. Pass "
                                           "--allow-missing-cgroup-controllers to run anyway");
    }
    if (warning) {
      *warning = what + "; --allow-missing-cgroup-controllers: VMs run WITHOUT those limits";
    }
  }
  return p;
}

VmLimits CgroupPlacer::LimitsFor(uint32_t guest_memory_mib) const {
  return VmLimits{
      .memory_max = (static_cast<uint64_t>(guest_memory_mib) << 20) + policy_.memory_overhead_bytes,
      .pids_max = policy_.pids_max,
      .cpu_weight = policy_.cpu_weight};
}

std::string CgroupPlacer::PathFor(const std::string& key, const std::string& given_parent) const {
  return (given_parent.empty() ? parent_ : given_parent) + "/forkd-vm-" + key;
}

absl::Status CgroupPlacer::Create(const std::string& dir, const std::string& given_parent,
                                  const VmLimits& limits) const {
  std::set<std::string> missing = missing_;
  if (!given_parent.empty()) {
    FORKD_ASSIGN_OR_RETURN(missing, PrepareParent(mount_, given_parent));
    if (!missing.empty() && !policy_.allow_missing_controllers) {
      return absl::FailedPreconditionError(
          "cgroup_path " + given_parent + ": the controller(s) " + Join(missing) +
          " cannot be enabled in its cgroup.subtree_control (it must have no processes of "
          "its own and its parent must delegate them); --allow-missing-cgroup-controllers "
          "runs the VM without those limits");
    }
  }
  if (::mkdir(dir.c_str(), 0755) != 0) return ErrnoStatus(errno, "mkdir cgroup " + dir);
  absl::Status st;
  if (!missing.count("memory")) {
    st = WriteFile(dir + "/memory.max", std::to_string(limits.memory_max));
  }
  if (st.ok() && !missing.count("pids")) {
    st = WriteFile(dir + "/pids.max", std::to_string(limits.pids_max));
  }
  if (st.ok() && !missing.count("cpu")) {
    st = WriteFile(dir + "/cpu.weight", std::to_string(limits.cpu_weight));
  }
  if (!st.ok()) {
    (void)::rmdir(dir.c_str());  // a half-limited cgroup is never used
    return st;
  }
  return absl::OkStatus();
}

absl::Status KillAndRemoveVmCgroup(const std::string& dir) {
  if (dir.empty()) return absl::OkStatus();
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) return absl::OkStatus();
  // cgroup.kill (Linux 5.14+) SIGKILLs every process in the cgroup and
  // below; on older kernels each pid in cgroup.procs gets one.
  absl::Status killed = WriteFile(dir + "/cgroup.kill", "1");
  if (!killed.ok()) {
    std::ifstream procs(dir + "/cgroup.procs");
    for (pid_t pid; procs >> pid;) {
      if (::kill(pid, SIGKILL) != 0 && errno != ESRCH) {
        return ErrnoStatus(errno, "kill " + std::to_string(pid) + " in cgroup " + dir);
      }
    }
  }
  return RemoveVmCgroup(dir);
}

absl::Status RemoveVmCgroup(const std::string& dir) {
  if (dir.empty()) return absl::OkStatus();
  // The reaped VMM's last task can still be leaving the cgroup (EBUSY) for
  // a moment after waitid returned; a bounded retry, never a wait on time
  // for correctness: the error is returned if it persists.
  for (int attempt = 0;; attempt++) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return absl::OkStatus();
    if (errno != EBUSY || attempt >= 200) return ErrnoStatus(errno, "rmdir cgroup " + dir);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace forkd::sandbox

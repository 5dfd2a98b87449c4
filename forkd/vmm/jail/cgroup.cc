#include "forkd/vmm/jail/cgroup.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"

namespace forkd::vmm::jail {
namespace {

absl::Status WriteFile(const std::string& dir, const std::string& name, const std::string& value) {
  const std::string path = dir + "/" + name;
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) {
      return absl::FailedPreconditionError(
          absl::StrCat("cgroup ", dir, ": no ", name,
                       " (controller not enabled in the parent's cgroup.subtree_control)"));
    }
    return ErrnoStatus(errno, "open " + path);
  }
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
    return ErrnoStatus(errno, absl::StrCat("write '", value, "' to ", path));
  }
  return absl::OkStatus();
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
    std::vector<std::string> after = absl::StrSplit(line.substr(dash + 3), ' ');
    std::vector<std::string> before = absl::StrSplit(line.substr(0, dash), ' ');
    if (!after.empty() && after[0] == "cgroup2" && before.size() > 4) return before[4];
  }
  return absl::NotFoundError("no cgroup2 mount");
}

absl::Status CreateCgroup(const std::string& dir, const CgroupLimits& limits) {
  if (::mkdir(dir.c_str(), 0755) != 0) return ErrnoStatus(errno, "mkdir cgroup " + dir);
  absl::Status st = absl::OkStatus();
  if (limits.memory_max) st = WriteFile(dir, "memory.max", std::to_string(*limits.memory_max));
  if (st.ok() && limits.pids_max) st = WriteFile(dir, "pids.max", std::to_string(*limits.pids_max));
  if (st.ok() && limits.cpu_weight) {
    st = WriteFile(dir, "cpu.weight", std::to_string(*limits.cpu_weight));
  }
  if (!st.ok()) (void)::rmdir(dir.c_str());  // a half-limited cgroup is never handed out
  return st;
}

absl::Status RemoveCgroup(const std::string& dir) {
  if (::rmdir(dir.c_str()) != 0) return ErrnoStatus(errno, "rmdir cgroup " + dir);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadCgroupFile(const std::string& dir, const std::string& name) {
  std::ifstream in(dir + "/" + name);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", dir, "/", name));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace forkd::vmm::jail

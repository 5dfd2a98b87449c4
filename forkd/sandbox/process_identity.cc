#include "forkd/sandbox/process_identity.h"

#include <unistd.h>

#include <cerrno>
#include <climits>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/errno_status.h"

namespace forkd::sandbox {

absl::StatusOr<ProcessIdentity> IdentityOf(pid_t pid) {
  const std::string base = "/proc/" + std::to_string(pid);
  ProcessIdentity id;
  char buf[PATH_MAX];
  const ssize_t n = ::readlink((base + "/exe").c_str(), buf, sizeof buf - 1);
  if (n < 0) {
    if (errno == ENOENT || errno == ESRCH)
      return absl::NotFoundError("process " + base + " is gone");
    return ErrnoStatus(errno, "readlink " + base + "/exe");
  }
  id.exe.assign(buf, static_cast<size_t>(n));
  std::ifstream in(base + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // The command name (field 2) may hold spaces and parentheses: fields
  // after it start after the last ')'.
  const size_t close = stat.rfind(')');
  if (stat.empty() || close == std::string::npos) {
    return absl::NotFoundError("process " + base + " is gone (no stat)");
  }
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  // Field 3 (state) is the first after ')'; start time is field 22.
  for (int i = 3; i <= 22 && fields >> field; i++) {
    if (i == 22) id.start_ticks = std::stoull(field);
  }
  if (id.start_ticks == 0) return absl::DataLossError(base + "/stat has no start time");
  return id;
}

absl::StatusOr<pid_t> ParentOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (stat.empty() || close == std::string::npos) {
    return absl::NotFoundError("process " + std::to_string(pid) + " is gone");
  }
  std::istringstream fields(stat.substr(close + 2));
  std::string state;
  long ppid = 0;
  if (!(fields >> state >> ppid) || ppid < 0) {
    return absl::DataLossError("/proc/" + std::to_string(pid) + "/stat has no parent");
  }
  return static_cast<pid_t>(ppid);
}

absl::StatusOr<std::vector<std::string>> CommandLineOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  if (!in) return absl::NotFoundError("process " + std::to_string(pid) + " is gone");
  std::vector<std::string> out;
  std::string arg;
  while (std::getline(in, arg, '\0')) out.push_back(arg);
  return out;
}

absl::StatusOr<MemoryUse> MemoryOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  if (!in) return absl::NotFoundError("process " + std::to_string(pid) + " is gone");
  MemoryUse m;
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    if (!(ls >> key >> kib >> unit)) continue;
    if (key == "Pss:") m.pss = kib * 1024;
    if (key == "Rss:") m.rss = kib * 1024;
  }
  return m;
}

}  // namespace forkd::sandbox

#include "netfilter/sysctl.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "common/errno_status.h"
#include "common/unique_fd.h"
#include "netfilter/netns.h"
#include "netfilter/policy.h"

namespace forkd::netfilter {
namespace {

bool Optional(const std::string& path) {
  return path.find("seg6_enabled") != std::string::npos ||
         path.find("rpl_seg_enabled") != std::string::npos;
}

absl::Status Write(const std::string& path, const std::string& value) {
  const std::string full = "/proc/sys/" + path;
  UniqueFd fd(::open(full.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT && Optional(path)) return absl::OkStatus();
    return ErrnoStatus(errno, "open " + full);
  }
  const ssize_t n = ::write(fd.get(), value.data(), value.size());
  if (n < 0) return ErrnoStatus(errno, "write " + value + " to " + full);
  if (static_cast<size_t>(n) != value.size()) {
    return absl::InternalError("short write of " + value + " to " + full);
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<std::pair<std::string, std::string>> HardeningSysctls(const std::string& tap) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const std::string& dev : {std::string("all"), tap}) {
    const std::string v4 = "net/ipv4/conf/" + dev + "/";
    const std::string v6 = "net/ipv6/conf/" + dev + "/";
    out.emplace_back(v4 + "accept_source_route", "0");
    out.emplace_back(v4 + "accept_redirects", "0");
    out.emplace_back(v4 + "secure_redirects", "0");
    out.emplace_back(v4 + "send_redirects", "0");
    // IPv6: a negative value refuses every routing header (0 still takes type 2).
    out.emplace_back(v6 + "accept_source_route", "-1");
    out.emplace_back(v6 + "accept_redirects", "0");
    out.emplace_back(v6 + "seg6_enabled", "0");
    out.emplace_back(v6 + "rpl_seg_enabled", "0");
  }
  return out;
}

absl::Status HardenNamespace(int netns_fd, const std::string& tap) {
  FORKD_RETURN_IF_ERROR(ValidateName("tap", tap, kMaxTapNameLength));
  absl::Status result;
  std::thread worker([&] {
    auto guard = NetnsGuard::Enter(netns_fd);
    if (!guard.ok()) {
      result = guard.status();
      return;
    }
    for (const auto& [path, value] : HardeningSysctls(tap)) {
      if (absl::Status s = Write(path, value); !s.ok()) {
        result = s;
        return;
      }
    }
  });
  worker.join();
  if (!result.ok()) {
    return absl::Status(result.code(),
                        "harden namespace for tap " + tap + ": " + std::string(result.message()));
  }
  return absl::OkStatus();
}

}  // namespace forkd::netfilter

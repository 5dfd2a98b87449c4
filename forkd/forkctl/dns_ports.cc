#include "forkd/forkctl/dns_ports.h"

#include <algorithm>
#include <sstream>

#include "absl/status/status.h"

namespace forkd::forkctl {

absl::StatusOr<std::vector<uint32_t>> ParseDnsPorts(const std::vector<std::string>& values) {
  std::vector<uint32_t> out;
  for (const std::string& value : values) {
    std::stringstream ss(value);
    std::string item;
    bool any = false;
    while (std::getline(ss, item, ',')) {
      any = true;
      const bool digits =
          !item.empty() && item.size() <= 5 &&
          std::all_of(item.begin(), item.end(), [](char c) { return c >= '0' && c <= '9'; });
      const uint32_t port = digits ? static_cast<uint32_t>(std::stoul(item)) : 0;
      if (port < 1 || port > 65535) {
        return absl::InvalidArgumentError("--dns-port '" + item + "' is not a port (1-65535)");
      }
      if (std::find(out.begin(), out.end(), port) == out.end()) out.push_back(port);
    }
    if (!any || value.back() == ',') {
      return absl::InvalidArgumentError("--dns-port '" + value + "' has an empty item");
    }
  }
  return out;
}

}  // namespace forkd::forkctl

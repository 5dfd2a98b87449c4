// The per-namespace kernel settings the datapath relies on, set through
// /proc/sys inside the target namespace (no `sysctl` process). The nftables
// chains drop source-routed packets themselves (ruleset.cc, header hygiene);
// these settings are the second line: the kernel will not act on a routing
// header or option, nor take or send redirects, on the tap or on `all`.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace forkd::netfilter {

// (path under /proc/sys, value) pairs HardenNamespace writes for `tap`.
std::vector<std::pair<std::string, std::string>> HardeningSysctls(const std::string& tap);

// Writes HardeningSysctls(tap) inside the namespace `netns_fd`, from a
// short-lived thread that enters it (the caller's thread never changes
// namespace). The tap must exist. Settings of features this kernel lacks
// (no seg6 or RPL support: the file is absent) are skipped; every other
// failure is returned with the path.
absl::Status HardenNamespace(int netns_fd, const std::string& tap);

}  // namespace forkd::netfilter

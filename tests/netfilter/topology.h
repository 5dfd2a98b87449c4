// The datapath test topology, built entirely inside namespaces the test owns
// (anonymous: they vanish when the Topology is destroyed, even if the test
// process dies):
//
//   guest<i> ns                pod ns (chains live here)           internet ns
//   eth0 10.200.i.2/29 ─veth─ sbt<i> 10.200.i.1/29 + 169.254.1.1
//                              up0 198.18.0.1/30 ───────veth────── inet0 198.18.0.2/30
//                                                                  + the test hosts (/32)
//
// The pod side of each guest veth stands in for the VM's tap.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace forkd::testing {

struct GuestLink {
  UniqueFd ns;
  std::string tap;       // pod-side interface name
  std::string guest_ip;  // the guest's own address
  std::string spoof_ip;  // an address in the guest's subnet that is not the guest's
  std::string gateway;   // the pod side's address
  std::string guest_ip6, spoof_ip6, gateway6;  // the same for IPv6 (fd42:<i>::/64)
};

struct Topology {
  UniqueFd pod;
  UniqueFd internet;
  std::vector<GuestLink> guests;

  static absl::StatusOr<Topology> Create(int guest_count);
};

// Addresses served by the "internet" namespace.
inline constexpr char kAllowedHost[] = "203.0.113.10";
inline constexpr char kAnyPortHost[] = "203.0.113.20";
inline constexpr char kOtherHost[] = "198.51.100.20";
inline constexpr char kMetadataHost[] = "169.254.169.254";
inline constexpr char kResolver[] = "169.254.1.1";
inline constexpr char kAllowedHost6[] = "2001:db8::10";
inline constexpr char kOtherHost6[] = "2001:db8::20";
inline constexpr char kMetadataHost6[] = "fd00:ec2::254";
inline constexpr char kUplink[] = "up0";
inline constexpr char kUplinkAddress[] = "198.18.0.1";
const std::vector<std::string>& PrivateHosts();  // one per private IPv4 range

}  // namespace forkd::testing

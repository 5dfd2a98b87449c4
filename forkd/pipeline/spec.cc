#include "forkd/pipeline/spec.h"

#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <set>

#include "common/errno_status.h"
#include "forkd/pipeline/sandbox_dns.h"
#include "forkd/sandbox/ids.h"
#include "forkd/sandbox/netns_pin.h"

namespace forkd::pipeline {
namespace {

bool HasDotDot(const std::string& path) {
  return path.find("/../") != std::string::npos || path.ends_with("/..") ||
         path.find("/./") != std::string::npos;
}

absl::Status Bad(const std::string& where, const std::string& what) {
  return absl::InvalidArgumentError(where + ": " + what);
}

}  // namespace

bool IsCgroup2Dir(const std::string& path) {
  struct statfs fs {};
  struct stat st {};
  return ::statfs(path.c_str(), &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC &&
         ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

absl::Status ValidateSpec(const v1::SandboxSpec& spec, const std::string& where,
                          uint32_t memory_mib, bool have_dns_upstream) {
  using sandbox::Printable;
  if (!spec.sandbox_id().empty()) {
    if (absl::Status s = sandbox::ValidateId("sandbox id", spec.sandbox_id()); !s.ok()) {
      return Bad(where, std::string(s.message()));
    }
  }
  if (const std::string& p = spec.netns_path(); !p.empty()) {
    if (p[0] != '/' || HasDotDot(p)) {
      return Bad(where,
                 "netns_path '" + Printable(p) + "' must be an absolute path without . or ..");
    }
    if (!sandbox::IsNetnsPath(p)) {
      return Bad(where, "netns_path '" + Printable(p) + "' is not a network namespace");
    }
  }
  if (const std::string& p = spec.cgroup_path(); !p.empty()) {
    if (p[0] != '/' || HasDotDot(p)) {
      return Bad(where,
                 "cgroup_path '" + Printable(p) + "' must be an absolute path without . or ..");
    }
    if (!IsCgroup2Dir(p)) {
      return Bad(where,
                 "cgroup_path '" + Printable(p) + "' is not a directory on the cgroup2 filesystem");
    }
  }
  for (int i = 0; i < spec.egress().allow_size(); i++) {
    const auto& r = spec.egress().allow(i);
    const std::string at = "egress.allow[" + std::to_string(i) + "]";
    std::string cidr = r.cidr();
    if (cidr.find('/') == std::string::npos) {
      auto a = netfilter::IpAddress::Parse(cidr);
      if (!a.ok()) {
        return Bad(where,
                   at + ".cidr '" + Printable(cidr) + "': " + std::string(a.status().message()));
      }
      cidr += a->family == netfilter::Family::kV4 ? "/32" : "/128";
    }
    if (auto c = netfilter::Cidr::Parse(cidr); !c.ok()) {
      return Bad(where,
                 at + ".cidr '" + Printable(r.cidr()) + "': " + std::string(c.status().message()));
    }
    for (const auto& pr : r.ports()) {
      const uint32_t last = pr.last() ? pr.last() : pr.first();
      if (pr.first() < 1 || pr.first() > 65535 || last > 65535 || last < pr.first()) {
        return Bad(where, at + ": port range " + std::to_string(pr.first()) + "-" +
                              std::to_string(pr.last()) + " is not within 1..65535 in order");
      }
    }
  }
  if (absl::Status s =
          netfilter::Validate(PolicyFor(spec, "fkcheck", netfilter::IpAddress::V4(10, 0, 0, 2),
                                        netfilter::IpAddress::V4(10, 0, 0, 1)));
      !s.ok()) {
    return Bad(where, "egress: " + std::string(s.message()));
  }
  FORKD_RETURN_IF_ERROR(ValidateDns(spec, where, have_dns_upstream));
  std::set<std::string> names;
  for (int i = 0; i < spec.env_size(); i++) {
    const std::string& n = spec.env(i).name();
    if (n.empty() || n.find('=') != std::string::npos || n.find('\0') != std::string::npos ||
        n.size() > 256) {
      return Bad(where,
                 "env[" + std::to_string(i) + "] has an invalid name '" + Printable(n, 40) + "'");
    }
    if (spec.env(i).value().find('\0') != std::string::npos) {
      // The value is never echoed: it may be a secret.
      return Bad(where, "env " + Printable(n, 40) + " has a NUL byte in its value");
    }
    if (!names.insert(n).second) return Bad(where, "env " + Printable(n, 40) + " is given twice");
  }
  if (spec.resources().memory_mib() != 0 && spec.resources().memory_mib() != memory_mib) {
    return Bad(where, "resources.memory_mib " + std::to_string(spec.resources().memory_mib()) +
                          " differs from the template's " + std::to_string(memory_mib) +
                          " MiB: a restore keeps the snapshot's memory size");
  }
  if (spec.resources().vcpus() > 1) {
    return Bad(where, "resources.vcpus: a restore keeps the template's vCPUs");
  }
  if (spec.labels_size() > 32) return Bad(where, "more than 32 labels");
  for (const auto& [k, v] : spec.labels()) {
    if (k.empty() || k.size() > 63 || v.size() > 256) {
      return Bad(where, "label '" + Printable(k, 64) + "' has an empty or oversize key or value");
    }
  }
  return absl::OkStatus();
}

netfilter::TapPolicy PolicyFor(const v1::SandboxSpec& spec, const std::string& tap,
                               const netfilter::IpAddress& guest,
                               const netfilter::IpAddress& resolver) {
  netfilter::TapPolicy p;
  p.tap = tap;
  p.guest_v4 = guest;
  // The guest reaches its resolver (the DNS proxy at the tap's host side,
  // port 53) only when the sandbox names DNS names; otherwise it has no DNS.
  if (spec.egress().allow_dns_size() > 0) p.resolvers = {resolver};
  p.mode = netfilter::EgressMode::kDenyByDefault;
  for (const auto& r : spec.egress().allow()) {
    std::string cidr = r.cidr();
    if (cidr.find('/') == std::string::npos) {
      cidr += netfilter::IpAddress::Parse(cidr)->family == netfilter::Family::kV4 ? "/32" : "/128";
    }
    netfilter::AllowRule rule;
    rule.destination = *netfilter::Cidr::Parse(cidr);  // validated
    rule.protocol = r.protocol() == v1::EgressRule::TCP   ? netfilter::Protocol::kTcp
                    : r.protocol() == v1::EgressRule::UDP ? netfilter::Protocol::kUdp
                                                          : netfilter::Protocol::kAny;
    for (const auto& pr : r.ports()) {
      rule.ports.push_back({static_cast<uint16_t>(pr.first()),
                            static_cast<uint16_t>(pr.last() ? pr.last() : pr.first())});
    }
    p.allow.push_back(std::move(rule));
  }
  return p;
}

}  // namespace forkd::pipeline

#include "netfilter/policy.h"

#include <algorithm>

#include "netfilter/metadata.h"

namespace forkd::netfilter {
namespace {

bool IsNameChar(char c, bool first) {
  const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  return alnum || (!first && (c == '_' || c == '-'));
}

absl::Status Error(const TapPolicy& p, const std::string& what) {
  return absl::InvalidArgumentError("policy for tap \"" + p.tap + "\": " + what);
}

bool IsPrivate(const Cidr& c) {
  return std::any_of(PrivateRanges().begin(), PrivateRanges().end(),
                     [&](const Cidr& r) { return r.Overlaps(c); });
}

absl::Status ValidateAllowRule(const TapPolicy& p, const AllowRule& rule) {
  // Built only for an error: a valid policy's rules are never formatted.
  const auto where = [&] { return "allow rule " + ToString(rule); };
  if (rule.ports.empty() && rule.protocol != Protocol::kAny) {
    return Error(p, where() +
                        ": a protocol needs ports (a rule without ports allows every port "
                        "and protocol of its destination)");
  }
  if (rule.ports.size() > kMaxPortRangesPerRule) {
    return Error(p, where().substr(0, 80) + ": " + std::to_string(rule.ports.size()) +
                        " port ranges, at most " + std::to_string(kMaxPortRangesPerRule));
  }
  for (size_t i = 0; i < rule.ports.size(); ++i) {
    const PortRange& r = rule.ports[i];
    if (r.first == 0 || r.last == 0) return Error(p, where() + ": port 0 is not a valid port");
    if (r.first > r.last) {
      return Error(p, where() + ": inverted port range " + std::to_string(r.first) + "-" +
                          std::to_string(r.last));
    }
    for (size_t j = 0; j < i; ++j) {
      const PortRange& o = rule.ports[j];
      if (r.first <= o.last && o.first <= r.last) {
        return Error(p,
                     where() + ": port ranges " + ToString(o) + " and " + ToString(r) + " overlap");
      }
    }
  }
  // A rule inside a blocked private range would be dead: the private block runs
  // first. Say so instead of installing a rule that silently never matches.
  for (const Cidr& range : PrivateRanges()) {
    if (!range.Overlaps(rule.destination)) continue;
    const bool excepted = std::any_of(p.private_exceptions.begin(), p.private_exceptions.end(),
                                      [&](const Cidr& e) { return e.Covers(rule.destination); });
    if (range.Covers(rule.destination) && !excepted) {
      return Error(p, where() + ": destination lies in private range " + range.ToString() +
                          ", which stays blocked unless listed in private_exceptions");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateName(std::string_view what, std::string_view name, size_t max_length) {
  if (name.empty()) return absl::InvalidArgumentError(std::string(what) + " name is empty");
  if (name.size() > max_length) {
    return absl::InvalidArgumentError(std::string(what) + " name \"" + std::string(name) +
                                      "\" is longer than " + std::to_string(max_length) +
                                      " characters");
  }
  for (size_t i = 0; i < name.size(); ++i) {
    if (!IsNameChar(name[i], i == 0)) {
      return absl::InvalidArgumentError(std::string(what) + " name \"" + std::string(name) +
                                        "\" has an illegal character at offset " +
                                        std::to_string(i) +
                                        " (allowed: [A-Za-z0-9][A-Za-z0-9_-]*)");
    }
  }
  return absl::OkStatus();
}

absl::Status Validate(const TapPolicy& p) {
  if (auto s = ValidateName("tap", p.tap, kMaxTapNameLength); !s.ok()) {
    return absl::InvalidArgumentError("policy: " + std::string(s.message()));
  }
  if (p.guest_v4.family != Family::kV4) return Error(p, "guest_v4 is not an IPv4 address");
  const auto v4_zero = IpAddress::V4(0, 0, 0, 0);
  if (p.guest_v4 == v4_zero) return Error(p, "guest_v4 is unset (0.0.0.0)");
  if (p.guest_v6 && p.guest_v6->family != Family::kV6) {
    return Error(p, "guest_v6 is not an IPv6 address");
  }
  bool seen_v4 = false;
  bool seen_v6 = false;
  for (const IpAddress& r : p.resolvers) {
    bool& seen = r.family == Family::kV4 ? seen_v4 : seen_v6;
    if (seen) return Error(p, "more than one resolver of one address family");
    seen = true;
    // The resolver rule precedes the metadata block (an operator-chosen
    // link-local resolver such as AWS's 169.254.169.253 must work), so the
    // metadata services themselves are refused here.
    for (const char* service :
         {"169.254.169.254", "fd00:ec2::254", "168.63.129.16", "100.100.100.200"}) {
      if (r == *IpAddress::Parse(service)) {
        return Error(p, "resolver " + r.ToString() + " is a cloud metadata service address");
      }
    }
    if (auto v4 = EmbeddedV4(r); v4 && IsCloudMetadata(*v4)) {
      return Error(p,
                   "resolver " + r.ToString() + " embeds cloud metadata address " + v4->ToString());
    }
    if (r.family == Family::kV6 && !p.guest_v6) {
      return Error(p, "IPv6 resolver " + r.ToString() + " but the guest has no IPv6 address");
    }
  }
  if (p.allow.size() > kMaxAllowRules) {
    return Error(p, std::to_string(p.allow.size()) + " allow rules, at most " +
                        std::to_string(kMaxAllowRules));
  }
  if (p.private_exceptions.size() > kMaxPrivateExceptions) {
    return Error(p, std::to_string(p.private_exceptions.size()) + " private exceptions, at most " +
                        std::to_string(kMaxPrivateExceptions));
  }
  for (const Cidr& e : p.private_exceptions) {
    if (!IsPrivate(e)) {
      return Error(p, "private exception " + e.ToString() + " is not inside a private range");
    }
  }
  for (size_t i = 0; i < p.private_exceptions.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (p.private_exceptions[i] == p.private_exceptions[j]) {
        return Error(p, "duplicate private exception " + p.private_exceptions[i].ToString());
      }
    }
  }
  for (size_t i = 0; i < p.allow.size(); ++i) {
    const AllowRule& rule = p.allow[i];
    if (rule.destination.family() == Family::kV6 && !p.guest_v6) {
      return Error(p,
                   "allow rule " + ToString(rule) + " is IPv6 but the guest has no IPv6 address");
    }
    if (auto s = ValidateAllowRule(p, rule); !s.ok()) return s;
    for (size_t j = 0; j < i; ++j) {
      if (p.allow[j] == rule) return Error(p, "duplicate allow rule " + ToString(rule));
    }
  }
  if (p.pins.max_elements == 0) return Error(p, "pins.max_elements must be at least 1");
  return absl::OkStatus();
}

std::string ToString(Protocol p) {
  switch (p) {
    case Protocol::kAny:
      return "any";
    case Protocol::kTcp:
      return "tcp";
    case Protocol::kUdp:
      return "udp";
  }
  return "?";
}

std::string ToString(const PortRange& r) {
  if (r.first == r.last) return std::to_string(r.first);
  return std::to_string(r.first) + "-" + std::to_string(r.last);
}

std::string ToString(const AllowRule& r) {
  std::string out = r.destination.ToString();
  if (r.ports.empty()) return out;
  out += " " + ToString(r.protocol) + " ";
  for (size_t i = 0; i < r.ports.size(); ++i) {
    if (i) out += ",";
    out += ToString(r.ports[i]);
  }
  return out;
}

}  // namespace forkd::netfilter

// Validation of a Fork request's per-sandbox spec and its translation into
// the datapath's policy. Every error is INVALID_ARGUMENT naming the field
// (FAILED_PRECONDITION for DNS names without --dns-upstream); secret values
// are never part of a message.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "forkd/api/forkd.pb.h"
#include "netfilter/ip.h"
#include "netfilter/policy.h"

namespace forkd::pipeline {

// `where` prefixes messages ("sandboxes[2]"). `memory_mib`: the template's.
// `have_dns_upstream`: forkd runs with --dns-upstream (sandbox_dns.h).
absl::Status ValidateSpec(const v1::SandboxSpec& spec, const std::string& where,
                          uint32_t memory_mib, bool have_dns_upstream);

// The tap's egress policy for a validated spec. `resolver` (the tap's host
// side, where the sandbox's DNS proxy listens) is the guest's resolver when
// the spec names DNS names.
netfilter::TapPolicy PolicyFor(const v1::SandboxSpec& spec, const std::string& tap,
                               const netfilter::IpAddress& guest,
                               const netfilter::IpAddress& resolver);

// True when `path` is a directory on the cgroup2 filesystem.
bool IsCgroup2Dir(const std::string& path);

}  // namespace forkd::pipeline

// Validation of a Fork request's per-sandbox spec and its translation into
// the datapath's policy. Every error is INVALID_ARGUMENT (or UNIMPLEMENTED
// for a feature this build lacks) naming the field; secret values are never
// part of a message.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "forkd/api/forkd.pb.h"
#include "netfilter/ip.h"
#include "netfilter/policy.h"

namespace forkd::pipeline {

// `where` prefixes messages ("sandboxes[2]"). `memory_mib`: the template's.
absl::Status ValidateSpec(const v1::SandboxSpec& spec, const std::string& where,
                          uint32_t memory_mib);

// The tap's egress policy for a validated spec.
netfilter::TapPolicy PolicyFor(const v1::SandboxSpec& spec, const std::string& tap,
                               const netfilter::IpAddress& guest);

// True when `path` is a directory on the cgroup2 filesystem.
bool IsCgroup2Dir(const std::string& path);

}  // namespace forkd::pipeline

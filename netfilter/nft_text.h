// Renders the ruleset model as `nft -f` text. Product code never runs nft: this
// exists for logs, for humans reading a tap's policy, and as the baseline the
// benchmark installs through `nft -f` to compare against the netlink path.
#pragma once

#include <string>

#include "netfilter/ruleset.h"

namespace forkd::netfilter {

std::string RenderRule(const Rule& rule);

// Commands that create every object of one tap (chains, counters, sets, rules,
// dispatch elements), equivalent to what Nftables::AddTap installs.
std::string RenderAddTap(const TapRuleset& ruleset);

// Commands that create the shared skeleton, equivalent to Nftables::EnsureSkeleton.
std::string RenderSkeleton(const SkeletonConfig& config);

}  // namespace forkd::netfilter

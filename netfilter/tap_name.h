// The one naming rule for forkd's taps. The fail-closed guard
// (ruleset.h, SkeletonConfig::tap_prefix, default kForkdTapPrefix) drops packets
// from and to every interface whose name starts with kForkdTapPrefix and that has
// no dispatch entry, so every tap forkd makes is named here: a sandbox's tap,
// a template build's tap. A name outside this rule would not be fenced.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace forkd::netfilter {

inline constexpr char kForkdTapPrefix[] = "sbt";

// A sandbox's tap: "sbt<slot>" (slot in decimal).
inline std::string SandboxTapName(uint32_t slot) { return kForkdTapPrefix + std::to_string(slot); }

// A template build's scratch tap: "sbtb<8 hex digits>" (never a sandbox's:
// those continue with a digit).
inline std::string BuildTapName(uint32_t nonce) {
  char hex[9];
  (void)std::snprintf(hex, sizeof hex, "%08x", nonce);
  return std::string(kForkdTapPrefix) + "b" + hex;
}

inline bool IsForkdTapName(std::string_view name) {
  return name.size() > sizeof(kForkdTapPrefix) - 1 && name.starts_with(kForkdTapPrefix);
}

}  // namespace forkd::netfilter

// The sandbox datapath in one network namespace: every operation is ONE
// atomic nftables transaction (a netlink batch built with libnftnl, sent with
// libmnl). Either all of it takes effect or none of it does.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "netfilter/nft_batch.h"
#include "netfilter/policy.h"
#include "netfilter/ruleset.h"

namespace forkd::netfilter {

// A destination the DNS proxy resolved for the guest: reachable (TCP and UDP)
// until `timeout` passes.
struct Pin {
  IpAddress address;
  uint16_t port = 0;
  std::chrono::milliseconds timeout{0};
};

// Most pins one Pin() call takes (they are sent as one transaction).
inline constexpr size_t kMaxPinsPerCall = 2048;

class Nftables {
 public:
  // Binds to the network namespace `netns_fd` (negative: the caller's own).
  // The namespace is captured at open time; the calling thread is unchanged.
  // `shards`: how many filter tables taps are spread over (ruleset.h,
  // ShardTable); must match SkeletonConfig::shards.
  static absl::StatusOr<Nftables> Open(int netns_fd = -1, uint32_t shards = 1);

  // The filter table `tap` lives in.
  std::string TableFor(const std::string& tap) const;

  // Creates the shared skeleton if missing: table, base chains `forward` and
  // `input` (policy accept) each with only the dispatch rules, the three
  // dispatch maps, and (with an uplink) the masquerade table. Idempotent:
  // re-running it keeps every installed tap and rewrites only the base chains'
  // own rules, inside the same transaction.
  absl::Status EnsureSkeleton(const SkeletonConfig& config);

  // Removes every forkd table and everything in it (every tap of this
  // namespace, whatever shard count installed it). No-op on a clean namespace.
  absl::Status RemoveAll();

  // Installs a tap: its egress, inbound and input chains, pin sets, counters
  // and dispatch elements. Fails with AlreadyExists if the tap is installed.
  absl::Status AddTap(const TapPolicy& policy);

  // Swaps an installed tap's rules for `policy`'s in one transaction: the
  // chains are flushed and refilled atomically, so there is no moment where
  // the tap is unfenced or half-configured. Pins survive; pin-set limits are
  // fixed at AddTap. NotFound if the tap is not installed.
  absl::Status ReplaceTap(const TapPolicy& policy);

  // Removes every object the tap owns. NotFound if it is not installed.
  absl::Status RemoveTap(std::string_view tap);

  // Taps installed in this namespace (for crash recovery), sorted.
  absl::StatusOr<std::vector<std::string>> ListTaps();

  // Adds (address, port) pins to the tap's pin sets, at most kMaxPinsPerCall
  // per call (InvalidArgument beyond). Re-pinning an existing
  // element sets its timeout anew on kernels that update element timeouts
  // (6.18 here, proven in netfilter_datapath_test); older kernels keep the
  // first expiry.
  absl::Status Pin(std::string_view tap, const std::vector<Pin>& pins);

  // Building blocks, public so tests can prove atomicity by committing a batch
  // that fails part-way.
  Batch NewBatch();
  void AppendAddTap(Batch& batch, const TapRuleset& ruleset);
  absl::Status Commit(Batch& batch, const std::string& context);

 private:
  Nftables(NetlinkSocket sock, uint32_t shards) : sock_(std::move(sock)), shards_(shards) {}
  NetlinkSocket sock_;
  uint32_t shards_;
  // The last committed batch's memory, reused by the next (Batch::Storage).
  Batch::Storage spare_;
};

}  // namespace forkd::netfilter

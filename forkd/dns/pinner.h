// Where the proxy pins the addresses it releases. The proxy calls Pin() and
// releases the answer only when it returns OK.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "forkd/dns/answer_filter.h"
#include "netfilter/nftables.h"

namespace forkd::dns {

class Pinner {
 public:
  virtual ~Pinner() = default;
  // Makes every address in `pins` reachable for its duration, or fails with
  // nothing guaranteed (the proxy then answers SERVFAIL).
  virtual absl::Status Pin(const std::vector<AddressPin>& pins) = 0;
};

// Pins (address, port) for each of the sandbox's allowed `ports` into the
// tap's pin sets (netfilter::Nftables::Pin), one netlink transaction per
// answer. TCP and UDP: the sets match both.
class NftPinner : public Pinner {
 public:
  // `netns_fd`: the namespace holding the tap's tables (negative: the
  // caller's); `shards` as the tap was installed with.
  static absl::StatusOr<std::unique_ptr<NftPinner>> Open(int netns_fd, uint32_t shards,
                                                         std::string tap,
                                                         std::vector<uint16_t> ports);
  absl::Status Pin(const std::vector<AddressPin>& pins) override;

 private:
  NftPinner(netfilter::Nftables nft, std::string tap, std::vector<uint16_t> ports)
      : nft_(std::move(nft)), tap_(std::move(tap)), ports_(std::move(ports)) {}
  netfilter::Nftables nft_;
  std::string tap_;
  std::vector<uint16_t> ports_;
};

}  // namespace forkd::dns

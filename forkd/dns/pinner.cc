#include "forkd/dns/pinner.h"

#include "common/errno_status.h"

namespace forkd::dns {

absl::StatusOr<std::unique_ptr<NftPinner>> NftPinner::Open(int netns_fd, uint32_t shards,
                                                           std::string tap,
                                                           std::vector<uint16_t> ports) {
  if (ports.empty()) {
    return absl::InvalidArgumentError("pinner for tap " + tap + ": no ports to pin");
  }
  for (uint16_t p : ports) {
    if (p == 0) return absl::InvalidArgumentError("pinner for tap " + tap + ": port 0");
  }
  auto nft = netfilter::Nftables::Open(netns_fd, shards);
  if (!nft.ok()) return Annotate(nft.status(), "pinner for tap " + tap);
  return std::unique_ptr<NftPinner>(
      new NftPinner(std::move(*nft), std::move(tap), std::move(ports)));
}

absl::Status NftPinner::Pin(const std::vector<AddressPin>& pins) {
  std::vector<netfilter::Pin> elements;
  elements.reserve(pins.size() * ports_.size());
  for (const AddressPin& p : pins) {
    for (uint16_t port : ports_) {
      elements.push_back(
          {p.address, port, std::chrono::duration_cast<std::chrono::milliseconds>(p.duration)});
    }
  }
  if (elements.empty()) return absl::OkStatus();
  return nft_.Pin(tap_, elements);
}

}  // namespace forkd::dns

#include "forkd/vmm/devices/virtio/net.h"

#include <sys/random.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/errno_status.h"
#include "forkd/snapshot/byte_io.h"

namespace forkd::vmm::virtio {
namespace {

constexpr uint8_t kStateVersionMacOnly = 1;
constexpr uint8_t kStateVersion = 2;  // MAC, rx limit, tx limit

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Whether the driver published a chain the device has not consumed yet,
// without consuming it (Queue::Pop would): a frame is read from the tap only
// when it has somewhere to go.
absl::StatusOr<bool> HasAvailable(const Queue& q, const GuestMemory& mem) {
  FORKD_RETURN_IF_ERROR(q.Validate(mem));
  FORKD_ASSIGN_OR_RETURN(auto idx_bytes, mem.Slice(q.state().avail_addr + 2, 2));
  uint16_t idx;
  std::memcpy(&idx, idx_bytes.data(), sizeof idx);
  return idx != q.state().next_avail;
}

}  // namespace

absl::StatusOr<MacAddress> ParseMacAddress(const std::string& text) {
  MacAddress mac{};
  const auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("MAC address '", text, "' is not six hex pairs like 02:00:00:00:00:01"));
  };
  if (text.size() != 17) return bad();
  for (size_t i = 0; i < 6; ++i) {
    const int hi = HexDigit(text[3 * i]), lo = HexDigit(text[3 * i + 1]);
    if (hi < 0 || lo < 0 || (i < 5 && text[3 * i + 2] != ':')) return bad();
    mac[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  if (mac[0] & 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("MAC address ", text, " is multicast (low bit of the first byte set)"));
  }
  return mac;
}

std::string FormatMacAddress(const MacAddress& mac) {
  return absl::StrFormat("%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4],
                         mac[5]);
}

absl::StatusOr<MacAddress> RandomMacAddress() {
  MacAddress mac{};
  if (::getrandom(mac.data(), mac.size(), 0) != static_cast<ssize_t>(mac.size())) {
    return ErrnoStatus(errno, "getrandom for a MAC address");
  }
  mac[0] = static_cast<uint8_t>((mac[0] & 0xfc) | 0x02);  // unicast, locally administered
  return mac;
}

Net::Net(UniqueFd tap, MacAddress mac, std::optional<MacAddress> mac_override, NetRateLimits limits)
    : tap_(std::move(tap)),
      mac_override_(mac_override),
      mac_(mac_override.value_or(mac)),
      rx_buf_(kMaxTapReadBytes),
      rx_limiter_(limits.rx.value_or(RateLimiterConfig{}), limits.clock),
      tx_limiter_(limits.tx.value_or(RateLimiterConfig{}), limits.clock),
      rx_pinned_(limits.rx.has_value()),
      tx_pinned_(limits.tx.has_value()) {}

RateLimiterConfig Net::rx_limit() const {
  std::lock_guard lock(mu_);
  return rx_limiter_.config();
}

RateLimiterConfig Net::tx_limit() const {
  std::lock_guard lock(mu_);
  return tx_limiter_.config();
}

void Net::set_rx_wakeup(std::function<void()> wake) {
  std::lock_guard lock(mu_);
  rx_wakeup_ = std::move(wake);
}

MacAddress Net::mac() const {
  std::lock_guard lock(mu_);
  return mac_;
}

NetStats Net::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void Net::ReadConfig(uint64_t offset, std::span<uint8_t> data) const {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < data.size(); ++i) {
    const uint64_t at = offset + i;
    data[i] = at < mac_.size() ? mac_[at] : 0;
  }
}

absl::StatusOr<bool> Net::ProcessQueue(size_t index, std::span<Queue> queues,
                                       const GuestMemory& mem) {
  std::lock_guard lock(mu_);
  if (index == kRxQueue) return ReceiveLocked(queues[kRxQueue], mem);
  if (index != kTxQueue) return false;
  Queue& tx = queues[kTxQueue];
  bool used = false;
  while (true) {
    FORKD_ASSIGN_OR_RETURN(auto chain, tx.Pop(mem));
    if (!chain) break;
    uint64_t bytes = 0;
    for (const Descriptor& d : chain->descriptors) bytes += d.len;
    bytes -= std::min<uint64_t>(bytes, kNetHeaderSize);
    if (!tx_limiter_.TryConsume(bytes)) {
      tx.UndoPop();  // the frame waits in the guest's queue
      ScheduleRetry(kTxQueue, tx_limiter_.TimeUntilReady(bytes));
      break;
    }
    FORKD_RETURN_IF_ERROR(TransmitLocked(mem, *chain));
    FORKD_RETURN_IF_ERROR(tx.PushUsed(mem, chain->head, 0));
    used = true;
  }
  return used;
}

absl::Status Net::TransmitLocked(const GuestMemory& mem, const DescriptorChain& chain) {
  // The guest's header may span descriptors; it is skipped, and the tap gets
  // a header of zeros (no checksum or segmentation offload).
  static constexpr uint8_t kZeroHeader[kNetHeaderSize] = {};
  std::vector<iovec> iov;
  iov.push_back({const_cast<uint8_t*>(kZeroHeader), kNetHeaderSize});
  uint64_t total = 0, skip = kNetHeaderSize;
  for (const Descriptor& d : chain.descriptors) {
    if (d.device_writable) {
      return absl::InvalidArgumentError(
          absl::StrCat("virtio-net tx chain ", chain.head, " has a device-writable descriptor"));
    }
    total += d.len;
    uint64_t addr = d.addr, len = d.len;
    const uint64_t skipped = std::min(skip, len);
    skip -= skipped;
    addr += skipped;
    len -= skipped;
    if (len == 0) continue;
    FORKD_ASSIGN_OR_RETURN(auto buf, mem.Slice(addr, len));  // checked by Pop; cheap
    iov.push_back({buf.data(), buf.size()});
  }
  if (total < kNetHeaderSize + kMinFrameBytes || total - kNetHeaderSize > kMaxFrameBytes) {
    ++stats_.tx_dropped;
    return absl::OkStatus();
  }
  const ssize_t want = static_cast<ssize_t>(total);
  ssize_t n;
  do {
    n = ::writev(tap_.get(), iov.data(), static_cast<int>(iov.size()));
  } while (n < 0 && errno == EINTR);
  // A tap that is down (EIO) or full (EAGAIN) loses the frame, as a wire
  // would; the guest's queue carries on.
  if (n != want) {
    ++stats_.tx_dropped;
  } else {
    ++stats_.tx_frames;
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> Net::ReceiveLocked(Queue& rx, const GuestMemory& mem) {
  rx_runs_.fetch_add(1, std::memory_order_acq_rel);
  bool used = false;
  while (true) {
    FORKD_ASSIGN_OR_RETURN(bool avail, HasAvailable(rx, mem));
    if (!avail) {
      // Frames stay in the tap until the guest posts buffers (and notifies).
      set_wants_rx(false);
      break;
    }
    if (!rx_limiter_.TryConsume(1)) {
      // Over the limit: the frame stays in the tap (not watched meanwhile)
      // and rx runs again when the tokens are back.
      set_wants_rx(false);
      ScheduleRetry(kRxQueue, rx_limiter_.TimeUntilReady(1));
      break;
    }
    const ssize_t n = ::read(tap_.get(), rx_buf_.data(), rx_buf_.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const bool empty = errno == EAGAIN || errno == EWOULDBLOCK;
      if (!empty) ++stats_.rx_dropped;  // e.g. the tap went away: stop watching it
      const bool was = wants_rx();
      set_wants_rx(empty);
      if (empty && !was && rx_wakeup_) rx_wakeup_();
      break;
    }
    const auto len = static_cast<uint64_t>(n);
    rx_limiter_.ForceConsumeBytes(len - std::min<uint64_t>(len, kNetHeaderSize + 1));
    if (len < kNetHeaderSize + kMinFrameBytes) {
      ++stats_.rx_dropped;
      continue;
    }
    FORKD_ASSIGN_OR_RETURN(auto chain, rx.Pop(mem));
    if (!chain) return absl::InternalError("virtio-net rx chain vanished under the device lock");
    uint64_t capacity = 0;
    for (const Descriptor& d : chain->descriptors) {
      if (!d.device_writable) {
        return absl::InvalidArgumentError(
            absl::StrCat("virtio-net rx chain ", chain->head, " has a device-readable descriptor"));
      }
      capacity += d.len;
    }
    if (capacity < len) {
      // The driver must post buffers of at least 1526 bytes (5.1.6.3.1);
      // a smaller one gets nothing rather than a truncated frame.
      ++stats_.rx_dropped;
      FORKD_RETURN_IF_ERROR(rx.PushUsed(mem, chain->head, 0));
      used = true;
      continue;
    }
    // No offloads were negotiated: the header is zeros except num_buffers,
    // which is 1 without VIRTIO_NET_F_MRG_RXBUF.
    std::memset(rx_buf_.data(), 0, kNetHeaderSize);
    rx_buf_[10] = 1;
    uint64_t done = 0;
    for (const Descriptor& d : chain->descriptors) {
      if (done == len) break;
      const uint64_t take = std::min<uint64_t>(d.len, len - done);
      FORKD_ASSIGN_OR_RETURN(auto buf, mem.Slice(d.addr, take));
      std::memcpy(buf.data(), rx_buf_.data() + done, take);
      done += take;
    }
    FORKD_RETURN_IF_ERROR(rx.PushUsed(mem, chain->head, static_cast<uint32_t>(len)));
    ++stats_.rx_frames;
    used = true;
  }
  return used;
}

void Net::Reset() {
  // The tap is no longer watched until the driver sets the rx queue up again.
  set_wants_rx(false);
}

std::vector<uint8_t> Net::SaveSpecific() const {
  std::lock_guard lock(mu_);
  snapshot::ByteWriter w;
  w.U8(kStateVersion);
  for (uint8_t b : mac_) w.U8(b);
  WriteRateLimiterConfig(w, rx_limiter_.config());
  WriteRateLimiterConfig(w, tx_limiter_.config());
  return w.Take();
}

absl::Status Net::RestoreSpecific(std::span<const uint8_t> bytes) {
  snapshot::ByteReader r(bytes, kName);
  FORKD_ASSIGN_OR_RETURN(uint8_t version, r.U8("version"));
  if (version != kStateVersion && version != kStateVersionMacOnly) {
    return absl::DataLossError(absl::StrCat("virtio-net state version ", version));
  }
  MacAddress mac{};
  for (uint8_t& b : mac) {
    FORKD_ASSIGN_OR_RETURN(b, r.U8("mac"));
  }
  RateLimiterConfig rx, tx;  // version 1: unlimited
  if (version == kStateVersion) {
    FORKD_ASSIGN_OR_RETURN(rx, ReadRateLimiterConfig(r));
    FORKD_ASSIGN_OR_RETURN(tx, ReadRateLimiterConfig(r));
  }
  FORKD_RETURN_IF_ERROR(r.Finish());
  std::lock_guard lock(mu_);
  if (!rx_pinned_) rx_limiter_.Reconfigure(rx);
  if (!tx_pinned_) tx_limiter_.Reconfigure(tx);
  mac_ = mac;
  if (mac_override_ && *mac_override_ != mac_) {
    mac_ = *mac_override_;
    config_changed_ = true;
  }
  return absl::OkStatus();
}

bool Net::ConsumeConfigChange() {
  std::lock_guard lock(mu_);
  return std::exchange(config_changed_, false);
}

}  // namespace forkd::vmm::virtio

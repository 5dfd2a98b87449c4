#include "forkd/vmm/devices/virtio/vsock.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "forkd/snapshot/byte_io.h"

namespace forkd::vmm::virtio {
namespace {

constexpr size_t kRx = 0;
constexpr size_t kTx = 1;
constexpr size_t kEvent = 2;
constexpr uint8_t kStateVersion = 1;
// A guest packet's payload is bounded by what we advertise; anything larger
// is a broken guest.
constexpr uint32_t kMaxGuestPayload = 64 * 1024;

// Copies `src` into the chain's device-writable buffers from byte `at`.
absl::StatusOr<size_t> Scatter(const GuestMemory& mem, const DescriptorChain& chain, size_t at,
                               std::span<const uint8_t> src) {
  size_t pos = 0, done = 0;
  for (const auto& d : chain.descriptors) {
    if (!d.device_writable) continue;
    const size_t end = pos + d.len;
    if (at < end && done < src.size()) {
      const size_t off = at > pos ? at - pos : 0;
      const size_t n = std::min<size_t>(d.len - off, src.size() - done);
      FORKD_ASSIGN_OR_RETURN(auto dst, mem.Slice(d.addr + off, n));
      std::memcpy(dst.data(), src.data() + done, n);
      done += n;
      at += n;
    }
    pos = end;
  }
  return done;
}

uint64_t WritableBytes(const DescriptorChain& c) {
  uint64_t n = 0;
  for (const auto& d : c.descriptors) n += d.device_writable ? d.len : 0;
  return n;
}

// Gathers the chain's device-readable bytes (header + payload), bounded.
absl::StatusOr<std::vector<uint8_t>> Gather(const GuestMemory& mem, const DescriptorChain& c) {
  std::vector<uint8_t> out;
  for (const auto& d : c.descriptors) {
    if (d.device_writable) continue;
    if (out.size() + d.len > sizeof(VsockHeader) + kMaxGuestPayload) {
      return absl::InvalidArgumentError("vsock tx packet larger than advertised");
    }
    FORKD_ASSIGN_OR_RETURN(auto src, mem.Slice(d.addr, d.len));
    out.insert(out.end(), src.begin(), src.end());
  }
  return out;
}

}  // namespace

void Vsock::ReadConfig(uint64_t offset, std::span<uint8_t> data) const {
  std::lock_guard lock(mu_);
  uint8_t cfg[8];
  std::memcpy(cfg, &guest_cid_, sizeof cfg);
  for (size_t i = 0; i < data.size(); ++i) data[i] = offset + i < sizeof cfg ? cfg[offset + i] : 0;
}

void Vsock::Reset() {
  std::vector<uint32_t> closed;
  {
    std::lock_guard lock(mu_);
    for (const auto& [port, c] : conns_) closed.push_back(port);
    conns_.clear();
    to_guest_.clear();
  }
  for (uint32_t p : closed) backend_->OnClosed(p);
}

std::vector<uint8_t> Vsock::SaveSpecific() const {
  std::lock_guard lock(mu_);
  snapshot::ByteWriter w;
  w.U8(kStateVersion);
  w.U64(guest_cid_);
  return w.Take();
}

absl::Status Vsock::RestoreSpecific(std::span<const uint8_t> bytes) {
  snapshot::ByteReader r(bytes, kName);
  FORKD_ASSIGN_OR_RETURN(uint8_t version, r.U8("version"));
  if (version != kStateVersion) {
    return absl::DataLossError(absl::StrCat("virtio-vsock state version ", version));
  }
  FORKD_ASSIGN_OR_RETURN(uint64_t cid, r.U64("guest_cid"));
  FORKD_RETURN_IF_ERROR(r.Finish());
  if (cid < 3 || cid > 0xffffffffULL) {
    return absl::DataLossError(absl::StrCat("virtio-vsock guest CID ", cid));
  }
  std::lock_guard lock(mu_);
  guest_cid_ = cid;
  conns_.clear();
  to_guest_.clear();
  reset_event_pending_ = true;
  return absl::OkStatus();
}

absl::StatusOr<bool> Vsock::DeliverEventLocked(Queue& event, const GuestMemory& mem) {
  if (!reset_event_pending_ || !event.state().ready) return false;
  FORKD_ASSIGN_OR_RETURN(auto chain, event.Pop(mem));
  if (!chain) return false;  // no event buffer yet: stays pending
  const uint32_t id = kVsockEventTransportReset;
  FORKD_ASSIGN_OR_RETURN(
      size_t n, Scatter(mem, *chain, 0, {reinterpret_cast<const uint8_t*>(&id), sizeof id}));
  FORKD_RETURN_IF_ERROR(event.PushUsed(mem, chain->head, static_cast<uint32_t>(n)));
  reset_event_pending_ = false;
  return true;
}

VsockHeader Vsock::HeaderLocked(uint32_t local_port, uint32_t guest_port, uint16_t op) const {
  VsockHeader h{};
  h.src_cid = kVsockHostCid;
  h.dst_cid = guest_cid_;
  h.src_port = local_port;
  h.dst_port = guest_port;
  h.type = kVsockTypeStream;
  h.op = op;
  h.buf_alloc = kHostBufAlloc;
  auto it = conns_.find(local_port);
  h.fwd_cnt = it != conns_.end() ? it->second.fwd_cnt : 0;
  return h;
}

void Vsock::PushControlLocked(const VsockHeader& h) {
  // Replies the guest provokes (RST, credit updates) wait for rx buffers the
  // guest may never post: bounded, so a guest cannot grow host memory by
  // spamming tx. Dropping a reply only costs that guest its own answer.
  size_t control = 0;
  for (const auto& p : to_guest_) control += p.payload.empty() ? 1 : 0;
  if (control >= kMaxQueuedControl) return;
  to_guest_.push_back({h, {}});
}

void Vsock::RstLocked(uint32_t local_port, uint32_t guest_port) {
  PushControlLocked(HeaderLocked(local_port, guest_port, kVsockOpRst));
}

void Vsock::Connect(uint32_t local_port, uint32_t guest_port) {
  std::lock_guard lock(mu_);
  conns_[local_port] = Connection{.guest_port = guest_port};
  to_guest_.push_back({HeaderLocked(local_port, guest_port, kVsockOpRequest), {}});
}

uint32_t Vsock::SendCredit(uint32_t local_port) const {
  std::lock_guard lock(mu_);
  auto it = conns_.find(local_port);
  if (it == conns_.end() || !it->second.established) return 0;
  const Connection& c = it->second;
  // Unsigned wrap-around is the protocol's arithmetic (5.10.6.3).
  const uint32_t in_flight = c.tx_cnt - c.peer_fwd_cnt;
  return in_flight >= c.peer_buf_alloc ? 0 : c.peer_buf_alloc - in_flight;
}

void Vsock::Send(uint32_t local_port, std::span<const uint8_t> bytes) {
  std::lock_guard lock(mu_);
  auto it = conns_.find(local_port);
  if (it == conns_.end() || bytes.empty()) return;
  it->second.tx_cnt += static_cast<uint32_t>(bytes.size());
  VsockHeader h = HeaderLocked(local_port, it->second.guest_port, kVsockOpRw);
  h.len = static_cast<uint32_t>(bytes.size());
  to_guest_.push_back({h, {bytes.begin(), bytes.end()}});
}

void Vsock::Close(uint32_t local_port) {
  std::lock_guard lock(mu_);
  auto it = conns_.find(local_port);
  if (it == conns_.end()) return;
  RstLocked(local_port, it->second.guest_port);
  conns_.erase(it);
}

absl::StatusOr<bool> Vsock::DeliverLocked(Queue& rx, const GuestMemory& mem) {
  bool used = false;
  while (!to_guest_.empty()) {
    FORKD_ASSIGN_OR_RETURN(auto chain, rx.Pop(mem));
    if (!chain) break;  // no rx buffer: the packets wait for the next kick
    Packet& p = to_guest_.front();
    const uint64_t room = WritableBytes(*chain);
    if (room < sizeof(VsockHeader)) {
      return absl::InvalidArgumentError("vsock rx buffer smaller than a packet header");
    }
    // A payload larger than the buffer is split; the rest stays queued.
    const size_t n = std::min<uint64_t>(p.payload.size(), room - sizeof(VsockHeader));
    VsockHeader h = p.hdr;
    h.len = static_cast<uint32_t>(n);
    FORKD_RETURN_IF_ERROR(
        Scatter(mem, *chain, 0, {reinterpret_cast<const uint8_t*>(&h), sizeof h}).status());
    FORKD_RETURN_IF_ERROR(Scatter(mem, *chain, sizeof h, {p.payload.data(), n}).status());
    FORKD_RETURN_IF_ERROR(
        rx.PushUsed(mem, chain->head, static_cast<uint32_t>(sizeof(VsockHeader) + n)));
    used = true;
    if (n == p.payload.size()) {
      to_guest_.pop_front();
    } else {
      p.payload.erase(p.payload.begin(), p.payload.begin() + static_cast<ptrdiff_t>(n));
      p.hdr.len = static_cast<uint32_t>(p.payload.size());
    }
  }
  return used;
}

absl::Status Vsock::HandleTxLocked(Queue& tx, const GuestMemory& mem,
                                   std::vector<uint32_t>* connected,
                                   std::vector<std::pair<uint32_t, std::vector<uint8_t>>>* data,
                                   std::vector<uint32_t>* closed) {
  while (true) {
    FORKD_ASSIGN_OR_RETURN(auto chain, tx.Pop(mem));
    if (!chain) return absl::OkStatus();
    FORKD_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, Gather(mem, *chain));
    FORKD_RETURN_IF_ERROR(tx.PushUsed(mem, chain->head, 0));
    if (bytes.size() < sizeof(VsockHeader)) continue;  // malformed: dropped
    VsockHeader h;
    std::memcpy(&h, bytes.data(), sizeof h);
    const size_t payload_len = std::min<size_t>(h.len, bytes.size() - sizeof h);
    // Only the guest's own CID to the host, stream type (a guest cannot
    // speak for another CID).
    if (h.src_cid != guest_cid_ || h.dst_cid != kVsockHostCid || h.type != kVsockTypeStream) {
      continue;
    }
    auto it = conns_.find(h.dst_port);
    if (it == conns_.end() || it->second.guest_port != h.src_port) {
      // Unknown connection (including guest-initiated REQUESTs, not
      // supported yet): reset, unless it is itself a reset.
      if (h.op != kVsockOpRst) RstLocked(h.dst_port, h.src_port);
      continue;
    }
    Connection& c = it->second;
    c.peer_buf_alloc = h.buf_alloc;
    c.peer_fwd_cnt = h.fwd_cnt;
    switch (h.op) {
      case kVsockOpResponse:
        if (!c.established) {
          c.established = true;
          connected->push_back(h.dst_port);
        }
        break;
      case kVsockOpRw:
        if (!c.established) break;
        c.fwd_cnt += static_cast<uint32_t>(payload_len);
        data->emplace_back(
            h.dst_port,
            std::vector<uint8_t>(bytes.begin() + sizeof h, bytes.begin() + sizeof h + payload_len));
        break;
      case kVsockOpCreditRequest:
        PushControlLocked(HeaderLocked(h.dst_port, h.src_port, kVsockOpCreditUpdate));
        break;
      case kVsockOpCreditUpdate:
        break;  // credit already taken from the header
      case kVsockOpShutdown:
      case kVsockOpRst:
        if (h.op == kVsockOpShutdown) RstLocked(h.dst_port, h.src_port);
        closed->push_back(h.dst_port);
        conns_.erase(it);
        break;
      default:
        RstLocked(h.dst_port, h.src_port);
        closed->push_back(h.dst_port);
        conns_.erase(it);
        break;
    }
  }
}

absl::StatusOr<bool> Vsock::ProcessQueue(size_t index, std::span<Queue> queues,
                                         const GuestMemory& mem) {
  std::vector<uint32_t> connected, closed;
  std::vector<std::pair<uint32_t, std::vector<uint8_t>>> data;
  bool used = false;
  {
    std::lock_guard lock(mu_);
    if (index == kTx) {
      const uint16_t before = queues[kTx].state().next_used;
      FORKD_RETURN_IF_ERROR(HandleTxLocked(queues[kTx], mem, &connected, &data, &closed));
      used = queues[kTx].state().next_used != before;  // tx buffers returned
    }
  }
  // Backend calls without the device lock (see the header's locking note).
  for (uint32_t p : connected) backend_->OnConnected(p);
  for (auto& [port, bytes] : data) {
    if (!backend_->OnData(port, bytes)) {
      closed.push_back(port);
      Close(port);
    }
  }
  for (uint32_t p : closed) backend_->OnClosed(p);
  std::lock_guard lock(mu_);
  FORKD_ASSIGN_OR_RETURN(bool event, DeliverEventLocked(queues[kEvent], mem));
  used = used || event;
  if (queues[kRx].state().ready) {
    FORKD_ASSIGN_OR_RETURN(bool delivered, DeliverLocked(queues[kRx], mem));
    used = used || delivered;
  }
  return used;
}

}  // namespace forkd::vmm::virtio

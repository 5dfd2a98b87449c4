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
constexpr uint8_t kStateVersionCidOnly = 1;
constexpr uint8_t kStateVersion = 2;  // CID, rate limit
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
  std::vector<VsockConnKey> closed;
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, c] : conns_) closed.push_back(key);
    conns_.clear();
    to_guest_.clear();
    rx_room_ = 0;
    // The driver's removal reset its sockets; a reset event still pending
    // goes to the next driver, whose acknowledgement is awaited afresh.
    held_.clear();
    reset_unacked_ = false;
  }
  for (const VsockConnKey& k : closed) backend_->OnClosed(k);
}

std::vector<uint8_t> Vsock::SaveSpecific() const {
  std::lock_guard lock(mu_);
  snapshot::ByteWriter limit;
  WriteRateLimiterConfig(limit, limiter_.config());
  // Laid out by hand: GCC 12 reports a false -Warray-bounds for ByteWriter
  // growing its vector here.
  std::vector<uint8_t> out(1 + sizeof guest_cid_ + limit.size());
  out[0] = kStateVersion;
  std::memcpy(out.data() + 1, &guest_cid_, sizeof guest_cid_);
  std::memcpy(out.data() + 1 + sizeof guest_cid_, limit.bytes().data(), limit.size());
  return out;
}

absl::Status Vsock::RestoreSpecific(std::span<const uint8_t> bytes) {
  snapshot::ByteReader r(bytes, kName);
  FORKD_ASSIGN_OR_RETURN(uint8_t version, r.U8("version"));
  if (version != kStateVersion && version != kStateVersionCidOnly) {
    return absl::DataLossError(absl::StrCat("virtio-vsock state version ", version));
  }
  FORKD_ASSIGN_OR_RETURN(uint64_t cid, r.U64("guest_cid"));
  RateLimiterConfig limit;  // version 1: unlimited
  if (version == kStateVersion) {
    FORKD_ASSIGN_OR_RETURN(limit, ReadRateLimiterConfig(r));
  }
  FORKD_RETURN_IF_ERROR(r.Finish());
  if (cid < 3 || cid > 0xffffffffULL) {
    return absl::DataLossError(absl::StrCat("virtio-vsock guest CID ", cid));
  }
  std::lock_guard lock(mu_);
  guest_cid_ = cid;
  if (!limit_pinned_) limiter_.Reconfigure(limit);
  conns_.clear();
  to_guest_.clear();
  rx_room_ = 0;
  reset_event_pending_ = true;
  reset_unacked_ = false;
  held_.clear();
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
  // The guest acknowledges by making a buffer available again (Linux
  // re-posts the one it handled, after resetting its sockets).
  FORKD_ASSIGN_OR_RETURN(event_available_after_reset_, event.Available(mem));
  reset_unacked_ = true;
  return true;
}

absl::Status Vsock::MaybeReleaseConnectsLocked(Queue& event, const GuestMemory& mem) {
  if (!reset_unacked_ || !event.state().ready) return absl::OkStatus();
  FORKD_ASSIGN_OR_RETURN(uint16_t available, event.Available(mem));
  if (available <= event_available_after_reset_) return absl::OkStatus();
  reset_unacked_ = false;
  const TimePoint now = clock_();
  for (const VsockConnKey& key : held_) {
    auto it = conns_.find(key);
    if (it == conns_.end() || !it->second.request_held) continue;
    it->second.request_held = false;
    it->second.connect_deadline = now + kConnectTimeout;  // the guest's time to answer
    to_guest_.push_back({HeaderLocked(key, kVsockOpRequest), {}});
  }
  held_.clear();
  return absl::OkStatus();
}

VsockHeader Vsock::HeaderLocked(VsockConnKey key, uint16_t op) const {
  VsockHeader h{};
  h.src_cid = kVsockHostCid;
  h.dst_cid = guest_cid_;
  h.src_port = key.local_port;
  h.dst_port = key.guest_port;
  h.type = kVsockTypeStream;
  h.op = op;
  h.buf_alloc = kHostBufAlloc;
  auto it = conns_.find(key);
  h.fwd_cnt = it != conns_.end() ? it->second.fwd_cnt : 0;
  return h;
}

bool Vsock::PushControlLocked(const VsockHeader& h) {
  // Replies the guest provokes wait for rx buffers the guest may never
  // post: bounded, so a guest cannot grow host memory by spamming tx.
  // Dropping a reply only costs that guest its own answer.
  size_t control = 0;
  for (const auto& p : to_guest_) control += p.payload.empty() ? 1 : 0;
  if (control >= kMaxQueuedControl) return false;
  to_guest_.push_back({h, {}});
  return true;
}

void Vsock::RstLocked(VsockConnKey key) { PushControlLocked(HeaderLocked(key, kVsockOpRst)); }

void Vsock::ForgetLocked(VsockConnKey key) {
  conns_.erase(key);
  std::erase(held_, key);
  std::erase_if(to_guest_, [&](const Packet& p) {
    return p.hdr.src_port == key.local_port && p.hdr.dst_port == key.guest_port;
  });
}

void Vsock::ResetConnLocked(VsockConnKey key) {
  auto it = conns_.find(key);
  // A held connect never reached the guest: nothing to reset there.
  if (it == conns_.end() || !it->second.request_held) RstLocked(key);
  conns_.erase(key);
  std::erase(held_, key);  // so held_ stays bounded by the connections
}

void Vsock::MaybeCreditUpdateLocked(VsockConnKey key, Connection& c) {
  if (c.credit_update_queued || c.fwd_cnt == c.fwd_cnt_sent) return;
  // Only once the guest believes half its credit is used: a guest that
  // stopped for lack of credit has used all of it, so it always hears.
  if (c.rx_cnt - c.fwd_cnt_sent < kHostBufAlloc / 2) return;
  c.credit_update_queued = PushControlLocked(HeaderLocked(key, kVsockOpCreditUpdate));
}

bool Vsock::MaybeFinishLocked(VsockConnKey key, Connection& c) {
  const bool guest_done_sending = (c.peer_shutdown & kVsockShutdownSend) != 0;
  const bool guest_done_receiving = (c.peer_shutdown & kVsockShutdownRcv) != 0 || c.host_eof;
  if (!guest_done_sending || !guest_done_receiving || c.buffered() != 0) return false;
  ResetConnLocked(key);
  return true;
}

void Vsock::MaybeArmCloseLocked(Connection& c) {
  const bool guest_full_shutdown = (c.peer_shutdown & (kVsockShutdownRcv | kVsockShutdownSend)) ==
                                   (kVsockShutdownRcv | kVsockShutdownSend);
  if (c.host_gone || guest_full_shutdown) c.close_deadline = clock_() + kCloseTimeout;
}

std::optional<Vsock::TimePoint> Vsock::DeadlineOf(const Connection& c) {
  if (!c.close_deadline) return c.connect_deadline;
  if (!c.connect_deadline) return c.close_deadline;
  return std::min(*c.close_deadline, *c.connect_deadline);
}

bool Vsock::Connect(VsockConnKey key) {
  std::lock_guard lock(mu_);
  auto [it, inserted] = conns_.try_emplace(key);
  if (!inserted) return false;
  it->second.connect_deadline = clock_() + kConnectTimeout;
  if (HoldingConnectsLocked()) {
    it->second.request_held = true;
    held_.push_back(key);
    return true;
  }
  to_guest_.push_back({HeaderLocked(key, kVsockOpRequest), {}});
  return true;
}

bool Vsock::AcceptGuestConnect(VsockConnKey key, bool ok) {
  std::lock_guard lock(mu_);
  auto it = conns_.find(key);
  if (it == conns_.end() || it->second.established) return false;
  if (!ok || !PushControlLocked(HeaderLocked(key, kVsockOpResponse))) {
    ResetConnLocked(key);
    return false;
  }
  it->second.established = true;
  return true;
}

uint32_t Vsock::SendCredit(VsockConnKey key) const {
  std::lock_guard lock(mu_);
  auto it = conns_.find(key);
  if (it == conns_.end() || !it->second.established) return 0;
  const Connection& c = it->second;
  if ((c.peer_shutdown & kVsockShutdownRcv) != 0 || c.host_eof) return 0;
  // Unsigned wrap-around is the protocol's arithmetic (5.10.6.3).
  const uint32_t in_flight = c.tx_cnt - c.peer_fwd_cnt;
  const uint32_t credit = in_flight >= c.peer_buf_alloc ? 0 : c.peer_buf_alloc - in_flight;
  return static_cast<uint32_t>(std::min<uint64_t>(credit, rx_room_));
}

void Vsock::Send(VsockConnKey key, std::span<const uint8_t> bytes) {
  std::lock_guard lock(mu_);
  auto it = conns_.find(key);
  if (it == conns_.end() || bytes.empty()) return;
  it->second.tx_cnt += static_cast<uint32_t>(bytes.size());
  rx_room_ -= std::min<uint64_t>(rx_room_, bytes.size());
  if (it->second.close_deadline) MaybeArmCloseLocked(it->second);  // progress
  VsockHeader h = HeaderLocked(key, kVsockOpRw);
  h.len = static_cast<uint32_t>(bytes.size());
  to_guest_.push_back({h, {bytes.begin(), bytes.end()}});
}

bool Vsock::HostEof(VsockConnKey key) {
  std::lock_guard lock(mu_);
  auto it = conns_.find(key);
  if (it == conns_.end()) return true;
  Connection& c = it->second;
  if (!c.host_eof) {
    c.host_eof = true;
    VsockHeader h = HeaderLocked(key, kVsockOpShutdown);
    h.flags = kVsockShutdownSend;
    if (!PushControlLocked(h)) {
      ResetConnLocked(key);
      return true;
    }
  }
  return MaybeFinishLocked(key, c);
}

void Vsock::Close(VsockConnKey key) {
  std::lock_guard lock(mu_);
  if (conns_.contains(key)) ResetConnLocked(key);
}

bool Vsock::HostGone(VsockConnKey key) {
  std::lock_guard lock(mu_);
  auto it = conns_.find(key);
  if (it == conns_.end()) return true;
  if (it->second.host_gone) return false;
  Connection& c = it->second;
  c.host_gone = true;
  VsockHeader h = HeaderLocked(key, kVsockOpShutdown);
  h.flags = kVsockShutdownRcv | (c.host_eof ? kVsockShutdownSend : 0);
  if (!PushControlLocked(h)) {
    ResetConnLocked(key);
    return true;
  }
  MaybeArmCloseLocked(c);
  return false;
}

std::vector<VsockConnKey> Vsock::ExpireCloses() {
  std::lock_guard lock(mu_);
  std::vector<VsockConnKey> expired;
  const TimePoint now = clock_();
  for (const auto& [key, c] : conns_) {
    const std::optional<TimePoint> deadline = DeadlineOf(c);
    if (deadline && *deadline <= now) expired.push_back(key);
  }
  for (const VsockConnKey& key : expired) ResetConnLocked(key);
  return expired;
}

std::optional<std::chrono::nanoseconds> Vsock::TimeToNextClose() const {
  std::lock_guard lock(mu_);
  std::optional<TimePoint> next;
  for (const auto& [key, c] : conns_) {
    const std::optional<TimePoint> deadline = DeadlineOf(c);
    if (deadline && (!next || *deadline < *next)) next = deadline;
  }
  if (!next) return std::nullopt;
  return std::max(std::chrono::nanoseconds(0), *next - clock_());
}

RateLimiterConfig Vsock::limit() const {
  std::lock_guard lock(mu_);
  return limiter_.config();
}

size_t Vsock::queued_for_guest() const {
  std::lock_guard lock(mu_);
  return to_guest_.size();
}

size_t Vsock::held_connects() const {
  std::lock_guard lock(mu_);
  return held_.size();
}

bool Vsock::HasToHost(VsockConnKey key) const {
  std::lock_guard lock(mu_);
  auto it = conns_.find(key);
  if (it == conns_.end()) return false;
  const Connection& c = it->second;
  return c.buffered() != 0 || ((c.peer_shutdown & kVsockShutdownSend) != 0 && !c.shut_write_done);
}

Vsock::DrainResult Vsock::DrainToHost(
    VsockConnKey key, const std::function<ssize_t(std::span<const uint8_t>)>& write) {
  std::lock_guard lock(mu_);
  DrainResult r;
  auto it = conns_.find(key);
  if (it == conns_.end()) {
    r.closed = true;
    return r;
  }
  Connection& c = it->second;
  const size_t buffered_before = c.buffered();
  while (c.buffered() != 0) {
    const ssize_t n = write({c.to_host.data() + c.to_host_head, c.buffered()});
    if (n < 0) {
      ResetConnLocked(key);
      r.closed = true;
      return r;
    }
    if (n == 0) break;
    c.to_host_head += static_cast<size_t>(n);
    c.fwd_cnt += static_cast<uint32_t>(n);
  }
  if (c.close_deadline && c.buffered() != buffered_before) MaybeArmCloseLocked(c);  // progress
  if (c.buffered() == 0) {
    c.to_host.clear();
    c.to_host_head = 0;
  } else if (c.to_host_head >= c.to_host.size() / 2) {
    c.to_host.erase(c.to_host.begin(), c.to_host.begin() + static_cast<ptrdiff_t>(c.to_host_head));
    c.to_host_head = 0;
  }
  if ((c.peer_shutdown & kVsockShutdownSend) != 0 && c.buffered() == 0 && !c.shut_write_done) {
    c.shut_write_done = true;
    r.shut_write = true;
  }
  if (MaybeFinishLocked(key, c)) {
    r.closed = true;
    return r;
  }
  MaybeCreditUpdateLocked(key, c);
  return r;
}

absl::StatusOr<bool> Vsock::DeliverLocked(Queue& rx, const GuestMemory& mem) {
  bool used = false;
  while (!to_guest_.empty()) {
    FORKD_ASSIGN_OR_RETURN(auto chain, rx.Pop(mem));
    if (!chain) break;  // no rx buffer: the packets wait for the next kick
    Packet& p = to_guest_.front();
    // A data packet takes an op and a byte now, the rest of what this
    // buffer carries once known (the bucket may go into debt).
    if (!p.payload.empty() && !limiter_.TryConsume(1)) {
      rx.UndoPop();
      ScheduleRetry(kRx, limiter_.TimeUntilReady(1));
      break;
    }
    const uint64_t room = WritableBytes(*chain);
    if (room < sizeof(VsockHeader)) {
      return absl::InvalidArgumentError("vsock rx buffer smaller than a packet header");
    }
    // A payload larger than the buffer is split; the rest stays queued.
    const size_t n = std::min<uint64_t>(p.payload.size(), room - sizeof(VsockHeader));
    if (n > 1) limiter_.ForceConsumeBytes(n - 1);
    VsockHeader h = p.hdr;
    h.len = static_cast<uint32_t>(n);
    // The credit fields are current as the packet leaves, not as queued.
    auto it = conns_.find({h.src_port, h.dst_port});
    if (it != conns_.end()) {
      h.fwd_cnt = it->second.fwd_cnt;
      it->second.fwd_cnt_sent = h.fwd_cnt;
      if (h.op == kVsockOpCreditUpdate) it->second.credit_update_queued = false;
    }
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
  FORKD_RETURN_IF_ERROR(MeasureRxRoomLocked(rx, mem));
  return used;
}

absl::Status Vsock::MeasureRxRoomLocked(Queue& rx, const GuestMemory& mem) {
  rx_room_ = 0;
  if (!to_guest_.empty()) return absl::OkStatus();  // every buffer is taken
  // Walks what the guest posted without consuming it.
  uint16_t looked = 0;
  absl::Status st;
  while (rx_room_ < kMaxRxRoom) {
    auto chain = rx.Pop(mem);
    if (!chain.ok()) {
      st = chain.status();
      break;
    }
    if (!*chain) break;
    ++looked;
    const uint64_t room = WritableBytes(**chain);
    rx_room_ += room > sizeof(VsockHeader) ? room - sizeof(VsockHeader) : 0;
  }
  rx.UndoPop(looked);
  rx_room_ = std::min(rx_room_, kMaxRxRoom);
  return st;
}

void Vsock::HandlePacketLocked(const VsockHeader& h, std::span<const uint8_t> payload,
                               TxResult* out) {
  const VsockConnKey key{h.dst_port, h.src_port};
  auto it = conns_.find(key);
  if (it != conns_.end() && it->second.request_held) {
    // The guest has not heard of a held connect: what it sends on the pair
    // belongs to a connection from before the restore (the template's, which
    // a fork's first host port can repeat), reset like any stranger's.
    if (h.op != kVsockOpRst) RstLocked(key);
    return;
  }
  if (it == conns_.end()) {
    if (h.op == kVsockOpRequest && conns_.size() < kMaxConnections) {
      Connection c;
      c.guest_initiated = true;
      c.peer_buf_alloc = h.buf_alloc;
      c.peer_fwd_cnt = h.fwd_cnt;
      conns_.emplace(key, std::move(c));
      out->events.emplace_back(EventKind::kGuestConnect, key);
      return;
    }
    // Unknown connection (or too many): reset, unless it is itself a reset.
    if (h.op != kVsockOpRst) RstLocked(key);
    return;
  }
  Connection& c = it->second;
  c.peer_buf_alloc = h.buf_alloc;
  c.peer_fwd_cnt = h.fwd_cnt;
  out->activity = true;  // credit may have changed
  bool violation = false;
  switch (h.op) {
    case kVsockOpResponse:
      // A RESPONSE to a REQUEST the guest never got breaks the protocol.
      if (c.established || c.guest_initiated || c.request_held) {
        violation = true;
        break;
      }
      c.established = true;
      c.connect_deadline.reset();
      out->events.emplace_back(EventKind::kConnected, key);
      break;
    case kVsockOpRw:
      // Bytes beyond the credit we advertised, or after the guest said it
      // sends no more, break the protocol.
      if (!c.established || (c.peer_shutdown & kVsockShutdownSend) != 0 ||
          c.buffered() + payload.size() > kHostBufAlloc) {
        violation = true;
        break;
      }
      c.to_host.insert(c.to_host.end(), payload.begin(), payload.end());
      c.rx_cnt += static_cast<uint32_t>(payload.size());
      break;
    case kVsockOpCreditRequest:
      if (!c.credit_update_queued) {
        c.credit_update_queued = PushControlLocked(HeaderLocked(key, kVsockOpCreditUpdate));
      }
      break;
    case kVsockOpCreditUpdate:
      break;  // credit already taken from the header
    case kVsockOpShutdown: {
      // No flags is read as both (the guest is going away).
      const uint32_t flags = h.flags & (kVsockShutdownRcv | kVsockShutdownSend);
      c.peer_shutdown |= flags != 0 ? flags : kVsockShutdownRcv | kVsockShutdownSend;
      if (MaybeFinishLocked(key, c)) {
        out->events.emplace_back(EventKind::kClosed, key);
      } else if (!c.close_deadline) {
        MaybeArmCloseLocked(c);
      }
      break;
    }
    case kVsockOpRst:
      ForgetLocked(key);
      out->events.emplace_back(EventKind::kClosed, key);
      break;
    default:  // REQUEST on an existing connection, unknown ops
      violation = true;
      break;
  }
  if (violation) {
    ForgetLocked(key);  // what was queued for it is moot
    RstLocked(key);
    out->events.emplace_back(EventKind::kClosed, key);
  }
}

absl::Status Vsock::HandleTxLocked(Queue& tx, const GuestMemory& mem, TxResult* out) {
  while (true) {
    FORKD_ASSIGN_OR_RETURN(auto chain, tx.Pop(mem));
    if (!chain) return absl::OkStatus();
    FORKD_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, Gather(mem, *chain));
    const uint64_t payload_bytes = bytes.size() - std::min(bytes.size(), sizeof(VsockHeader));
    if (!limiter_.TryConsume(payload_bytes)) {
      tx.UndoPop();  // the packet stays in the guest's queue
      ScheduleRetry(kTx, limiter_.TimeUntilReady(payload_bytes));
      return absl::OkStatus();
    }
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
    HandlePacketLocked(h, {bytes.data() + sizeof h, payload_len}, out);
  }
}

absl::StatusOr<bool> Vsock::ProcessQueue(size_t index, std::span<Queue> queues,
                                         const GuestMemory& mem) {
  TxResult res;
  bool used = false;
  {
    std::lock_guard lock(mu_);
    if (index == kTx) {
      const uint16_t before = queues[kTx].state().next_used;
      FORKD_RETURN_IF_ERROR(HandleTxLocked(queues[kTx], mem, &res));
      used = queues[kTx].state().next_used != before;  // tx buffers returned
    }
  }
  // Backend calls without the device lock (see the header's locking note),
  // in the order the packets came: an RST then a REQUEST on the same ports
  // must close the old host socket before opening the new one.
  for (const auto& [kind, k] : res.events) {
    switch (kind) {
      case EventKind::kConnected:
        backend_->OnConnected(k);
        break;
      case EventKind::kGuestConnect:
        backend_->OnGuestConnect(k);
        break;
      case EventKind::kClosed:
        backend_->OnClosed(k);
        break;
    }
  }
  if (res.activity) backend_->OnActivity();
  bool room_opened = false;
  {
    std::lock_guard lock(mu_);
    FORKD_ASSIGN_OR_RETURN(bool event, DeliverEventLocked(queues[kEvent], mem));
    used = used || event;
    // Held REQUESTs go out with the rx delivery below.
    FORKD_RETURN_IF_ERROR(MaybeReleaseConnectsLocked(queues[kEvent], mem));
    if (queues[kRx].state().ready) {
      const uint64_t room_before = rx_room_;
      FORKD_ASSIGN_OR_RETURN(bool delivered, DeliverLocked(queues[kRx], mem));
      used = used || delivered;
      room_opened = rx_room_ > room_before;
    }
  }
  // New rx buffers: the backend may read host bytes into them now.
  if (room_opened) backend_->OnActivity();
  return used;
}

}  // namespace forkd::vmm::virtio

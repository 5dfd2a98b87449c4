// Harness (c): vsock tx packets (header + payload, any op/type/port/credit,
// split across descriptors in any way, hostile descriptors too) interleaved
// with rx buffer posting, notifies, resets and snapshots, through the vsock
// device and its transport, with a host side driven in the same thread: the
// backend only records events (as VsockMuxer queues them for its thread),
// and host operations answer guest connects, connect to the guest, send
// bytes within SendCredit, drain guest bytes into a socketpair (taking all,
// some, none or failing), report EOF / hang-up / close, and advance the
// device's clock past close and connect deadlines. The muxer's own thread
// and unix sockets are not run here (vsock_test.cc covers them): the
// harness calls the same device API it does, deterministically.
//
// Promises checked: every used buffer is one the driver posted and its
// length fits the buffer; every rx packet is from the host CID to the
// guest's, a stream packet with a known op, whose header length matches the
// used length; SendCredit stays within kMaxRxRoom; after ExpireCloses no
// deadline is past; a saved state restores. The first byte picks whether
// the device is rate-limited (tiny buckets, fuzzed clock).
#include <sys/socket.h>

#include <chrono>
#include <deque>
#include <memory>
#include <vector>

#include "forkd/vmm/devices/virtio/mmio_transport.h"
#include "forkd/vmm/devices/virtio/vsock.h"
#include "forkd/vmm/fuzz/check.h"
#include "forkd/vmm/fuzz/entries.h"
#include "forkd/vmm/fuzz/fuzz_input.h"
#include "forkd/vmm/fuzz/guest_arena.h"
#include "forkd/vmm/fuzz/ring_driver.h"

namespace forkd::vmm::fuzz {
namespace {

using namespace virtio;

constexpr uint64_t kMemSize = MemoryFor(3);
constexpr uint64_t kGuestCid = 3;
constexpr size_t kRxQ = 0, kTxQ = 1, kEventQ = 2;

struct RecordingBackend : VsockBackend {
  void OnConnected(VsockConnKey) override {}
  void OnGuestConnect(VsockConnKey k) override { guest_connects.push_back(k); }
  void OnActivity() override {}
  void OnClosed(VsockConnKey) override {}
  std::deque<VsockConnKey> guest_connects;
};

VsockConnKey Key(uint8_t pick) {
  static constexpr uint32_t kLocal[] = {1024, 1025, 1u << 30};
  static constexpr uint32_t kGuest[] = {5000, 5001};
  return {kLocal[pick % 3], kGuest[(pick / 3) % 2]};
}

struct Harness {
  const GuestMemory& mem;
  Vsock::TimePoint now{};
  std::optional<RateLimiterConfig> limit;
  RecordingBackend backend;
  Vsock* dev = nullptr;
  std::unique_ptr<MmioTransport> t;
  RingDriver driver;
  UniqueFd host, host_peer;  // the "host socket" DrainToHost writes into

  Harness(const GuestMemory& m, std::optional<RateLimiterConfig> l)
      : mem(m), limit(l), t(MakeTransport()), driver(m, t.get()) {
    int sv[2];
    FORKD_FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
                     "socketpair");
    host.reset(sv[0]);
    host_peer.reset(sv[1]);
  }

  std::unique_ptr<MmioTransport> MakeTransport() {
    auto d = std::make_unique<Vsock>(
        kGuestCid, &backend, [this] { return now; }, limit);
    dev = d.get();
    auto tr = std::make_unique<MmioTransport>(Vsock::kName, mem, std::move(d), [] {});
    tr->set_error_handler([](const absl::Status&, bool host_failure) {
      FORKD_FUZZ_CHECK(!host_failure, "a guest made vsock report a host failure");
    });
    tr->set_retry([](size_t, std::chrono::nanoseconds) {});
    return tr;
  }

  void Notify(FuzzInput& in, size_t q) {
    if (in.U8() % 2) {
      driver.W(reg::kQueueNotify, static_cast<uint32_t>(q));
    } else {
      t->Kick(static_cast<uint32_t>(q));
    }
  }

  ChainDesc Hostile(FuzzInput& in) {
    ChainDesc d;
    d.addr = in.U8() % 2 ? in.U64() : kMemSize - in.U8();
    d.len = in.U32();
    d.writable = in.U8() % 2;
    d.in_slot = false;
    return d;
  }

  void TxPacket(FuzzInput& in) {
    VsockHeader h{};
    h.src_cid = in.U8() % 8 == 0 ? in.U64() : kGuestCid;
    h.dst_cid = in.U8() % 8 == 0 ? in.U64() : kVsockHostCid;
    const uint8_t ports = in.U8();
    const VsockConnKey k = Key(ports);
    h.src_port = ports >= 0xf0 ? in.U32() : k.guest_port;
    h.dst_port = ports >= 0xe0 && ports < 0xf0 ? in.U32() : k.local_port;
    h.op = in.U8() % 9;
    h.type = in.U8() % 8 == 0 ? in.U16() : kVsockTypeStream;
    const uint8_t f = in.U8();
    h.flags = f < 0xf0 ? f % 4 : in.U32();
    switch (in.U8() % 5) {
      case 0:
        h.buf_alloc = 0;
        break;
      case 1:
        h.buf_alloc = 64;
        break;
      case 2:
        h.buf_alloc = 256 * 1024;
        break;
      default:
        h.buf_alloc = in.U32();
    }
    h.fwd_cnt = in.U8() % 2 ? in.U32() : 0;
    const auto payload = in.Bytes(in.U16() % 1500);
    h.len = in.U8() % 8 == 0 ? in.U32() : static_cast<uint32_t>(payload.size());

    // Sized once: GCC 12 reports a false -Warray-bounds for insert() here.
    std::vector<uint8_t> packet(sizeof h + payload.size());
    std::memcpy(packet.data(), &h, sizeof h);
    if (!payload.empty()) std::memcpy(packet.data() + sizeof h, payload.data(), payload.size());
    auto piece = [&](size_t from, size_t n) {
      ChainDesc d;
      d.len = static_cast<uint32_t>(n);
      d.fill.assign(packet.begin() + static_cast<std::ptrdiff_t>(from),
                    packet.begin() + static_cast<std::ptrdiff_t>(from + n));
      return d;
    };
    std::vector<ChainDesc> chain;
    const size_t len = packet.size();
    switch (in.U8() % 4) {
      case 0:  // header and payload in one buffer
        chain.push_back(piece(0, len));
        break;
      case 1:  // header, then payload
        chain.push_back(piece(0, sizeof h));
        if (len > sizeof h) chain.push_back(piece(sizeof h, len - sizeof h));
        break;
      case 2: {  // the header itself split
        const size_t cut = 1 + in.U8() % (sizeof h - 1);
        chain.push_back(piece(0, cut));
        chain.push_back(piece(cut, len - cut));
        break;
      }
      default:  // plus a hostile descriptor (anywhere, any length, maybe writable)
        chain.push_back(piece(0, len));
        chain.push_back(Hostile(in));
    }
    driver.Post(kTxQ, chain);
    Notify(in, kTxQ);
  }

  void RxBuffers(FuzzInput& in, size_t q) {
    const int n = 1 + in.U8() % 4;
    for (int i = 0; i < n; ++i) {
      const uint8_t shape = in.U8();
      std::vector<ChainDesc> chain;
      if (shape < 0xf0) {
        // Mostly big enough for a header; a small one is the guest's fault
        // (NEEDS_RESET), the bring-up op recovers.
        const uint32_t len = shape % 16 == 2 ? in.U8() % 44 : 44 + in.U16() % 2004;
        chain.push_back({.len = len, .writable = true});
        if (shape % 4 == 0) {  // a second piece
          const uint32_t more = in.U16() % 2048;
          chain.push_back({.len = more, .writable = true});
        }
        if (shape % 16 == 1) chain.front().writable = false;  // a readable rx buffer
      } else {
        chain.push_back(Hostile(in));
      }
      driver.Post(q, chain);
    }
    Notify(in, q);
  }

  void CheckRx() {
    for (const UsedElem& u : driver.TakeUsed(kRxQ)) {
      FORKD_FUZZ_CHECK(!u.posted.empty(), "rx: used head the driver never posted");
      uint64_t cap = 0;
      bool exclusive = true;
      std::vector<uint8_t> bytes;
      for (const ChainDesc& d : u.posted) {
        if (!d.writable) continue;
        cap += d.len;
        exclusive = exclusive && d.exclusive();
        auto s = mem.Slice(d.addr, d.len);
        if (s.ok()) bytes.insert(bytes.end(), s->begin(), s->end());
      }
      FORKD_FUZZ_CHECK(u.len <= cap, "rx: used length beyond the buffer");
      // A buffer sharing bytes with another one may hold the other's packet.
      if (!exclusive) continue;
      FORKD_FUZZ_CHECK(u.len >= sizeof(VsockHeader), "rx: a packet shorter than its header");
      VsockHeader h;
      std::memcpy(&h, bytes.data(), sizeof h);
      FORKD_FUZZ_CHECK(h.src_cid == kVsockHostCid, "rx: not from the host");
      FORKD_FUZZ_CHECK(h.dst_cid == kGuestCid, "rx: not to the guest");
      FORKD_FUZZ_CHECK(h.type == kVsockTypeStream, "rx: not a stream packet");
      FORKD_FUZZ_CHECK(h.op >= kVsockOpRequest && h.op <= kVsockOpCreditRequest, "rx: op");
      FORKD_FUZZ_CHECK(uint64_t{h.len} + sizeof h == u.len, "rx: header len != used len");
      FORKD_FUZZ_CHECK(h.op == kVsockOpRw || h.len == 0, "rx: payload on a control packet");
      ++reached().vsock_rx_packets;
    }
    for (size_t q : {kTxQ, kEventQ}) {
      for (const UsedElem& u : driver.TakeUsed(q)) {
        FORKD_FUZZ_CHECK(!u.posted.empty(), "used head the driver never posted");
        uint64_t cap = 0;
        for (const ChainDesc& d : u.posted) cap += d.writable ? d.len : 0;
        FORKD_FUZZ_CHECK(u.len <= cap, "used length beyond the writable buffers");
      }
    }
  }

  void Host(FuzzInput& in) {
    const VsockConnKey k = Key(in.U8());
    switch (in.U8() % 8) {
      case 0:  // answer the oldest guest connect
        if (!backend.guest_connects.empty()) {
          dev->AcceptGuestConnect(backend.guest_connects.front(), in.U8() % 4 != 0);
          backend.guest_connects.pop_front();
        }
        break;
      case 1:
        dev->Connect(k);
        break;
      case 2: {
        const uint32_t credit = dev->SendCredit(k);
        FORKD_FUZZ_CHECK(credit <= Vsock::kMaxRxRoom, "SendCredit beyond kMaxRxRoom");
        const uint32_t n = std::min<uint32_t>(credit, in.U16());
        std::vector<uint8_t> bytes(n, 0x5a);
        if (n > 0) dev->Send(k, bytes);
        break;
      }
      case 3: {
        const uint8_t mode = in.U8() % 4;
        dev->DrainToHost(k, [&](std::span<const uint8_t> b) -> ssize_t {
          FORKD_FUZZ_CHECK(!b.empty(), "DrainToHost offered nothing");
          if (mode == 2) return 0;
          if (mode == 3) return -1;
          const size_t n = mode == 0 ? b.size() : (b.size() + 1) / 2;
          const ssize_t w = ::send(host.get(), b.data(), n, MSG_NOSIGNAL);
          uint8_t sink[4096];
          while (::recv(host_peer.get(), sink, sizeof sink, MSG_DONTWAIT) > 0) {
          }
          if (w > 0) reached().vsock_drained += static_cast<uint64_t>(w);
          return w < 0 ? 0 : w;
        });
        break;
      }
      case 4:
        dev->HostEof(k);
        break;
      case 5:
        dev->HostGone(k);
        break;
      case 6:
        dev->Close(k);
        break;
      default: {
        now += std::chrono::milliseconds(in.U16());
        dev->ExpireCloses();
        const auto next = dev->TimeToNextClose();
        FORKD_FUZZ_CHECK(!next || next->count() > 0, "a deadline past after ExpireCloses");
      }
    }
    t->Kick(kRxQ);  // what the muxer's kick_rx does after host work
  }

  void SaveRestore() {
    const DeviceState st = t->SaveDevice();
    backend.guest_connects.clear();
    auto fresh = MakeTransport();
    FORKD_FUZZ_CHECK(fresh->RestoreDevice(st).ok(), "a saved vsock state did not restore");
    t = std::move(fresh);
    driver.set_transport(*t);
  }
};

}  // namespace

int VsockOneInput(const uint8_t* data, size_t size) {
  const GuestMemory& mem = FreshGuestMemory<kMemSize>();
  FuzzInput in(data, size);
  std::optional<RateLimiterConfig> limit;
  if (in.U8() % 4 == 0) {
    limit = RateLimiterConfig{{in.U16(), in.U16()}, {in.U8(), in.U8()}};
  }
  Harness h(mem, limit);
  h.driver.Init(3, static_cast<uint16_t>(1u << (2 + in.U8() % 5)), 0);
  for (int ops = 0; !in.empty() && ops < 256; ++ops) {
    switch (in.U8() % 8) {
      case 0:
      case 1:
        h.TxPacket(in);
        break;
      case 2:
        h.RxBuffers(in, kRxQ);
        break;
      case 3:
        h.RxBuffers(in, kEventQ);
        break;
      case 4:
      case 5:
        h.Host(in);
        break;
      case 6:
        h.driver.Init(3, static_cast<uint16_t>(1u << (in.U8() % 7)), 0);
        break;
      default:
        h.SaveRestore();
    }
    h.CheckRx();
  }
  return 0;
}

}  // namespace forkd::vmm::fuzz

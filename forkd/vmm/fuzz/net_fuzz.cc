// Harness (d): virtio-net tx frames and rx buffers against a fake tap (a
// SOCK_SEQPACKET socketpair: one frame per message, like a tap fd). Tx
// chains carry any header and frame bytes, in one to four descriptors of any
// length, sometimes a device-writable or hostile (out-of-range, huge)
// descriptor; rx buffers of any size, sometimes readable or hostile; frames
// of any size injected on the tap's far end; notifies by MMIO or Kick;
// resets; save + restore with a MAC override; a fuzzed clock for the rate
// limits (the first byte picks whether rx and tx are limited).
//
// Promises checked: every frame the tap gets has a 12-byte header of zeros
// and a size within [14, 1518] after it, and (unlimited, and no descriptor
// longer than its buffer slot) exactly the bytes of the next well-formed
// chain the guest posted; every used buffer is one
// the driver posted; an rx buffer gets either nothing (len 0, too small) or
// exactly the next injected frame of at least 26 bytes, behind a header of
// zeros with num_buffers = 1; tx used lengths are 0.
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "forkd/vmm/devices/virtio/mmio_transport.h"
#include "forkd/vmm/devices/virtio/net.h"
#include "forkd/vmm/fuzz/check.h"
#include "forkd/vmm/fuzz/entries.h"
#include "forkd/vmm/fuzz/fuzz_input.h"
#include "forkd/vmm/fuzz/guest_arena.h"
#include "forkd/vmm/fuzz/ring_driver.h"

namespace forkd::vmm::fuzz {
namespace {

using namespace virtio;

constexpr uint64_t kMemSize = MemoryFor(2);
constexpr size_t kRxQ = Net::kRxQueue, kTxQ = Net::kTxQueue;
constexpr MacAddress kMac = {2, 0, 0, 0, 0, 1};
constexpr uint64_t kMinTapFrame = kNetHeaderSize + Net::kMinFrameBytes;

struct Harness {
  const GuestMemory& mem;
  RateLimiter::TimePoint now{};
  NetRateLimits limits;
  bool limited = false;
  UniqueFd peer;  // the network side of the tap
  std::unique_ptr<MmioTransport> t;
  RingDriver driver;
  // Frames the tap should get, in order (nullopt: bytes unknown, the guest's
  // buffers overlapped).
  std::deque<std::optional<std::vector<uint8_t>>> tx_expected;
  std::deque<std::vector<uint8_t>> rx_injected;  // frames waiting in the tap
  bool flushed = false;  // the tap was flushed since the device needed a reset

  Harness(const GuestMemory& m, FuzzInput& in) : mem(m), driver(m, nullptr) {
    if (in.U8() % 4 == 0) {
      limited = true;
      limits.rx = RateLimiterConfig{{in.U16(), in.U16()}, {in.U8(), in.U8()}};
      limits.tx = RateLimiterConfig{{in.U16(), in.U16()}, {in.U8(), in.U8()}};
    }
    limits.clock = [this] { return now; };
    t = MakeTransport(std::nullopt);
    driver.set_transport(*t);
  }

  std::unique_ptr<MmioTransport> MakeTransport(std::optional<MacAddress> mac_override) {
    int sv[2];
    FORKD_FUZZ_CHECK(
        ::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
        "socketpair");
    peer.reset(sv[1]);
    auto dev = std::make_unique<Net>(UniqueFd(sv[0]), kMac, mac_override, limits);
    auto tr = std::make_unique<MmioTransport>(Net::kName, mem, std::move(dev), [] {});
    tr->set_error_handler([](const absl::Status&, bool host_failure) {
      FORKD_FUZZ_CHECK(!host_failure, "a guest made net report a host failure");
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
    d.len = in.U8() % 2 ? in.U32() : in.U16();
    d.writable = in.U8() % 2;
    d.in_slot = false;
    return d;
  }

  void Tx(FuzzInput& in) {
    const int pieces = 1 + in.U8() % 4;
    std::vector<ChainDesc> chain;
    std::vector<uint8_t> frame;
    bool well_formed = true, exact = true;
    for (int i = 0; i < pieces; ++i) {
      const uint8_t shape = in.U8();
      if (shape >= 0xf8) {
        // Anywhere, any length: inside guest memory and readable it is a
        // legitimate (if odd) piece of the frame, with bytes we do not track.
        ChainDesc d = Hostile(in);
        const bool inside = d.addr <= kMemSize && d.len <= kMemSize - d.addr;
        well_formed = well_formed && inside && !d.writable;
        exact = false;
        chain.push_back(d);
        continue;
      }
      ChainDesc d;
      d.len = shape % 8 == 0 ? in.U16() : in.U16() % 1600;  // sometimes past its slot
      const auto bytes = in.Bytes(d.len);
      d.fill.assign(bytes.begin(), bytes.end());
      d.fill.resize(std::min<uint64_t>(d.len, kSlotSize), 0xa5);
      d.writable = shape % 32 == 1;
      well_formed = well_formed && !d.writable;
      exact = exact && d.exclusive();
      frame.insert(frame.end(), d.fill.begin(), d.fill.end());
      chain.push_back(std::move(d));
    }
    uint64_t total = 0;
    for (const ChainDesc& d : chain) total += d.len;
    if (!driver.Post(kTxQ, chain)) return;
    if (well_formed && total >= kMinTapFrame && total - kNetHeaderSize <= Net::kMaxFrameBytes) {
      if (exact) {  // then `frame` holds all `total` bytes
        std::fill(frame.begin(), frame.begin() + kNetHeaderSize, 0);
        tx_expected.push_back(std::move(frame));
      } else {
        tx_expected.push_back(std::nullopt);
      }
    }
    Notify(in, kTxQ);
  }

  void RxBuffers(FuzzInput& in) {
    const int n = 1 + in.U8() % 4;
    for (int i = 0; i < n; ++i) {
      const uint8_t shape = in.U8();
      std::vector<ChainDesc> chain;
      if (shape >= 0xf8) {
        chain.push_back(Hostile(in));
      } else {
        const uint32_t len = shape % 4 == 0 ? in.U16() % 256 : 1526 + in.U16() % 512;
        chain.push_back({.len = len, .writable = shape % 32 != 1});
        if (shape % 8 == 2) chain.push_back({.len = in.U16() % 1600u, .writable = true});
      }
      driver.Post(kRxQ, chain);
    }
    Notify(in, kRxQ);
  }

  void Inject(FuzzInput& in) {
    const uint32_t len = in.U8() % 8 == 0 ? in.U16() % 9000 : in.U16() % 1600;
    const auto bytes = in.Bytes(len);
    std::vector<uint8_t> frame(bytes.begin(), bytes.end());
    frame.resize(len, 0x3c);
    if (::send(peer.get(), frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL) ==
        static_cast<ssize_t>(frame.size())) {
      rx_injected.push_back(std::move(frame));
    }
    t->Kick(kRxQ);  // NetPump saw the tap readable
  }

  void Reset(FuzzInput& in) {
    const auto size = static_cast<uint16_t>(1u << (in.U8() % 7));
    const uint32_t features = in.U8() % 4 ? static_cast<uint32_t>(kNetFeatureMac) : 0;
    driver.Init(2, size, features);
    tx_expected.clear();
    flushed = false;
  }

  void SaveRestore(FuzzInput& in) {
    const DeviceState st = t->SaveDevice();
    std::optional<MacAddress> mac;
    if (in.U8() % 2) mac = MacAddress{2, 0, 0, 0, 0, in.U8()};
    // The new device has a new tap: what waited in the old one is gone.
    auto fresh = MakeTransport(mac);
    rx_injected.clear();
    FORKD_FUZZ_CHECK(fresh->RestoreDevice(st).ok(), "a saved net state did not restore");
    t = std::move(fresh);
    driver.set_transport(*t);
    flushed = false;
  }

  // `sent`: the operation may have written to the tap (system calls are
  // dear: the tap is read only then).
  void Check(bool sent) {
    uint8_t buf[70000];
    ssize_t n;
    while (sent && (n = ::recv(peer.get(), buf, sizeof buf, MSG_DONTWAIT)) >= 0) {
      const auto len = static_cast<uint64_t>(n);
      FORKD_FUZZ_CHECK(len >= kMinTapFrame, "tap got a frame below 14 bytes");
      FORKD_FUZZ_CHECK(len - kNetHeaderSize <= Net::kMaxFrameBytes, "tap got an oversize frame");
      for (uint32_t i = 0; i < kNetHeaderSize; ++i) {
        FORKD_FUZZ_CHECK(buf[i] == 0, "tap got a nonzero virtio_net_hdr");
      }
      FORKD_FUZZ_CHECK(!tx_expected.empty(), "tap got a frame the guest never sent");
      if (!limited && tx_expected.front()) {
        FORKD_FUZZ_CHECK(*tx_expected.front() == std::vector<uint8_t>(buf, buf + len),
                         "tap frame differs from the guest's");
      }
      tx_expected.pop_front();
      ++reached().net_tx_frames;
    }
    for (const UsedElem& u : driver.TakeUsed(kTxQ)) {
      FORKD_FUZZ_CHECK(!u.posted.empty(), "tx: used head the driver never posted");
      FORKD_FUZZ_CHECK(u.len == 0, "tx: used length != 0");
    }
    for (const UsedElem& u : driver.TakeUsed(kRxQ)) {
      FORKD_FUZZ_CHECK(!u.posted.empty(), "rx: used head the driver never posted");
      while (!rx_injected.empty() && rx_injected.front().size() < kMinTapFrame) {
        rx_injected.pop_front();  // read and dropped by the device
      }
      FORKD_FUZZ_CHECK(!rx_injected.empty(), "rx: a frame the tap never had");
      const std::vector<uint8_t> frame = std::move(rx_injected.front());
      rx_injected.pop_front();
      uint64_t cap = 0;
      bool exclusive = true;
      std::vector<uint8_t> got;
      for (const ChainDesc& d : u.posted) {
        cap += d.len;
        exclusive = exclusive && d.exclusive();
        auto s = mem.Slice(d.addr, d.len);
        if (s.ok()) got.insert(got.end(), s->begin(), s->end());
      }
      if (u.len == 0) {
        FORKD_FUZZ_CHECK(frame.size() > cap, "rx: a frame that fit was dropped");
        continue;
      }
      FORKD_FUZZ_CHECK(u.len == frame.size(), "rx: used length != frame length");
      if (!exclusive) continue;  // another buffer's frame may sit in its bytes
      got.resize(frame.size());
      for (uint32_t i = 0; i < kNetHeaderSize; ++i) {
        FORKD_FUZZ_CHECK(got[i] == (i == 10 ? 1 : 0), "rx: header not zeros + num_buffers 1");
      }
      FORKD_FUZZ_CHECK(
          std::equal(frame.begin() + kNetHeaderSize, frame.end(), got.begin() + kNetHeaderSize),
          "rx: frame bytes differ from the tap's");
      ++reached().net_rx_frames;
    }
    if (!flushed && (driver.R(reg::kStatus) & kStatusNeedsReset)) {
      flushed = true;
      // A broken rx chain is found after the frame was read from the tap,
      // and that frame is lost (as on a wire). The device is dead until the
      // driver resets it: flush the tap so the model starts over.
      uint8_t sink[70000];
      while (::read(t->device<Net>().tap_fd(), sink, sizeof sink) > 0) {
      }
      rx_injected.clear();
    }
  }
};

}  // namespace

int NetOneInput(const uint8_t* data, size_t size) {
  const GuestMemory& mem = FreshGuestMemory<kMemSize>();
  FuzzInput in(data, size);
  Harness h(mem, in);
  h.driver.Init(2, static_cast<uint16_t>(1u << (2 + in.U8() % 5)),
                static_cast<uint32_t>(kNetFeatureMac));
  for (int ops = 0; !in.empty() && ops < 256; ++ops) {
    const uint8_t op = in.U8() % 8;
    switch (op) {
      case 0:
      case 1:
      case 2:
        h.Tx(in);
        break;
      case 3:
        h.RxBuffers(in);
        break;
      case 4:
        h.Inject(in);
        break;
      case 5:
        h.now += std::chrono::milliseconds(in.U16());
        h.t->Kick(in.U8() % 2);  // the retry timer fired
        break;
      case 6:
        h.Reset(in);
        break;
      default:
        h.SaveRestore(in);
    }
    h.Check(op <= 2 || op == 5);
  }
  return 0;
}

}  // namespace forkd::vmm::fuzz

// virtio-vsock device protocol through the mmio transport with a test
// "driver" writing rings in a real (anonymous) GuestMemory: connection
// setup, data both ways, credit, RST for unknown connections, spoofed CIDs,
// config space, and the TRANSPORT_RESET event after a restore.
#include <cstring>
#include <map>
#include <string>

#include "forkd/vmm/devices/virtio/mmio_transport.h"
#include "forkd/vmm/devices/virtio/vsock.h"
#include "gtest/gtest.h"

namespace forkd::vmm::virtio {
namespace {

constexpr uint64_t kMemSize = 1 << 20;
constexpr uint16_t kSize = 8;
constexpr uint64_t kGuestCid = 42;
constexpr uint32_t kRxBufLen = 256;

struct Backend : VsockBackend {
  void OnConnected(uint32_t p) override { connected.push_back(p); }
  bool OnData(uint32_t p, std::span<const uint8_t> b) override {
    data[p].append(b.begin(), b.end());
    return accept_data;
  }
  void OnClosed(uint32_t p) override { closed.push_back(p); }
  std::vector<uint32_t> connected, closed;
  std::map<uint32_t, std::string> data;
  bool accept_data = true;
};

uint64_t QueueBase(int q) { return 0x1000 + 0x1000ULL * q; }  // desc; avail +0x400; used +0x800
uint64_t BufBase(int q, int i) { return 0x10000 + 0x4000ULL * q + 0x400ULL * i; }

class Driver {
 public:
  Driver(MmioTransport& t, const GuestMemory& m) : t_(t), m_(m) {
    W(reg::kStatus, kStatusAcknowledge | kStatusDriver);
    W(reg::kDriverFeaturesSel, 1);
    W(reg::kDriverFeatures, 1);
    W(reg::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
    for (int q = 0; q < 3; ++q) {
      W(reg::kQueueSel, q);
      W(reg::kQueueNum, kSize);
      W(reg::kQueueDescLow, static_cast<uint32_t>(QueueBase(q)));
      W(reg::kQueueDriverLow, static_cast<uint32_t>(QueueBase(q) + 0x400));
      W(reg::kQueueDeviceLow, static_cast<uint32_t>(QueueBase(q) + 0x800));
      W(reg::kQueueReady, 1);
    }
    W(reg::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  }
  uint32_t R(uint64_t off) {
    uint8_t b[4];
    t_.Read(off, b);
    uint32_t v;
    std::memcpy(&v, b, 4);
    return v;
  }
  void W(uint64_t off, uint32_t v) {
    uint8_t b[4];
    std::memcpy(b, &v, 4);
    t_.Write(off, b);
  }
  // Makes buffer `i` of queue `q` available (device-writable or not).
  void Post(int q, uint16_t i, uint32_t len, bool writable) {
    const uint64_t d = QueueBase(q) + 16ULL * i;
    Put<uint64_t>(d, BufBase(q, i));
    Put<uint32_t>(d + 8, len);
    Put<uint16_t>(d + 12, writable ? 2 : 0);
    Put<uint16_t>(d + 14, 0);
    const uint64_t avail = QueueBase(q) + 0x400;
    uint16_t idx = Get<uint16_t>(avail + 2);
    Put<uint16_t>(avail + 4 + 2ULL * (idx % kSize), i);
    Put<uint16_t>(avail + 2, static_cast<uint16_t>(idx + 1));
  }
  void FillRx() {
    for (uint16_t i = 0; i < kSize; ++i) Post(0, i, kRxBufLen, true);
    W(reg::kQueueNotify, 0);
  }
  // Sends one packet on tx (buffer 0) and notifies.
  void Send(VsockHeader h, const std::string& payload = "") {
    h.len = static_cast<uint32_t>(payload.size());
    ASSERT_TRUE(m_.WriteObj(BufBase(1, 0), h).ok());
    ASSERT_TRUE(m_.Write(BufBase(1, 0) + sizeof h,
                         {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()})
                    .ok());
    Post(1, 0, static_cast<uint32_t>(sizeof h + payload.size()), false);
    W(reg::kQueueNotify, 1);
  }
  // Packets the device put on rx since the last call (header + payload).
  std::vector<std::pair<VsockHeader, std::string>> Received() {
    std::vector<std::pair<VsockHeader, std::string>> out;
    const uint64_t used = QueueBase(0) + 0x800;
    while (seen_ != Get<uint16_t>(used + 2)) {
      const uint64_t e = used + 4 + 8ULL * (seen_ % kSize);
      const uint32_t id = Get<uint32_t>(e), len = Get<uint32_t>(e + 4);
      ++seen_;
      VsockHeader h;
      std::memcpy(&h, m_.host_base() + BufBase(0, static_cast<int>(id)), sizeof h);
      EXPECT_EQ(len, sizeof h + h.len);
      std::string payload(
          reinterpret_cast<const char*>(m_.host_base() + BufBase(0, static_cast<int>(id))) +
              sizeof h,
          h.len);
      out.emplace_back(h, payload);
      Post(0, static_cast<uint16_t>(id), kRxBufLen, true);  // recycle
    }
    return out;
  }
  template <typename T>
  void Put(uint64_t gpa, T v) {
    ASSERT_TRUE(m_.WriteObj(gpa, v).ok());
  }
  template <typename T>
  T Get(uint64_t gpa) {
    T v;
    std::memcpy(&v, m_.host_base() + gpa, sizeof v);
    return v;
  }

 private:
  MmioTransport& t_;
  const GuestMemory& m_;
  uint16_t seen_ = 0;
};

VsockHeader FromGuest(uint32_t src_port, uint32_t dst_port, uint16_t op) {
  VsockHeader h{};
  h.src_cid = kGuestCid;
  h.dst_cid = kVsockHostCid;
  h.src_port = src_port;
  h.dst_port = dst_port;
  h.type = kVsockTypeStream;
  h.op = op;
  h.buf_alloc = 1000;
  h.fwd_cnt = 0;
  return h;
}

struct Fixture {
  GuestMemory mem = *GuestMemory::Anonymous(kMemSize);
  Backend backend;
  Vsock* dev;
  std::unique_ptr<MmioTransport> t;
  std::unique_ptr<Driver> d;
  Fixture() {
    auto v = std::make_unique<Vsock>(kGuestCid, &backend);
    dev = v.get();
    t = std::make_unique<MmioTransport>("virtio-vsock", mem, std::move(v), nullptr);
    d = std::make_unique<Driver>(*t, mem);
    d->FillRx();
  }
};

TEST(Vsock, ConfigSpaceHoldsTheGuestCid) {
  Fixture f;
  EXPECT_EQ(f.d->R(reg::kDeviceId), 19u);
  EXPECT_EQ(f.d->R(reg::kConfig), kGuestCid);
  EXPECT_EQ(f.d->R(reg::kConfig + 4), 0u);
}

TEST(Vsock, HostConnectDataBothWaysAndCredit) {
  Fixture f;
  f.dev->Connect(1000, 5000);
  f.t->Kick(0);
  auto rx = f.d->Received();
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].first.op, kVsockOpRequest);
  EXPECT_EQ(rx[0].first.src_cid, kVsockHostCid);
  EXPECT_EQ(rx[0].first.dst_cid, kGuestCid);
  EXPECT_EQ(rx[0].first.src_port, 1000u);
  EXPECT_EQ(rx[0].first.dst_port, 5000u);
  EXPECT_EQ(f.dev->SendCredit(1000), 0u);  // not established yet

  f.d->Send(FromGuest(5000, 1000, kVsockOpResponse));
  EXPECT_EQ(f.backend.connected, std::vector<uint32_t>{1000});
  EXPECT_EQ(f.dev->SendCredit(1000), 1000u);  // the guest's buf_alloc

  f.d->Send(FromGuest(5000, 1000, kVsockOpRw), "ping");
  EXPECT_EQ(f.backend.data[1000], "ping");

  // Host -> guest, larger than one rx buffer: split across packets.
  std::string big(600, 'z');
  f.dev->Send(1000, {reinterpret_cast<const uint8_t*>(big.data()), big.size()});
  EXPECT_EQ(f.dev->SendCredit(1000), 400u);  // 600 in flight, guest has not forwarded any
  f.t->Kick(0);
  std::string got;
  for (auto& [h, p] : f.d->Received()) {
    EXPECT_EQ(h.op, kVsockOpRw);
    EXPECT_EQ(h.fwd_cnt, 4u);  // the device forwarded the guest's 4 bytes
    got += p;
  }
  EXPECT_EQ(got, big);
  // The guest reports it consumed everything: full credit again.
  VsockHeader credit = FromGuest(5000, 1000, kVsockOpCreditUpdate);
  credit.fwd_cnt = 600;
  f.d->Send(credit);
  EXPECT_EQ(f.dev->SendCredit(1000), 1000u);

  // A credit request is answered with our counters.
  f.d->Send(FromGuest(5000, 1000, kVsockOpCreditRequest));
  auto upd = f.d->Received();
  ASSERT_EQ(upd.size(), 1u);
  EXPECT_EQ(upd[0].first.op, kVsockOpCreditUpdate);
  EXPECT_EQ(upd[0].first.buf_alloc, Vsock::kHostBufAlloc);

  // The guest shuts down: the host side is closed and the guest gets RST.
  f.d->Send(FromGuest(5000, 1000, kVsockOpShutdown));
  EXPECT_EQ(f.backend.closed, std::vector<uint32_t>{1000});
  auto rst = f.d->Received();
  ASSERT_EQ(rst.size(), 1u);
  EXPECT_EQ(rst[0].first.op, kVsockOpRst);
  EXPECT_EQ(f.dev->SendCredit(1000), 0u);
}

TEST(Vsock, UnknownConnectionsGetRstAndSpoofedCidsAreDropped) {
  Fixture f;
  f.d->Send(FromGuest(7, 9999, kVsockOpRw), "who");
  auto rx = f.d->Received();
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].first.op, kVsockOpRst);
  EXPECT_EQ(rx[0].first.src_port, 9999u);
  EXPECT_EQ(rx[0].first.dst_port, 7u);
  EXPECT_TRUE(f.backend.data.empty());
  // A guest-initiated connect is not supported: reset.
  f.d->Send(FromGuest(8, 22, kVsockOpRequest));
  rx = f.d->Received();
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].first.op, kVsockOpRst);
  // An RST to an unknown connection is not answered (no RST ping-pong).
  f.d->Send(FromGuest(8, 22, kVsockOpRst));
  EXPECT_TRUE(f.d->Received().empty());

  // Established connection, but the packet claims another source CID.
  f.dev->Connect(1000, 5000);
  f.t->Kick(0);
  f.d->Received();
  f.d->Send(FromGuest(5000, 1000, kVsockOpResponse));
  VsockHeader spoof = FromGuest(5000, 1000, kVsockOpRw);
  spoof.src_cid = kGuestCid + 1;
  f.d->Send(spoof, "evil");
  EXPECT_TRUE(f.backend.data.empty());
  EXPECT_TRUE(f.d->Received().empty());
}

TEST(Vsock, GuestCannotGrowTheReplyQueueWithoutPostingRxBuffers) {
  GuestMemory mem = *GuestMemory::Anonymous(kMemSize);
  Backend backend;
  auto v = std::make_unique<Vsock>(kGuestCid, &backend);
  MmioTransport t("virtio-vsock", mem, std::move(v), nullptr);
  Driver d(t, mem);  // no rx buffers posted
  for (int i = 0; i < 1000; ++i) d.Send(FromGuest(7, 9999, kVsockOpRw), "x");
  d.FillRx();
  size_t rsts = 0;
  for (int round = 0; round < 100; ++round) {
    auto rx = d.Received();  // recycles the buffers
    if (rx.empty()) break;
    rsts += rx.size();
    d.W(reg::kQueueNotify, 0);
  }
  EXPECT_EQ(rsts, Vsock::kMaxQueuedControl);
}

TEST(Vsock, HostSideThatCannotTakeDataResetsTheConnection) {
  Fixture f;
  f.dev->Connect(1000, 5000);
  f.t->Kick(0);
  f.d->Received();
  f.d->Send(FromGuest(5000, 1000, kVsockOpResponse));
  f.backend.accept_data = false;
  f.d->Send(FromGuest(5000, 1000, kVsockOpRw), "lost");
  EXPECT_EQ(f.backend.closed, std::vector<uint32_t>{1000});
  auto rx = f.d->Received();
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].first.op, kVsockOpRst);
}

TEST(Vsock, OversizedTxPacketBreaksTheDevice) {
  Fixture f;
  // A tx chain of one 128 KiB device-readable buffer: over the advertised
  // payload limit, so the queue is refused instead of buffered.
  f.d->Post(1, 0, 128 * 1024, false);
  f.d->W(reg::kQueueNotify, 1);
  EXPECT_NE(f.d->R(reg::kStatus) & kStatusNeedsReset, 0u);
}

TEST(Vsock, RestoreQueuesATransportResetEvent) {
  Fixture f;
  f.dev->Connect(1000, 5000);
  f.t->Kick(0);
  f.d->Received();
  f.d->Send(FromGuest(5000, 1000, kVsockOpResponse));
  DeviceState saved = f.t->SaveDevice();

  Backend backend2;
  auto v = std::make_unique<Vsock>(3, &backend2);  // CID comes from the state
  Vsock* dev2 = v.get();
  MmioTransport t2("virtio-vsock", f.mem, std::move(v), nullptr);
  ASSERT_TRUE(t2.RestoreDevice(saved).ok());
  uint8_t cid[4];
  t2.Read(reg::kConfig, cid);
  uint32_t c;
  std::memcpy(&c, cid, 4);
  EXPECT_EQ(c, kGuestCid);
  EXPECT_EQ(dev2->SendCredit(1000), 0u);  // connections do not survive

  // No event buffer posted yet: the event waits; once one is, it arrives.
  t2.Kick(2);
  const uint64_t used = QueueBase(2) + 0x800;
  EXPECT_EQ(f.d->Get<uint16_t>(used + 2), 0);
  f.d->Post(2, 0, 8, true);
  t2.Kick(2);
  ASSERT_EQ(f.d->Get<uint16_t>(used + 2), 1);
  EXPECT_EQ(f.d->Get<uint32_t>(used + 8), 4u);
  EXPECT_EQ(f.d->Get<uint32_t>(BufBase(2, 0)), kVsockEventTransportReset);
  // Only once.
  f.d->Post(2, 1, 8, true);
  t2.Kick(2);
  EXPECT_EQ(f.d->Get<uint16_t>(used + 2), 1);
}

}  // namespace
}  // namespace forkd::vmm::virtio

// virtio-vsock device protocol through the mmio transport with a test
// "driver" writing rings in a real (anonymous) GuestMemory: connection
// setup both ways, data both ways, credit (buffering, overrun, updates,
// CREDIT_REQUEST), SHUTDOWN flags and the close sequence, the close and
// connect timeouts (on a fake clock; the muxer's side on real unix
// sockets), RST for unknown
// connections, spoofed CIDs, config space, and the TRANSPORT_RESET event
// after a restore, with host connects held until the guest acknowledged it.
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <map>
#include <optional>
#include <string>
#include <thread>

#include "common/unique_fd.h"
#include "forkd/vmm/devices/virtio/fake_driver.h"
#include "forkd/vmm/devices/virtio/mmio_transport.h"
#include "forkd/vmm/devices/virtio/vsock.h"
#include "forkd/vmm/devices/virtio/vsock_muxer.h"
#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace forkd::vmm::virtio {
namespace {

constexpr uint64_t kMemSize = 1 << 20;
constexpr uint16_t kSize = kFakeQueueSize;
constexpr uint64_t kGuestCid = 42;
constexpr uint32_t kRxBufLen = 256;

struct Backend : VsockBackend {
  void OnConnected(VsockConnKey k) override {
    connected.push_back(k);
    log.emplace_back('C', k);
  }
  void OnGuestConnect(VsockConnKey k) override {
    guest_connects.push_back(k);
    log.emplace_back('G', k);
  }
  void OnActivity() override { ++activity; }
  void OnClosed(VsockConnKey k) override {
    closed.push_back(k);
    log.emplace_back('X', k);
  }
  std::vector<VsockConnKey> connected, guest_connects, closed;
  // Every event in the order the backend heard it: C(onnected),
  // G(uest connect), X (closed).
  std::vector<std::pair<char, VsockConnKey>> log;
  int activity = 0;
};

// What the host socket takes per DrainToHost call: everything by default.
std::string Drain(Vsock& dev, VsockConnKey k, Vsock::DrainResult* result = nullptr,
                  size_t take = SIZE_MAX) {
  std::string got;
  auto r = dev.DrainToHost(k, [&](std::span<const uint8_t> b) -> ssize_t {
    const size_t n = std::min(b.size(), take - got.size());
    got.append(b.begin(), b.begin() + static_cast<ptrdiff_t>(n));
    return static_cast<ssize_t>(n);
  });
  if (result != nullptr) *result = r;
  return got;
}

uint64_t BufBase(int q, int i) { return 0x10000 + 0x4000ULL * q + 0x400ULL * i; }

class Driver : public FakeDriver {
 public:
  Driver(MmioTransport& t, const GuestMemory& m) : FakeDriver(t, m, 3, 0, BufBase) {}
  // Makes buffer `i` of queue `q` available (device-writable or not).
  void Post(int q, uint16_t i, uint32_t len, bool writable) {
    FakeDriver::Post(q, i, {{len, writable}});
  }
  void FillRx() {
    for (uint16_t i = 0; i < kSize; ++i) Post(0, i, kRxBufLen, true);
    W(reg::kQueueNotify, 0);
  }
  // Sends one packet on tx (buffer 0) and notifies (through `via`, e.g. a
  // restored transport over the same rings, or this driver's own).
  void Send(VsockHeader h, const std::string& payload = "", MmioTransport* via = nullptr) {
    h.len = static_cast<uint32_t>(payload.size());
    Put(BufBase(1, 0), h);
    Fill(BufBase(1, 0) + sizeof h, payload);
    Post(1, 0, static_cast<uint32_t>(sizeof h + payload.size()), false);
    if (via == nullptr) {
      W(reg::kQueueNotify, 1);
    } else {
      const uint8_t tx[4] = {1, 0, 0, 0};
      via->Write(reg::kQueueNotify, tx);
    }
  }
  // Packets the device put on rx since the last call (header + payload).
  std::vector<std::pair<VsockHeader, std::string>> Received() {
    std::vector<std::pair<VsockHeader, std::string>> out;
    for (const auto& [id, len] : Used(0)) {
      const uint64_t buf = BufBase(0, static_cast<int>(id));
      const auto h = Get<VsockHeader>(buf);
      EXPECT_EQ(len, sizeof h + h.len);
      out.emplace_back(h, Bytes(buf + sizeof h, h.len));
      Post(0, static_cast<uint16_t>(id), kRxBufLen, true);  // recycle
    }
    return out;
  }
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
  Vsock::TimePoint now{};  // the device's clock: tests move it by hand
  Vsock* dev;
  std::unique_ptr<MmioTransport> t;
  std::unique_ptr<Driver> d;
  Fixture() {
    auto v = std::make_unique<Vsock>(kGuestCid, &backend, [this] { return now; });
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

constexpr VsockConnKey kHostConn{1000, 5000};  // host port 1000 -> guest port 5000

// A host-initiated connection the guest accepted.
void Establish(Fixture& f, VsockConnKey k = kHostConn) {
  f.dev->Connect(k);
  f.t->Kick(0);
  auto rx = f.d->Received();
  ASSERT_EQ(rx.size(), 1u);
  ASSERT_EQ(rx[0].first.op, kVsockOpRequest);
  f.d->Send(FromGuest(k.guest_port, k.local_port, kVsockOpResponse));
}

std::vector<uint16_t> Ops(const std::vector<std::pair<VsockHeader, std::string>>& rx) {
  std::vector<uint16_t> ops;
  for (const auto& [h, p] : rx) ops.push_back(h.op);
  return ops;
}

TEST(Vsock, HostConnectDataBothWaysAndCredit) {
  Fixture f;
  f.dev->Connect(kHostConn);
  f.t->Kick(0);
  auto rx = f.d->Received();
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].first.op, kVsockOpRequest);
  EXPECT_EQ(rx[0].first.src_cid, kVsockHostCid);
  EXPECT_EQ(rx[0].first.dst_cid, kGuestCid);
  EXPECT_EQ(rx[0].first.src_port, 1000u);
  EXPECT_EQ(rx[0].first.dst_port, 5000u);
  EXPECT_EQ(f.dev->SendCredit(kHostConn), 0u);  // not established yet

  f.d->Send(FromGuest(5000, 1000, kVsockOpResponse));
  EXPECT_EQ(f.backend.connected, std::vector<VsockConnKey>{kHostConn});
  EXPECT_EQ(f.dev->SendCredit(kHostConn), 1000u);  // the guest's buf_alloc

  // Guest bytes wait in the device until the host socket takes them.
  f.d->Send(FromGuest(5000, 1000, kVsockOpRw), "ping");
  EXPECT_TRUE(f.dev->HasToHost(kHostConn));
  EXPECT_EQ(Drain(*f.dev, kHostConn), "ping");
  EXPECT_FALSE(f.dev->HasToHost(kHostConn));

  // Host -> guest, larger than one rx buffer: split across packets.
  std::string big(600, 'z');
  f.dev->Send(kHostConn, {reinterpret_cast<const uint8_t*>(big.data()), big.size()});
  EXPECT_EQ(f.dev->SendCredit(kHostConn), 400u);  // 600 in flight, guest forwarded none
  f.t->Kick(0);
  std::string got;
  for (auto& [h, p] : f.d->Received()) {
    EXPECT_EQ(h.op, kVsockOpRw);
    EXPECT_EQ(h.fwd_cnt, 4u);  // the host socket took the guest's 4 bytes
    EXPECT_EQ(h.buf_alloc, Vsock::kHostBufAlloc);
    got += p;
  }
  EXPECT_EQ(got, big);
  // The guest reports it consumed everything: full credit again.
  VsockHeader credit = FromGuest(5000, 1000, kVsockOpCreditUpdate);
  credit.fwd_cnt = 600;
  f.d->Send(credit);
  EXPECT_EQ(f.dev->SendCredit(kHostConn), 1000u);
}

TEST(Vsock, CreditRequestIsAnsweredWithTheBytesActuallyWritten) {
  Fixture f;
  Establish(f);
  f.d->Send(FromGuest(5000, 1000, kVsockOpRw), "0123456789");
  // The host socket takes 3 bytes only: fwd_cnt counts those, no more.
  EXPECT_EQ(Drain(*f.dev, kHostConn, nullptr, 3), "012");
  f.d->Send(FromGuest(5000, 1000, kVsockOpCreditRequest));
  auto upd = f.d->Received();
  ASSERT_EQ(upd.size(), 1u);
  EXPECT_EQ(upd[0].first.op, kVsockOpCreditUpdate);
  EXPECT_EQ(upd[0].first.buf_alloc, Vsock::kHostBufAlloc);
  EXPECT_EQ(upd[0].first.fwd_cnt, 3u);
  EXPECT_EQ(upd[0].first.src_port, 1000u);
  EXPECT_EQ(upd[0].first.dst_port, 5000u);
  EXPECT_EQ(Drain(*f.dev, kHostConn), "3456789");
}

TEST(Vsock, SlowHostBuffersUpToBufAllocThenOverrunResets) {
  Fixture f;
  Establish(f);
  // 16 000-byte packets the host socket does not take (it is full): the
  // guest may send kHostBufAlloc bytes, one more packet is an overrun.
  const std::string chunk(16000, 'c');
  const size_t fit = Vsock::kHostBufAlloc / chunk.size();
  for (size_t i = 0; i < fit; ++i) f.d->Send(FromGuest(5000, 1000, kVsockOpRw), chunk);
  EXPECT_TRUE(f.backend.closed.empty());
  EXPECT_TRUE(f.d->Received().empty());
  EXPECT_EQ(Drain(*f.dev, kHostConn, nullptr, 0), "");  // would block
  // Draining most of it makes the device tell the guest (it had used more
  // than half of its credit), once.
  const std::string out = Drain(*f.dev, kHostConn, nullptr, (fit - 1) * chunk.size());
  EXPECT_EQ(out.size(), (fit - 1) * chunk.size());
  f.t->Kick(0);
  auto rx = f.d->Received();
  ASSERT_EQ(Ops(rx), std::vector<uint16_t>{kVsockOpCreditUpdate});
  EXPECT_EQ(rx[0].first.fwd_cnt, out.size());
  // Fill up again to exactly the credit, then one byte over it.
  for (size_t i = 0; i < fit - 1; ++i) f.d->Send(FromGuest(5000, 1000, kVsockOpRw), chunk);
  const size_t room = Vsock::kHostBufAlloc - fit * chunk.size();
  f.d->Send(FromGuest(5000, 1000, kVsockOpRw), std::string(room, 'r'));
  EXPECT_TRUE(f.backend.closed.empty());
  f.d->Send(FromGuest(5000, 1000, kVsockOpRw), "!");
  EXPECT_EQ(f.backend.closed, std::vector<VsockConnKey>{kHostConn});
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRst});
  EXPECT_FALSE(f.dev->HasToHost(kHostConn));
}

TEST(Vsock, HostSocketErrorResetsTheConnection) {
  Fixture f;
  Establish(f);
  f.d->Send(FromGuest(5000, 1000, kVsockOpRw), "lost");
  auto r = f.dev->DrainToHost(kHostConn, [](std::span<const uint8_t>) -> ssize_t { return -1; });
  EXPECT_TRUE(r.closed);
  f.t->Kick(0);
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRst});
  EXPECT_EQ(f.dev->SendCredit(kHostConn), 0u);
}

TEST(Vsock, GuestShutdownSendWritesPendingBytesThenShutsTheHostSocket) {
  Fixture f;
  Establish(f);
  f.d->Send(FromGuest(5000, 1000, kVsockOpRw), "last words");
  VsockHeader shut = FromGuest(5000, 1000, kVsockOpShutdown);
  shut.flags = kVsockShutdownSend;
  f.d->Send(shut);
  EXPECT_TRUE(f.backend.closed.empty());
  // Bytes after SHUTDOWN(SEND) break the protocol... but first the pending
  // bytes go out, and only then the host socket's write side is shut.
  Vsock::DrainResult r;
  EXPECT_EQ(Drain(*f.dev, kHostConn, &r, 4), "last");
  EXPECT_FALSE(r.shut_write);
  EXPECT_EQ(Drain(*f.dev, kHostConn, &r), " words");
  EXPECT_TRUE(r.shut_write);
  EXPECT_FALSE(r.closed);
  EXPECT_FALSE(f.dev->HasToHost(kHostConn));
  // The host still sends to the guest (half-close).
  EXPECT_EQ(f.dev->SendCredit(kHostConn), 1000u);
  f.dev->Send(kHostConn, {reinterpret_cast<const uint8_t*>("reply"), 5});
  f.t->Kick(0);
  auto rx = f.d->Received();
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].second, "reply");
  // Host EOF completes the close: SHUTDOWN(SEND) then RST to the guest.
  EXPECT_TRUE(f.dev->HostEof(kHostConn));
  f.t->Kick(0);
  rx = f.d->Received();
  ASSERT_EQ(Ops(rx), (std::vector<uint16_t>{kVsockOpShutdown, kVsockOpRst}));
  EXPECT_EQ(rx[0].first.flags, kVsockShutdownSend);
  EXPECT_EQ(f.dev->SendCredit(kHostConn), 0u);
}

TEST(Vsock, HostEofSendsShutdownAndTheGuestStillSends) {
  Fixture f;
  Establish(f);
  EXPECT_FALSE(f.dev->HostEof(kHostConn));
  f.t->Kick(0);
  auto rx = f.d->Received();
  ASSERT_EQ(Ops(rx), std::vector<uint16_t>{kVsockOpShutdown});
  EXPECT_EQ(rx[0].first.flags, kVsockShutdownSend);
  EXPECT_EQ(f.dev->SendCredit(kHostConn), 0u);  // nothing more from the host
  // The guest's remaining bytes still reach the host.
  f.d->Send(FromGuest(5000, 1000, kVsockOpRw), "tail");
  EXPECT_TRUE(f.backend.closed.empty());
  // The guest is done too (full shutdown): RST once its bytes are out.
  VsockHeader shut = FromGuest(5000, 1000, kVsockOpShutdown);
  shut.flags = kVsockShutdownSend | kVsockShutdownRcv;
  f.d->Send(shut);
  EXPECT_TRUE(f.d->Received().empty());
  Vsock::DrainResult r;
  EXPECT_EQ(Drain(*f.dev, kHostConn, &r), "tail");
  EXPECT_TRUE(r.closed);
  f.t->Kick(0);
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRst});
}

TEST(Vsock, FullShutdownIsAnsweredWithRst) {
  Fixture f;
  Establish(f);
  VsockHeader shut = FromGuest(5000, 1000, kVsockOpShutdown);
  shut.flags = kVsockShutdownRcv;
  f.d->Send(shut);
  EXPECT_EQ(f.dev->SendCredit(kHostConn), 0u);  // the guest takes no more
  EXPECT_TRUE(f.d->Received().empty());
  EXPECT_TRUE(f.backend.closed.empty());
  shut.flags = kVsockShutdownSend;  // the flags accumulate
  f.d->Send(shut);
  EXPECT_EQ(f.backend.closed, std::vector<VsockConnKey>{kHostConn});
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRst});
  // A SHUTDOWN without flags means both.
  Establish(f, {1001, 5000});
  f.d->Send(FromGuest(5000, 1001, kVsockOpShutdown));
  EXPECT_EQ(f.backend.closed.back(), (VsockConnKey{1001, 5000}));
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRst});
}

// The host closed its socket both ways after EOF and the guest never
// answers the SHUTDOWN(RCV|SEND): after kCloseTimeout the device gives up,
// RST to the guest, and the connection is forgotten.
TEST(Vsock, HostCloseTheGuestNeverAnswersTimesOut) {
  Fixture f;
  Establish(f);
  EXPECT_EQ(f.dev->TimeToNextClose(), std::nullopt);
  EXPECT_FALSE(f.dev->HostEof(kHostConn));
  // Half-closed by the host only: the guest may keep sending, no timeout.
  EXPECT_EQ(f.dev->TimeToNextClose(), std::nullopt);
  f.now += std::chrono::hours(1);
  EXPECT_TRUE(f.dev->ExpireCloses().empty());
  f.dev->HostGone(kHostConn);
  f.dev->HostGone(kHostConn);  // once
  f.t->Kick(0);
  auto rx = f.d->Received();
  ASSERT_EQ(Ops(rx), (std::vector<uint16_t>{kVsockOpShutdown, kVsockOpShutdown}));
  EXPECT_EQ(rx[0].first.flags, kVsockShutdownSend);
  EXPECT_EQ(rx[1].first.flags, kVsockShutdownRcv | kVsockShutdownSend);
  EXPECT_EQ(f.dev->TimeToNextClose(), Vsock::kCloseTimeout);
  // Just before the deadline nothing happens; guest chatter that is no
  // progress (credit updates, repeated SHUTDOWN(RCV)) does not push it out.
  f.now += Vsock::kCloseTimeout - std::chrono::milliseconds(1);
  f.d->Send(FromGuest(5000, 1000, kVsockOpCreditUpdate));
  VsockHeader shut = FromGuest(5000, 1000, kVsockOpShutdown);
  shut.flags = kVsockShutdownRcv;
  f.d->Send(shut);
  EXPECT_TRUE(f.dev->ExpireCloses().empty());
  EXPECT_EQ(f.dev->TimeToNextClose(), std::chrono::milliseconds(1));
  f.now += std::chrono::milliseconds(1);
  EXPECT_EQ(f.dev->TimeToNextClose(), std::chrono::nanoseconds(0));
  EXPECT_EQ(f.dev->ExpireCloses(), std::vector<VsockConnKey>{kHostConn});
  f.t->Kick(0);
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRst});
  EXPECT_EQ(f.dev->TimeToNextClose(), std::nullopt);
  EXPECT_TRUE(f.dev->ExpireCloses().empty());
  EXPECT_FALSE(f.dev->HasToHost(kHostConn));
  // Late guest packets on it are answered with RST like any unknown one.
  f.d->Send(FromGuest(5000, 1000, kVsockOpRw), "late");
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRst});
}

// A guest that answers in time finishes the close itself: no timeout left.
TEST(Vsock, HostCloseTheGuestAnswersBeforeTheTimeout) {
  Fixture f;
  Establish(f);
  EXPECT_FALSE(f.dev->HostEof(kHostConn));
  f.dev->HostGone(kHostConn);
  f.t->Kick(0);
  f.d->Received();
  f.now += Vsock::kCloseTimeout / 2;
  VsockHeader shut = FromGuest(5000, 1000, kVsockOpShutdown);
  shut.flags = kVsockShutdownRcv | kVsockShutdownSend;
  f.d->Send(shut);
  EXPECT_EQ(f.backend.closed, std::vector<VsockConnKey>{kHostConn});
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRst});
  EXPECT_EQ(f.dev->TimeToNextClose(), std::nullopt);
  f.now += Vsock::kCloseTimeout;
  EXPECT_TRUE(f.dev->ExpireCloses().empty());
}

// The host closed with bytes the guest has no credit for yet: the guest
// still gets them as it reads (each delivery restarts the timeout), and
// only a guest that stops reading for kCloseTimeout is reset.
TEST(Vsock, HostGoneWithUnreadBytesWaitsForAReadingGuest) {
  Fixture f;
  Establish(f);
  f.dev->Send(kHostConn, {reinterpret_cast<const uint8_t*>(std::string(1000, 'a').data()), 1000});
  EXPECT_EQ(f.dev->SendCredit(kHostConn), 0u);
  f.dev->HostGone(kHostConn);  // not at EOF: SHUTDOWN(RCV) only
  f.t->Kick(0);
  auto rx = f.d->Received();
  ASSERT_FALSE(rx.empty());
  EXPECT_EQ(rx.back().first.op, kVsockOpShutdown);
  EXPECT_EQ(rx.back().first.flags, kVsockShutdownRcv);
  uint32_t sent = 1000;
  for (int round = 0; round < 3; ++round) {
    f.now += Vsock::kCloseTimeout - std::chrono::milliseconds(1);
    VsockHeader credit = FromGuest(5000, 1000, kVsockOpCreditUpdate);
    credit.fwd_cnt = sent;  // the guest read everything
    f.d->Send(credit);
    // As much as the guest's posted rx buffers take (at most its buf_alloc).
    const uint32_t more = f.dev->SendCredit(kHostConn);
    ASSERT_GT(more, 0u);
    ASSERT_LE(more, 1000u);
    f.dev->Send(kHostConn, {reinterpret_cast<const uint8_t*>(std::string(more, 'b').data()), more});
    sent += more;
    f.d->Received();  // the guest reads (and re-posts its buffers)
    EXPECT_TRUE(f.dev->ExpireCloses().empty()) << "round " << round;
    EXPECT_EQ(f.dev->TimeToNextClose(), Vsock::kCloseTimeout);
  }
  f.now += Vsock::kCloseTimeout;
  EXPECT_EQ(f.dev->ExpireCloses(), std::vector<VsockConnKey>{kHostConn});
}

// The guest shut down both ways while its bytes still wait for a host
// socket that does not take them: reset after kCloseTimeout without
// progress, each drained byte restarting it.
TEST(Vsock, GuestFullShutdownWithUndrainedBytesTimesOut) {
  Fixture f;
  Establish(f);
  f.d->Send(FromGuest(5000, 1000, kVsockOpRw), "0123456789");
  VsockHeader shut = FromGuest(5000, 1000, kVsockOpShutdown);
  shut.flags = kVsockShutdownRcv | kVsockShutdownSend;
  f.d->Send(shut);
  EXPECT_TRUE(f.backend.closed.empty());
  EXPECT_EQ(f.dev->TimeToNextClose(), Vsock::kCloseTimeout);
  // A repeated SHUTDOWN is no progress.
  f.now += Vsock::kCloseTimeout / 2;
  f.d->Send(shut);
  EXPECT_EQ(f.dev->TimeToNextClose(), Vsock::kCloseTimeout / 2);
  // The host socket takes 3 bytes: progress.
  EXPECT_EQ(Drain(*f.dev, kHostConn, nullptr, 3), "012");
  EXPECT_EQ(f.dev->TimeToNextClose(), Vsock::kCloseTimeout);
  EXPECT_EQ(Drain(*f.dev, kHostConn, nullptr, 0), "");  // would block: not progress
  f.now += Vsock::kCloseTimeout;
  EXPECT_EQ(f.dev->ExpireCloses(), std::vector<VsockConnKey>{kHostConn});
  f.t->Kick(0);
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRst});
  EXPECT_FALSE(f.dev->HasToHost(kHostConn));
}

// What is not a close is never timed out: a guest that stops reading
// (credit exhausted), a guest half-close the host keeps open, a host EOF.
TEST(Vsock, StalledOrHalfClosedConnectionsAreNotTimedOut) {
  Fixture f;
  const VsockConnKey half_closed{1001, 5000}, host_eof{1002, 5000};
  Establish(f);
  Establish(f, half_closed);
  Establish(f, host_eof);
  // Stalled: the guest reads nothing, the host has no credit left.
  f.dev->Send(kHostConn, {reinterpret_cast<const uint8_t*>(std::string(1000, 'a').data()), 1000});
  EXPECT_EQ(f.dev->SendCredit(kHostConn), 0u);
  VsockHeader shut = FromGuest(5000, 1001, kVsockOpShutdown);
  shut.flags = kVsockShutdownSend;
  f.d->Send(shut);
  EXPECT_FALSE(f.dev->HostEof(host_eof));
  f.now += std::chrono::hours(24);
  EXPECT_EQ(f.dev->TimeToNextClose(), std::nullopt);
  EXPECT_TRUE(f.dev->ExpireCloses().empty());
  EXPECT_TRUE(f.backend.closed.empty());
  EXPECT_GT(f.dev->SendCredit(half_closed), 0u);
}

// A host connection the guest never answers (no RESPONSE, no RST) is given
// up after kConnectTimeout: RST to the guest, the host side is told (the
// key comes back from ExpireCloses), and a late RESPONSE is an unknown
// connection.
TEST(Vsock, UnansweredHostConnectTimesOut) {
  Fixture f;
  EXPECT_EQ(f.dev->TimeToNextClose(), std::nullopt);
  ASSERT_TRUE(f.dev->Connect(kHostConn));
  f.t->Kick(0);
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRequest});
  EXPECT_EQ(f.dev->TimeToNextClose(), Vsock::kConnectTimeout);
  f.now += Vsock::kConnectTimeout - std::chrono::milliseconds(1);
  // Guest chatter that is no answer does not count (credit request on the
  // pending connection: answered, but the REQUEST still is not).
  f.d->Send(FromGuest(5000, 1000, kVsockOpCreditRequest));
  EXPECT_TRUE(f.dev->ExpireCloses().empty());
  EXPECT_EQ(f.dev->TimeToNextClose(), std::chrono::milliseconds(1));
  f.now += std::chrono::milliseconds(1);
  EXPECT_EQ(f.dev->ExpireCloses(), std::vector<VsockConnKey>{kHostConn});
  EXPECT_TRUE(f.backend.closed.empty());  // the caller closes its socket
  f.t->Kick(0);
  auto rx = f.d->Received();
  ASSERT_EQ(Ops(rx), (std::vector<uint16_t>{kVsockOpCreditUpdate, kVsockOpRst}));
  EXPECT_EQ(rx[1].first.src_port, 1000u);
  EXPECT_EQ(rx[1].first.dst_port, 5000u);
  EXPECT_EQ(f.dev->TimeToNextClose(), std::nullopt);
  EXPECT_TRUE(f.dev->ExpireCloses().empty());
  // The late RESPONSE: RST, and the backend never hears of a connection.
  f.d->Send(FromGuest(5000, 1000, kVsockOpResponse));
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRst});
  EXPECT_TRUE(f.backend.connected.empty());
  EXPECT_EQ(f.dev->SendCredit(kHostConn), 0u);
  // The pair is free again.
  EXPECT_TRUE(f.dev->Connect(kHostConn));
}

// A RESPONSE just before the deadline establishes the connection, and an
// established connection has no connect deadline left.
TEST(Vsock, HostConnectAnsweredJustBeforeTheTimeout) {
  Fixture f;
  ASSERT_TRUE(f.dev->Connect(kHostConn));
  f.t->Kick(0);
  f.d->Received();
  f.now += Vsock::kConnectTimeout - std::chrono::milliseconds(1);
  EXPECT_TRUE(f.dev->ExpireCloses().empty());
  f.d->Send(FromGuest(5000, 1000, kVsockOpResponse));
  EXPECT_EQ(f.backend.connected, std::vector<VsockConnKey>{kHostConn});
  EXPECT_EQ(f.dev->TimeToNextClose(), std::nullopt);
  f.now += std::chrono::hours(1);
  EXPECT_TRUE(f.dev->ExpireCloses().empty());
  EXPECT_EQ(f.dev->SendCredit(kHostConn), 1000u);
  f.d->Send(FromGuest(5000, 1000, kVsockOpRw), "still here");
  EXPECT_EQ(Drain(*f.dev, kHostConn), "still here");
  f.t->Kick(0);
  EXPECT_TRUE(f.d->Received().empty());  // no RST
}

// Only the pending connection times out; one established beside it and a
// guest RST answer (which forgets the connection at once) are unaffected.
TEST(Vsock, ConnectTimeoutIsPerConnection) {
  Fixture f;
  const VsockConnKey refused{1001, 5001}, pending{1002, 5002};
  Establish(f);
  ASSERT_TRUE(f.dev->Connect(refused));
  ASSERT_TRUE(f.dev->Connect(pending));
  f.t->Kick(0);
  f.d->Received();
  f.d->Send(FromGuest(5001, 1001, kVsockOpRst));
  EXPECT_EQ(f.backend.closed, std::vector<VsockConnKey>{refused});
  f.now += Vsock::kConnectTimeout;
  EXPECT_EQ(f.dev->ExpireCloses(), std::vector<VsockConnKey>{pending});
  EXPECT_EQ(f.dev->SendCredit(kHostConn), 1000u);
  EXPECT_EQ(f.dev->TimeToNextClose(), std::nullopt);
}

// The host closing a connection the guest has not answered (the muxer's
// Close on POLLHUP) frees it at once: RST, no deadline left.
TEST(Vsock, HostClosingAPendingConnectFreesIt) {
  Fixture f;
  ASSERT_TRUE(f.dev->Connect(kHostConn));
  f.t->Kick(0);
  f.d->Received();
  f.dev->Close(kHostConn);
  f.t->Kick(0);
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRst});
  EXPECT_EQ(f.dev->TimeToNextClose(), std::nullopt);
  f.d->Send(FromGuest(5000, 1000, kVsockOpResponse));
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRst});
  EXPECT_TRUE(f.backend.connected.empty());
  EXPECT_TRUE(f.dev->Connect(kHostConn));
}

// The muxer's side, on real unix sockets: its thread reads the fake clock
// (so an atomic) and the test kicks rx itself (the muxer's kick is a no-op,
// so only the test thread touches the rings). Waits are hang guards.
constexpr auto kHangGuard = std::chrono::seconds(20);

struct MuxerFixture {
  forkd::testing::TempDir dir{"vsock_muxer_test"};
  std::string path = (dir.path() / "v.sock").string();
  GuestMemory mem = *GuestMemory::Anonymous(kMemSize);
  std::atomic<int64_t> now_ns{0};
  Vsock* dev = nullptr;
  std::unique_ptr<MmioTransport> t;
  std::unique_ptr<Driver> d;
  std::unique_ptr<VsockMuxer> mux;  // last: its thread stops before the device goes
  MuxerFixture() {
    auto m = VsockMuxer::Listen(path);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return;
    mux = std::move(*m);
    auto v = std::make_unique<Vsock>(kGuestCid, mux.get(), [this] {
      return Vsock::TimePoint(std::chrono::nanoseconds(now_ns.load()));
    });
    dev = v.get();
    t = std::make_unique<MmioTransport>("virtio-vsock", mem, std::move(v), nullptr);
    d = std::make_unique<Driver>(*t, mem);
    d->FillRx();
    mux->Start(dev, [] {});
  }
  ~MuxerFixture() { mux.reset(); }
  // A host process's connection, CONNECT line written.
  UniqueFd HostConnect(uint32_t guest_port) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    EXPECT_TRUE(fd);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0)
        << std::strerror(errno);
    const std::string line = "CONNECT " + std::to_string(guest_port) + "\n";
    EXPECT_EQ(::write(fd.get(), line.data(), line.size()), static_cast<ssize_t>(line.size()));
    return fd;
  }
  // Kicks rx until the device has delivered a packet of `op` (hang-guarded).
  std::optional<VsockHeader> AwaitGuestPacket(uint16_t op) {
    const auto give_up = std::chrono::steady_clock::now() + kHangGuard;
    while (std::chrono::steady_clock::now() < give_up) {
      t->Kick(0);
      for (const auto& [h, p] : d->Received()) {
        if (h.op == op) return h;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return std::nullopt;
  }
};

// What the host reads from its socket until EOF (hang-guarded).
std::optional<std::string> ReadToEof(int fd) {
  std::string got;
  const auto give_up = std::chrono::steady_clock::now() + kHangGuard;
  while (std::chrono::steady_clock::now() < give_up) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[64];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return got;
    got.append(buf, static_cast<size_t>(n));
  }
  return std::nullopt;
}

// Regression: the muxer thread used to return silently when poll failed,
// leaving every vsock connection dead with the VM running on.
TEST(VsockMuxer, ReportsAFailedPollInsteadOfDyingSilently) {
  forkd::testing::TempDir dir{"vsock_muxer_test"};
  const std::string path = (dir.path() / "v.sock").string();
  GuestMemory mem = *GuestMemory::Anonymous(kMemSize);
  auto mux = VsockMuxer::Listen(path);
  ASSERT_TRUE(mux.ok()) << mux.status();
  auto v = std::make_unique<Vsock>(kGuestCid, mux->get());
  Vsock* dev = v.get();
  MmioTransport t("virtio-vsock", mem, std::move(v), nullptr);
  std::promise<absl::Status> died;
  auto fatal = died.get_future();
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlimit low = saved;
  low.rlim_cur = 1;  // its poll of wake + listener now fails (EINVAL)
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  (*mux)->Start(
      dev, [] {}, [&died](const absl::Status& s) { died.set_value(s); });
  const auto ready = fatal.wait_for(std::chrono::seconds(30));  // hang guard
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  ASSERT_EQ(ready, std::future_status::ready);
  const absl::Status s = fatal.get();
  EXPECT_NE(s.message().find("vsock muxer"), std::string::npos) << s;
  EXPECT_NE(s.message().find("EINVAL"), std::string::npos) << s;
  mux->reset();
}

TEST(VsockMuxer, UnansweredConnectIsClosedWithoutOk) {
  MuxerFixture f;
  ASSERT_NE(f.mux, nullptr);
  UniqueFd host = f.HostConnect(5000);
  auto req = f.AwaitGuestPacket(kVsockOpRequest);
  ASSERT_TRUE(req.has_value());
  EXPECT_EQ(req->dst_port, 5000u);
  pollfd p{host.get(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0);  // before the deadline: nothing yet
  f.now_ns += std::chrono::nanoseconds(Vsock::kConnectTimeout).count();
  f.mux->OnActivity();  // wakes its poll, which still waits on the real clock
  auto got = ReadToEof(host.get());
  ASSERT_TRUE(got.has_value()) << "the host socket was never closed";
  EXPECT_EQ(*got, "");  // EOF without "OK"
  auto rst = f.AwaitGuestPacket(kVsockOpRst);
  ASSERT_TRUE(rst.has_value());
  EXPECT_EQ(rst->src_port, req->src_port);
  EXPECT_EQ(rst->dst_port, 5000u);
  // A late RESPONSE is refused; a new connection still works.
  f.d->Send(FromGuest(5000, req->src_port, kVsockOpResponse));
  ASSERT_TRUE(f.AwaitGuestPacket(kVsockOpRst).has_value());
  UniqueFd host2 = f.HostConnect(5000);
  auto req2 = f.AwaitGuestPacket(kVsockOpRequest);
  ASSERT_TRUE(req2.has_value());
  f.d->Send(FromGuest(5000, req2->src_port, kVsockOpResponse));
  char buf[64] = {};
  pollfd p2{host2.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&p2, 1, static_cast<int>(kHangGuard / std::chrono::milliseconds(1))), 1);
  ASSERT_GT(::read(host2.get(), buf, sizeof buf - 1), 0);
  EXPECT_EQ(std::string(buf), "OK " + std::to_string(req2->src_port) + "\n");
}

TEST(VsockMuxer, HostClosingAPendingConnectResetsTheGuestAtOnce) {
  MuxerFixture f;
  ASSERT_NE(f.mux, nullptr);
  UniqueFd host = f.HostConnect(5000);
  auto req = f.AwaitGuestPacket(kVsockOpRequest);
  ASSERT_TRUE(req.has_value());
  host.reset();  // the fake clock never moves: only POLLHUP can free it
  auto rst = f.AwaitGuestPacket(kVsockOpRst);
  ASSERT_TRUE(rst.has_value()) << "the pending connection was not reset";
  EXPECT_EQ(rst->src_port, req->src_port);
  EXPECT_EQ(f.dev->TimeToNextClose(), std::nullopt);
}

TEST(Vsock, GuestInitiatedConnectionsAreKeyedByBothPorts) {
  Fixture f;
  // Two guest connections to host port 22 from different guest ports.
  VsockHeader req = FromGuest(40001, 22, kVsockOpRequest);
  req.buf_alloc = 500;
  f.d->Send(req);
  f.d->Send(FromGuest(40002, 22, kVsockOpRequest));
  EXPECT_TRUE(f.d->Received().empty());  // waiting for the backend
  const VsockConnKey a{22, 40001}, b{22, 40002};
  EXPECT_EQ(f.backend.guest_connects, (std::vector<VsockConnKey>{a, b}));
  EXPECT_FALSE(f.dev->Connect(a));  // the host cannot take the guest's pair
  f.dev->AcceptGuestConnect(a, true);
  f.dev->AcceptGuestConnect(b, true);
  f.t->Kick(0);
  auto rx = f.d->Received();
  ASSERT_EQ(Ops(rx), (std::vector<uint16_t>{kVsockOpResponse, kVsockOpResponse}));
  EXPECT_EQ(rx[0].first.src_port, 22u);
  EXPECT_EQ(rx[0].first.dst_port, 40001u);
  EXPECT_EQ(rx[1].first.dst_port, 40002u);
  EXPECT_EQ(f.dev->SendCredit(a), 500u);
  EXPECT_EQ(f.dev->SendCredit(b), 1000u);
  // Data keeps to its own connection both ways.
  f.d->Send(FromGuest(40001, 22, kVsockOpRw), "for a");
  f.d->Send(FromGuest(40002, 22, kVsockOpRw), "for b");
  EXPECT_EQ(Drain(*f.dev, a), "for a");
  EXPECT_EQ(Drain(*f.dev, b), "for b");
  f.dev->Send(b, {reinterpret_cast<const uint8_t*>("to b"), 4});
  f.t->Kick(0);
  rx = f.d->Received();
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].first.dst_port, 40002u);
  EXPECT_EQ(rx[0].second, "to b");
  // A RESPONSE to the guest's own request, or a second REQUEST on a live
  // connection, breaks the protocol: that connection only is reset.
  f.d->Send(FromGuest(40001, 22, kVsockOpResponse));
  EXPECT_EQ(f.backend.closed, std::vector<VsockConnKey>{a});
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRst});
  EXPECT_EQ(f.dev->SendCredit(b), 996u);  // b lives on, its 4 bytes in flight
}

TEST(Vsock, GuestRequestTheHostRefusesGetsRst) {
  Fixture f;
  f.d->Send(FromGuest(40001, 9, kVsockOpRequest));
  ASSERT_EQ(f.backend.guest_connects.size(), 1u);
  f.dev->AcceptGuestConnect({9, 40001}, false);
  f.t->Kick(0);
  auto rx = f.d->Received();
  ASSERT_EQ(Ops(rx), std::vector<uint16_t>{kVsockOpRst});
  EXPECT_EQ(rx[0].first.src_port, 9u);
  EXPECT_EQ(rx[0].first.dst_port, 40001u);
  // Data on the refused connection is answered with RST, not delivered.
  f.d->Send(FromGuest(40001, 9, kVsockOpRw), "x");
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRst});
  EXPECT_FALSE(f.dev->HasToHost({9, 40001}));
  // The guest reset its request before the host answered: the answer is
  // dropped and the backend hears the close.
  f.d->Send(FromGuest(40002, 9, kVsockOpRequest));
  f.d->Send(FromGuest(40002, 9, kVsockOpRst));
  EXPECT_EQ(f.backend.closed, (std::vector<VsockConnKey>{{9, 40002}}));
  f.dev->AcceptGuestConnect({9, 40002}, true);
  f.t->Kick(0);
  EXPECT_TRUE(f.d->Received().empty());
}

TEST(Vsock, UnknownConnectionsGetRstAndSpoofedCidsAreDropped) {
  Fixture f;
  f.d->Send(FromGuest(7, 9999, kVsockOpRw), "who");
  auto rx = f.d->Received();
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].first.op, kVsockOpRst);
  EXPECT_EQ(rx[0].first.src_port, 9999u);
  EXPECT_EQ(rx[0].first.dst_port, 7u);
  // An RST to an unknown connection is not answered (no RST ping-pong).
  f.d->Send(FromGuest(8, 22, kVsockOpRst));
  EXPECT_TRUE(f.d->Received().empty());
  // Data before the guest accepted a host connection breaks the protocol.
  ASSERT_TRUE(f.dev->Connect({2000, 6000}));
  EXPECT_FALSE(f.dev->Connect({2000, 6000}));  // taken
  f.t->Kick(0);
  f.d->Received();
  f.d->Send(FromGuest(6000, 2000, kVsockOpRw), "early");
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRst});
  EXPECT_FALSE(f.dev->HasToHost({2000, 6000}));

  // Established connection, but the packet claims another source CID.
  Establish(f);
  VsockHeader spoof = FromGuest(5000, 1000, kVsockOpRw);
  spoof.src_cid = kGuestCid + 1;
  f.d->Send(spoof, "evil");
  EXPECT_FALSE(f.dev->HasToHost(kHostConn));
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

// Regression: RESPONSE, SHUTDOWN and CREDIT_UPDATE used to bypass the cap
// on queued replies, so a guest cycling REQUEST/RST with no rx buffers grew
// the queue without limit.
TEST(Vsock, ChurningConnectionsWithoutRxBuffersDoNotGrowTheReplyQueue) {
  GuestMemory mem = *GuestMemory::Anonymous(kMemSize);
  Backend backend;
  auto v = std::make_unique<Vsock>(kGuestCid, &backend);
  Vsock* dev = v.get();
  MmioTransport t("virtio-vsock", mem, std::move(v), nullptr);
  Driver d(t, mem);  // no rx buffers posted
  const VsockConnKey k{22, 40000};
  for (int i = 0; i < 3000; ++i) {
    d.Send(FromGuest(k.guest_port, k.local_port, kVsockOpRequest));
    dev->AcceptGuestConnect(k, true);                                      // RESPONSE
    d.Send(FromGuest(k.guest_port, k.local_port, kVsockOpCreditRequest));  // CREDIT_UPDATE
    EXPECT_FALSE(dev->HostEof(k));                                         // SHUTDOWN
    d.Send(FromGuest(k.guest_port, k.local_port, kVsockOpRst));
  }
  EXPECT_LE(dev->queued_for_guest(), Vsock::kMaxQueuedControl);
  // Positive control: a live connection's RESPONSE still reaches a guest
  // that posts buffers.
  const VsockConnKey live{22, 40001};
  d.Send(FromGuest(live.guest_port, live.local_port, kVsockOpRequest));
  dev->AcceptGuestConnect(live, true);
  d.FillRx();
  bool responded = false;
  for (int round = 0; round < 100 && !responded; ++round) {
    auto rx = d.Received();
    if (rx.empty()) break;
    for (const auto& [h, p] : rx) {
      responded |= h.op == kVsockOpResponse && h.dst_port == live.guest_port;
    }
    d.W(reg::kQueueNotify, 0);
  }
  EXPECT_TRUE(responded);
}

// Regression: host bytes used to be read up to the guest's buf_alloc even
// when it posted no rx buffer at all (the VMM held them).
TEST(Vsock, HostBytesAreReadOnlyIntoRxBuffersTheGuestPosted) {
  GuestMemory mem = *GuestMemory::Anonymous(kMemSize);
  Backend backend;
  auto v = std::make_unique<Vsock>(kGuestCid, &backend);
  Vsock* dev = v.get();
  MmioTransport t("virtio-vsock", mem, std::move(v), nullptr);
  Driver d(t, mem);  // no rx buffers posted
  const VsockConnKey k{22, 40000};
  VsockHeader req = FromGuest(k.guest_port, k.local_port, kVsockOpRequest);
  req.buf_alloc = 1u << 30;  // the guest claims 1 GiB of credit
  d.Send(req);
  dev->AcceptGuestConnect(k, true);
  EXPECT_EQ(dev->SendCredit(k), 0u);
  // Three buffers: one takes the RESPONSE, two are left for bytes.
  for (uint16_t i = 0; i < 3; ++i) d.Post(0, i, kRxBufLen, true);
  d.W(reg::kQueueNotify, 0);
  auto rx = d.Received();
  ASSERT_EQ(Ops(rx), std::vector<uint16_t>{kVsockOpResponse});
  const uint32_t credit = dev->SendCredit(k);
  ASSERT_EQ(credit, 2 * (kRxBufLen - sizeof(VsockHeader)));
  const std::string bytes(credit, 'h');
  dev->Send(k, {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  EXPECT_EQ(dev->SendCredit(k), 0u);  // every posted byte is spoken for
  t.Kick(0);
  std::string got;
  for (const auto& [h, p] : d.Received()) got += p;  // (re-posts them)
  EXPECT_EQ(got, bytes);
  d.W(reg::kQueueNotify, 0);
  EXPECT_GT(dev->SendCredit(k), 0u);
}

// Regression: the backend used to hear a tx batch's events grouped by type
// (connects before closes), so an RST then a REQUEST for the same ports
// left an established connection with no host socket.
TEST(Vsock, BackendHearsEventsInTheOrderTheyHappened) {
  Fixture f;
  const VsockConnKey k{22, 40000};
  f.d->Send(FromGuest(k.guest_port, k.local_port, kVsockOpRequest));
  f.dev->AcceptGuestConnect(k, true);
  f.t->Kick(0);
  ASSERT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpResponse});
  // One tx batch: RST, then a new REQUEST on the same pair.
  const VsockHeader rst = FromGuest(k.guest_port, k.local_port, kVsockOpRst);
  const VsockHeader again = FromGuest(k.guest_port, k.local_port, kVsockOpRequest);
  f.d->Put(BufBase(1, 2), rst);
  f.d->Put(BufBase(1, 3), again);
  f.d->Post(1, 2, sizeof rst, false);
  f.d->Post(1, 3, sizeof again, false);
  f.backend.log.clear();
  f.d->W(reg::kQueueNotify, 1);
  EXPECT_EQ(f.backend.log, (std::vector<std::pair<char, VsockConnKey>>{{'X', k}, {'G', k}}));
}

TEST(Vsock, RateLimitHoldsGuestPacketsAndHostDataAndIsSaved) {
  GuestMemory mem = *GuestMemory::Anonymous(kMemSize);
  Backend backend;
  Vsock::TimePoint now{std::chrono::seconds(1)};
  const RateLimiterConfig limit{.ops = {.rate = 10, .burst = 2}};
  auto v = std::make_unique<Vsock>(
      kGuestCid, &backend, [&] { return now; }, limit);
  Vsock* dev = v.get();
  std::vector<std::pair<size_t, std::chrono::nanoseconds>> retries;
  v->set_retry([&](size_t q, std::chrono::nanoseconds delay) { retries.emplace_back(q, delay); });
  MmioTransport t("virtio-vsock", mem, std::move(v), nullptr);
  Driver d(t, mem);
  d.FillRx();
  // Two guest packets pass (the burst), the third waits in the tx queue.
  d.Send(FromGuest(40000, 22, kVsockOpRequest));
  d.Send(FromGuest(40001, 22, kVsockOpRequest));
  d.Send(FromGuest(40002, 22, kVsockOpRequest));
  EXPECT_EQ(backend.guest_connects.size(), 2u);
  ASSERT_FALSE(retries.empty());
  EXPECT_EQ(retries.back().first, 1u);  // tx
  EXPECT_EQ(retries.back().second, std::chrono::milliseconds(100));
  now += std::chrono::milliseconds(100);
  t.Kick(1);  // the retry timer
  EXPECT_EQ(backend.guest_connects.size(), 3u);
  // Host data to the guest takes from the same bucket: empty now.
  const VsockConnKey k{22, 40000};
  ASSERT_TRUE(dev->AcceptGuestConnect(k, true));
  t.Kick(0);
  ASSERT_EQ(Ops(d.Received()), std::vector<uint16_t>{kVsockOpResponse});  // control: not limited
  dev->Send(k, {reinterpret_cast<const uint8_t*>("data"), 4});
  t.Kick(0);
  EXPECT_TRUE(d.Received().empty());
  EXPECT_EQ(retries.back().first, 0u);  // rx
  now += std::chrono::milliseconds(100);
  t.Kick(0);
  auto rx = d.Received();
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].second, "data");
  // Saved and restored with the CID.
  Backend backend2;
  MmioTransport t2("virtio-vsock", mem, std::make_unique<Vsock>(3, &backend2), nullptr);
  ASSERT_TRUE(t2.RestoreDevice(t.SaveDevice()).ok());
  EXPECT_EQ(t2.device<Vsock>().limit(), limit);
}

TEST(Vsock, GuestCannotOpenUnboundedConnections) {
  Fixture f;
  for (uint32_t p = 0; p < Vsock::kMaxConnections; ++p) {
    f.d->Send(FromGuest(30000 + p, 22, kVsockOpRequest));
  }
  EXPECT_EQ(f.backend.guest_connects.size(), Vsock::kMaxConnections);
  EXPECT_TRUE(f.d->Received().empty());
  f.d->Send(FromGuest(29999, 22, kVsockOpRequest));
  EXPECT_EQ(f.backend.guest_connects.size(), Vsock::kMaxConnections);
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRst});
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
  Establish(f);
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
  EXPECT_EQ(dev2->SendCredit(kHostConn), 0u);  // connections do not survive

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

  // A guest that still talks on its old connection is reset; the backend
  // never hears of it.
  f.d->Send(FromGuest(5000, 1000, kVsockOpRw), "old", &t2);
  auto rx = f.d->Received();
  ASSERT_EQ(Ops(rx), std::vector<uint16_t>{kVsockOpRst});
  EXPECT_EQ(rx[0].first.src_port, 1000u);
  EXPECT_EQ(rx[0].first.dst_port, 5000u);
  EXPECT_FALSE(dev2->HasToHost(kHostConn));
  EXPECT_TRUE(backend2.closed.empty());
  // New connections work on the restored device.
  ASSERT_TRUE(dev2->Connect({1001, 5000}));
  t2.Kick(0);
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRequest});
  f.d->Send(FromGuest(5000, 1001, kVsockOpResponse), "", &t2);
  EXPECT_EQ(backend2.connected, (std::vector<VsockConnKey>{{1001, 5000}}));
}

// A restored device on the fixture's rings and memory, with its own clock
// and backend: what a fork's forkd-vmm is right after --restore.
struct Restored {
  Backend backend;
  Vsock::TimePoint now{};
  Vsock* dev = nullptr;
  std::unique_ptr<MmioTransport> t;
  explicit Restored(Fixture& f) {
    DeviceState saved = f.t->SaveDevice();
    auto v = std::make_unique<Vsock>(3, &backend, [this] { return now; });
    dev = v.get();
    t = std::make_unique<MmioTransport>("virtio-vsock", f.mem, std::move(v), nullptr);
    absl::Status s = t->RestoreDevice(saved);
    EXPECT_TRUE(s.ok()) << s;
  }
  void Kick(uint32_t q) {
    uint8_t b[4];
    std::memcpy(b, &q, 4);
    t->Write(reg::kQueueNotify, b);
  }
};

// The race a Linux guest loses without the hold: a host REQUEST reaching it
// before it handled the restore's TRANSPORT_RESET is accepted, then reset with
// every other connection. The REQUEST goes out only once the guest re-posted
// an event buffer (Linux does that right after resetting its sockets); a
// buffer that was already available does not count.
TEST(Vsock, HostConnectAfterRestoreWaitsUntilTheGuestAcknowledgedTheReset) {
  Fixture f;
  f.d->Post(2, 0, 8, true);  // the guest posted two event buffers before the snapshot
  f.d->Post(2, 1, 8, true);
  Establish(f);
  Restored r(f);
  const VsockConnKey k{1001, 5000};
  ASSERT_TRUE(r.dev->Connect(k));  // right after READY: nothing ran in the guest yet
  r.Kick(0);
  EXPECT_TRUE(f.d->Received().empty()) << "REQUEST sent before the reset event went out";
  EXPECT_EQ(r.dev->held_connects(), 1u);
  r.Kick(2);  // the machine's first pass: the event goes out
  ASSERT_EQ(f.d->Used(2).size(), 1u);
  EXPECT_EQ(f.d->Get<uint32_t>(BufBase(2, 0)), kVsockEventTransportReset);
  r.Kick(0);
  r.Kick(2);  // kicks without a new event buffer (buffer 1 was there before)
  EXPECT_TRUE(f.d->Received().empty()) << "REQUEST sent before the guest handled the reset";
  EXPECT_EQ(r.dev->held_connects(), 1u);
  // The hold ate into the connect timeout; the released REQUEST gets its own.
  r.now += Vsock::kConnectTimeout - std::chrono::milliseconds(1);
  EXPECT_TRUE(r.dev->ExpireCloses().empty());
  // The guest handled the event and re-posts its buffer: the REQUEST goes.
  f.d->Post(2, 0, 8, true);
  r.Kick(2);
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRequest});
  EXPECT_EQ(r.dev->held_connects(), 0u);
  EXPECT_EQ(r.dev->TimeToNextClose(), Vsock::kConnectTimeout);
  f.d->Send(FromGuest(5000, 1001, kVsockOpResponse), "", r.t.get());
  EXPECT_EQ(r.backend.connected, std::vector<VsockConnKey>{k});
  EXPECT_EQ(r.dev->TimeToNextClose(), std::nullopt);
  // Later connects are not held.
  ASSERT_TRUE(r.dev->Connect({1002, 5000}));
  r.Kick(0);
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRequest});
}

// The template's own connection was still open in the guest at the snapshot
// (forkd's builder closes its Ping connection right before it snapshots), and
// a fork's first host connect gets the same host port: the pair is the one
// the guest still talks on until it handles the reset. What it sends there
// before then (bytes, a shutdown, a reset, packets left in its tx ring at the
// snapshot) belongs to the old connection: it is reset as a stranger's and
// never touches the held connect, which goes out and connects as usual.
TEST(Vsock, StalePacketsOnAHeldPairNeverReachTheHeldConnect) {
  Fixture f;
  f.d->Post(2, 0, 8, true);
  Establish(f);  // kHostConn is open in the guest at the snapshot
  Restored r(f);
  ASSERT_TRUE(r.dev->Connect(kHostConn));
  EXPECT_EQ(r.dev->held_connects(), 1u);
  f.d->Send(FromGuest(5000, 1000, kVsockOpRw), "stale", r.t.get());
  VsockHeader shutdown = FromGuest(5000, 1000, kVsockOpShutdown);
  shutdown.flags = 3;
  f.d->Send(shutdown, "", r.t.get());
  f.d->Send(FromGuest(5000, 1000, kVsockOpCreditRequest), "", r.t.get());
  f.d->Send(FromGuest(5000, 1000, kVsockOpResponse), "", r.t.get());
  f.d->Send(FromGuest(5000, 1000, kVsockOpRst), "", r.t.get());
  EXPECT_TRUE(r.backend.closed.empty()) << "a stale packet closed the held connect";
  EXPECT_TRUE(r.backend.connected.empty()) << "a stale RESPONSE connected it";
  EXPECT_EQ(r.dev->held_connects(), 1u);
  EXPECT_FALSE(r.dev->HasToHost(kHostConn));
  // Each stale packet but the RST is answered with one, as for any unknown
  // pair; no REQUEST yet.
  EXPECT_EQ(Ops(f.d->Received()),
            (std::vector<uint16_t>{kVsockOpRst, kVsockOpRst, kVsockOpRst, kVsockOpRst}));
  // The guest handles the reset and re-posts its event buffer: the REQUEST
  // goes out with a fresh connect deadline and the RESPONSE connects.
  ASSERT_EQ(f.d->Used(2).size(), 1u);
  f.d->Post(2, 0, 8, true);
  r.Kick(2);
  EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRequest});
  f.d->Send(FromGuest(5000, 1000, kVsockOpResponse), "", r.t.get());
  EXPECT_EQ(r.backend.connected, std::vector<VsockConnKey>{kHostConn});
  EXPECT_TRUE(r.backend.closed.empty());
}

// Held connects go out in the order they were made, all at once.
TEST(Vsock, HeldConnectsAreReleasedInOrder) {
  Fixture f;
  f.d->Post(2, 0, 8, true);
  Restored r(f);
  for (uint32_t port : {1003u, 1001u, 1002u}) ASSERT_TRUE(r.dev->Connect({port, 5000}));
  r.Kick(2);
  ASSERT_EQ(f.d->Used(2).size(), 1u);
  EXPECT_TRUE(f.d->Received().empty());
  f.d->Post(2, 0, 8, true);
  r.Kick(2);
  std::vector<uint32_t> ports;
  for (const auto& [h, p] : f.d->Received()) {
    EXPECT_EQ(h.op, kVsockOpRequest);
    ports.push_back(h.src_port);
  }
  EXPECT_EQ(ports, (std::vector<uint32_t>{1003, 1001, 1002}));
}

// A guest that never acknowledges the reset (it never re-posts an event
// buffer, or never posted one so the event never went out) gets nothing: at
// the connect deadline the connection is forgotten without a packet (it never
// knew of it), the caller closes its socket, and nothing hangs. A late
// acknowledgement sends no stale REQUEST.
TEST(Vsock, HeldConnectTheGuestNeverAcknowledgesIsRefusedAtTheDeadline) {
  for (const bool event_buffer : {true, false}) {
    SCOPED_TRACE(event_buffer ? "event delivered, never acknowledged" : "no event buffer");
    Fixture f;
    if (event_buffer) f.d->Post(2, 0, 8, true);
    Restored r(f);
    const VsockConnKey k{1001, 5000};
    ASSERT_TRUE(r.dev->Connect(k));
    r.Kick(2);
    EXPECT_EQ(f.d->Used(2).size(), event_buffer ? 1u : 0u);
    EXPECT_EQ(r.dev->TimeToNextClose(), Vsock::kConnectTimeout);
    r.now += Vsock::kConnectTimeout - std::chrono::milliseconds(1);
    EXPECT_TRUE(r.dev->ExpireCloses().empty());
    r.now += std::chrono::milliseconds(1);
    EXPECT_EQ(r.dev->ExpireCloses(), std::vector<VsockConnKey>{k});
    EXPECT_EQ(r.dev->held_connects(), 0u);
    EXPECT_EQ(r.dev->TimeToNextClose(), std::nullopt);
    r.Kick(0);
    EXPECT_TRUE(f.d->Received().empty()) << "a packet for a connection the guest never saw";
    // A RESPONSE the guest makes up for it is reset, and never connects.
    f.d->Send(FromGuest(5000, 1001, kVsockOpResponse), "", r.t.get());
    EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRst});
    EXPECT_TRUE(r.backend.connected.empty());
    // The acknowledgement coming late sends no stale REQUEST.
    f.d->Post(2, event_buffer ? 0 : 1, 8, true);
    r.Kick(2);
    if (!event_buffer) {
      ASSERT_EQ(f.d->Used(2).size(), 1u);  // the event goes out now
      f.d->Post(2, 1, 8, true);
      r.Kick(2);
    }
    EXPECT_TRUE(f.d->Received().empty());
    // And the pair is free again, not held: the guest acknowledged.
    ASSERT_TRUE(r.dev->Connect(k));
    r.Kick(0);
    EXPECT_EQ(Ops(f.d->Received()), std::vector<uint16_t>{kVsockOpRequest});
  }
}

// A host that gives up on a held connect (closes its socket) frees it: no
// RST for a connection the guest never heard of, no REQUEST later.
TEST(Vsock, HostClosingAHeldConnectSendsNothing) {
  Fixture f;
  f.d->Post(2, 0, 8, true);
  Restored r(f);
  const VsockConnKey k{1001, 5000};
  ASSERT_TRUE(r.dev->Connect(k));
  r.dev->Close(k);
  EXPECT_EQ(r.dev->held_connects(), 0u);
  r.Kick(2);
  f.d->Post(2, 0, 8, true);
  r.Kick(2);
  EXPECT_TRUE(f.d->Received().empty());
  EXPECT_EQ(r.dev->TimeToNextClose(), std::nullopt);
}

}  // namespace
}  // namespace forkd::vmm::virtio

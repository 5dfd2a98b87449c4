// Split virtqueue walking against hostile descriptors, the virtio-mmio
// register file and status machine, virtio-rng end to end through the
// transport, and transport state save/restore round trips. Guest memory is a
// real (anonymous) GuestMemory; the "driver" is this test writing rings.
#include <chrono>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "common/errno_status.h"
#include "forkd/vmm/devices/rate_limiter.h"
#include "forkd/vmm/devices/virtio/mmio_transport.h"
#include "forkd/vmm/devices/virtio/queue.h"
#include "forkd/vmm/devices/virtio/rng.h"
#include "gtest/gtest.h"

namespace forkd::vmm::virtio {
namespace {

constexpr uint64_t kMemSize = 1 << 20;
constexpr uint64_t kDesc = 0x1000;
constexpr uint64_t kAvail = 0x2000;
constexpr uint64_t kUsed = 0x3000;
constexpr uint64_t kBuf = 0x10000;
constexpr uint16_t kSize = 8;

GuestMemory Mem() {
  auto m = GuestMemory::Anonymous(kMemSize);
  if (!m.ok()) std::abort();
  return *std::move(m);
}

template <typename T>
void Put(const GuestMemory& m, uint64_t gpa, T v) {
  ASSERT_TRUE(m.WriteObj(gpa, v).ok());
}
template <typename T>
T Get(const GuestMemory& m, uint64_t gpa) {
  T v;
  std::memcpy(&v, m.host_base() + gpa, sizeof v);
  return v;
}

void PutDesc(const GuestMemory& m, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
             uint16_t next) {
  const uint64_t at = kDesc + 16ULL * i;
  Put<uint64_t>(m, at, addr);
  Put<uint32_t>(m, at + 8, len);
  Put<uint16_t>(m, at + 12, flags);
  Put<uint16_t>(m, at + 14, next);
}

// Publishes `head` as the next available chain.
void Publish(const GuestMemory& m, uint16_t head) {
  uint16_t idx = Get<uint16_t>(m, kAvail + 2);
  Put<uint16_t>(m, kAvail + 4 + 2ULL * (idx % kSize), head);
  Put<uint16_t>(m, kAvail + 2, static_cast<uint16_t>(idx + 1));
}

Queue ConfiguredQueue() {
  Queue q(256);
  q.state().size = kSize;
  q.state().desc_addr = kDesc;
  q.state().avail_addr = kAvail;
  q.state().used_addr = kUsed;
  q.state().ready = true;
  return q;
}

TEST(VirtQueue, PopsAChainAndPublishesUsed) {
  GuestMemory m = Mem();
  Queue q = ConfiguredQueue();
  ASSERT_TRUE(q.Validate(m).ok());
  auto none = q.Pop(m);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());

  PutDesc(m, 3, kBuf, 16, kDescFlagNext, 5);
  PutDesc(m, 5, kBuf + 16, 32, kDescFlagWrite, 0);
  Publish(m, 3);
  auto c = q.Pop(m);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->has_value());
  EXPECT_EQ((*c)->head, 3);
  ASSERT_EQ((*c)->descriptors.size(), 2u);
  EXPECT_EQ((*c)->descriptors[0].addr, kBuf);
  EXPECT_FALSE((*c)->descriptors[0].device_writable);
  EXPECT_EQ((*c)->descriptors[1].len, 32u);
  EXPECT_TRUE((*c)->descriptors[1].device_writable);
  EXPECT_FALSE(q.Pop(m)->has_value());  // consumed

  ASSERT_TRUE(q.PushUsed(m, 3, 32).ok());
  EXPECT_EQ(Get<uint16_t>(m, kUsed + 2), 1);
  EXPECT_EQ(Get<uint32_t>(m, kUsed + 4), 3u);
  EXPECT_EQ(Get<uint32_t>(m, kUsed + 8), 32u);
  EXPECT_FALSE(q.PushUsed(m, kSize, 0).ok());  // head outside the queue
}

TEST(VirtQueue, RefusesBuffersOutsideGuestMemory) {
  GuestMemory m = Mem();
  Queue q = ConfiguredQueue();
  PutDesc(m, 0, kMemSize - 8, 16, kDescFlagWrite, 0);  // straddles the end
  Publish(m, 0);
  EXPECT_FALSE(q.Pop(m).ok());

  Queue q2 = ConfiguredQueue();
  PutDesc(m, 0, ~0ULL - 4, 16, kDescFlagWrite, 0);  // addr + len wraps
  EXPECT_FALSE(q2.Pop(m).ok());

  Queue q3 = ConfiguredQueue();
  PutDesc(m, 0, kBuf, 0xffffffffu, kDescFlagWrite, 0);  // huge length
  EXPECT_FALSE(q3.Pop(m).ok());
}

TEST(VirtQueue, RefusesLoopsLongChainsAndBadIndices) {
  GuestMemory m = Mem();
  // 0 -> 1 -> 0 -> ... : must end with an error, not spin.
  {
    Queue q = ConfiguredQueue();
    PutDesc(m, 0, kBuf, 1, kDescFlagNext, 1);
    PutDesc(m, 1, kBuf, 1, kDescFlagNext, 0);
    Put<uint16_t>(m, kAvail + 2, 0);
    Publish(m, 0);
    EXPECT_FALSE(q.Pop(m).ok());
  }
  // A self loop.
  {
    Queue q = ConfiguredQueue();
    PutDesc(m, 2, kBuf, 1, kDescFlagNext, 2);
    Put<uint16_t>(m, kAvail + 2, 0);
    Publish(m, 2);
    EXPECT_FALSE(q.Pop(m).ok());
  }
  // A full-length chain (size descriptors) is fine; that is the cap.
  {
    Queue q = ConfiguredQueue();
    for (uint16_t i = 0; i < kSize; ++i) {
      PutDesc(m, i, kBuf, 1, i + 1 < kSize ? kDescFlagNext : 0, static_cast<uint16_t>(i + 1));
    }
    Put<uint16_t>(m, kAvail + 2, 0);
    Publish(m, 0);
    auto c = q.Pop(m);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ((*c)->descriptors.size(), kSize);
  }
  // `next` outside the table.
  {
    Queue q = ConfiguredQueue();
    PutDesc(m, 0, kBuf, 1, kDescFlagNext, kSize);
    Put<uint16_t>(m, kAvail + 2, 0);
    Publish(m, 0);
    EXPECT_FALSE(q.Pop(m).ok());
  }
  // Head outside the table.
  {
    Queue q = ConfiguredQueue();
    Put<uint16_t>(m, kAvail + 2, 0);
    Publish(m, 200);
    EXPECT_FALSE(q.Pop(m).ok());
  }
  // Indirect descriptors were never offered.
  {
    Queue q = ConfiguredQueue();
    PutDesc(m, 0, kBuf, 16, kDescFlagIndirect, 0);
    Put<uint16_t>(m, kAvail + 2, 0);
    Publish(m, 0);
    EXPECT_FALSE(q.Pop(m).ok());
  }
  // Avail idx claims more entries than the ring holds.
  {
    Queue q = ConfiguredQueue();
    Put<uint16_t>(m, kAvail + 2, kSize + 1);
    EXPECT_FALSE(q.Pop(m).ok());
  }
}

TEST(VirtQueue, ValidateRejectsBadSizesAndRings) {
  GuestMemory m = Mem();
  Queue q = ConfiguredQueue();
  q.state().size = 6;  // not a power of two
  EXPECT_FALSE(q.Validate(m).ok());
  q.state().size = 512;  // above max
  EXPECT_FALSE(q.Validate(m).ok());
  q.state().size = 0;
  EXPECT_FALSE(q.Validate(m).ok());
  q = ConfiguredQueue();
  q.state().used_addr = kMemSize - 8;  // ring runs past the end
  EXPECT_FALSE(q.Validate(m).ok());
  q = ConfiguredQueue();
  q.state().desc_addr = kDesc + 8;  // misaligned
  EXPECT_FALSE(q.Validate(m).ok());
  q = ConfiguredQueue();
  q.state().avail_addr = ~0ULL - 1;
  EXPECT_FALSE(q.Validate(m).ok());
}

// A minimal driver speaking to the transport through its registers.
uint32_t R(MmioTransport& t, uint64_t off) {
  uint8_t b[4];
  t.Read(off, b);
  uint32_t v;
  std::memcpy(&v, b, 4);
  return v;
}
void W(MmioTransport& t, uint64_t off, uint32_t v) {
  uint8_t b[4];
  std::memcpy(b, &v, 4);
  t.Write(off, b);
}

void DriverInit(MmioTransport& t) {
  W(t, reg::kStatus, 0);
  W(t, reg::kStatus, kStatusAcknowledge);
  W(t, reg::kStatus, kStatusAcknowledge | kStatusDriver);
  W(t, reg::kDriverFeaturesSel, 1);
  W(t, reg::kDriverFeatures, 1);  // VIRTIO_F_VERSION_1 (bit 32)
  W(t, reg::kDriverFeaturesSel, 0);
  W(t, reg::kDriverFeatures, 0);
  W(t, reg::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  W(t, reg::kQueueSel, 0);
  W(t, reg::kQueueNum, kSize);
  W(t, reg::kQueueDescLow, kDesc);
  W(t, reg::kQueueDriverLow, kAvail);
  W(t, reg::kQueueDeviceLow, kUsed);
  W(t, reg::kQueueReady, 1);
  W(t, reg::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
}

TEST(MmioTransport, IdentityRegisters) {
  GuestMemory m = Mem();
  MmioTransport t("virtio-rng", m, std::make_unique<Rng>(), nullptr);
  EXPECT_EQ(R(t, reg::kMagic), kMagicValue);
  EXPECT_EQ(R(t, reg::kVersion), 2u);
  EXPECT_EQ(R(t, reg::kDeviceId), 4u);
  W(t, reg::kDeviceFeaturesSel, 1);
  EXPECT_EQ(R(t, reg::kDeviceFeatures), 1u);  // VERSION_1
  W(t, reg::kQueueSel, 0);
  EXPECT_EQ(R(t, reg::kQueueNumMax), Rng::kQueueSize);
  W(t, reg::kQueueSel, 1);
  EXPECT_EQ(R(t, reg::kQueueNumMax), 0u);  // no such queue
  uint8_t two[2] = {0xaa, 0xaa};
  t.Read(reg::kMagic, two);  // not a 32-bit access
  EXPECT_EQ(two[0], 0);
}

// A device type no transport in this test was created with.
class OtherDevice : public VirtioDevice {
 public:
  static constexpr uint32_t kDeviceId = 42;
  uint32_t device_id() const override { return kDeviceId; }
  std::vector<uint16_t> queue_max_sizes() const override { return {}; }
  absl::StatusOr<bool> ProcessQueue(size_t, std::span<Queue>, const GuestMemory&) override {
    return false;
  }
};

TEST(MmioTransport, DeviceIsReachableOnlyAsItsOwnType) {
  GuestMemory m = Mem();
  auto rng = std::make_unique<Rng>();
  const Rng* const created = rng.get();
  MmioTransport t("virtio-rng", m, std::move(rng), nullptr);
  EXPECT_EQ(&t.device<Rng>(), created);
  // A wrong type aborts instead of handing out a mis-cast reference.
  EXPECT_DEATH(t.device<OtherDevice>(), "");
}

TEST(MmioTransport, FeatureNegotiationRefusesLegacyAndUnofferedBits) {
  GuestMemory m = Mem();
  MmioTransport t("virtio-rng", m, std::make_unique<Rng>(), nullptr);
  W(t, reg::kStatus, kStatusAcknowledge | kStatusDriver);
  W(t, reg::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);  // no VERSION_1
  EXPECT_EQ(R(t, reg::kStatus) & kStatusFeaturesOk, 0u);
  W(t, reg::kDriverFeaturesSel, 1);
  W(t, reg::kDriverFeatures, 3);  // VERSION_1 + an unoffered bit
  W(t, reg::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  EXPECT_EQ(R(t, reg::kStatus) & kStatusFeaturesOk, 0u);
  W(t, reg::kDriverFeatures, 1);
  W(t, reg::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  EXPECT_NE(R(t, reg::kStatus) & kStatusFeaturesOk, 0u);
  W(t, reg::kStatus, kStatusAcknowledge);  // clearing bits without reset: ignored
  EXPECT_NE(R(t, reg::kStatus) & kStatusFeaturesOk, 0u);
  W(t, reg::kStatus, 0);
  EXPECT_EQ(R(t, reg::kStatus), 0u);
}

TEST(MmioTransport, RngFillsBuffersAndInterrupts) {
  GuestMemory m = Mem();
  int irqs = 0;
  MmioTransport t("virtio-rng", m, std::make_unique<Rng>(), [&] { ++irqs; });
  DriverInit(t);
  ASSERT_EQ(R(t, reg::kQueueReady), 1u);
  ASSERT_NE(R(t, reg::kStatus) & kStatusDriverOk, 0u);
  PutDesc(m, 0, kBuf, 64, kDescFlagWrite, 0);
  Publish(m, 0);
  W(t, reg::kQueueNotify, 0);
  EXPECT_EQ(irqs, 1);
  EXPECT_EQ(R(t, reg::kInterruptStatus), kInterruptUsedBuffer);
  W(t, reg::kInterruptAck, kInterruptUsedBuffer);
  EXPECT_EQ(R(t, reg::kInterruptStatus), 0u);
  EXPECT_EQ(Get<uint16_t>(m, kUsed + 2), 1);
  EXPECT_EQ(Get<uint32_t>(m, kUsed + 8), 64u);
  std::vector<uint8_t> first(m.host_base() + kBuf, m.host_base() + kBuf + 64);
  EXPECT_NE(first, std::vector<uint8_t>(64, 0));

  Publish(m, 0);
  W(t, reg::kQueueNotify, 0);
  std::vector<uint8_t> second(m.host_base() + kBuf, m.host_base() + kBuf + 64);
  EXPECT_NE(first, second);
  EXPECT_EQ(Get<uint16_t>(m, kUsed + 2), 2);
}

TEST(MmioTransport, MaliciousChainSetsNeedsResetUntilReset) {
  GuestMemory m = Mem();
  int irqs = 0;
  MmioTransport t("virtio-rng", m, std::make_unique<Rng>(), [&] { ++irqs; });
  DriverInit(t);
  PutDesc(m, 0, kBuf, 1, kDescFlagNext | kDescFlagWrite, 0);  // self loop
  Publish(m, 0);
  W(t, reg::kQueueNotify, 0);
  EXPECT_NE(R(t, reg::kStatus) & kStatusNeedsReset, 0u);
  EXPECT_NE(R(t, reg::kInterruptStatus) & kInterruptConfigChange, 0u);
  EXPECT_EQ(Get<uint16_t>(m, kUsed + 2), 0);
  // Further notifies do nothing until the driver resets the device.
  PutDesc(m, 1, kBuf, 8, kDescFlagWrite, 0);
  Publish(m, 1);
  W(t, reg::kQueueNotify, 0);
  EXPECT_EQ(Get<uint16_t>(m, kUsed + 2), 0);
  W(t, reg::kStatus, 0);
  EXPECT_EQ(R(t, reg::kStatus), 0u);
  EXPECT_EQ(R(t, reg::kQueueReady), 0u);
}

// Regression: NEEDS_RESET used to drop its cause.
TEST(MmioTransport, NeedsResetReportsItsCause) {
  GuestMemory m = Mem();
  MmioTransport t("virtio-rng", m, std::make_unique<Rng>(), nullptr);
  std::vector<std::pair<std::string, bool>> reported;
  t.set_error_handler([&](const absl::Status& cause, bool host) {
    reported.emplace_back(std::string(cause.message()), host);
  });
  DriverInit(t);
  EXPECT_EQ(t.last_error(), "");
  PutDesc(m, 0, kBuf, 1, kDescFlagNext | kDescFlagWrite, 0);  // self loop
  Publish(m, 0);
  W(t, reg::kQueueNotify, 0);
  ASSERT_NE(R(t, reg::kStatus) & kStatusNeedsReset, 0u);
  ASSERT_EQ(reported.size(), 1u);
  EXPECT_FALSE(reported[0].second);  // the guest's fault
  EXPECT_NE(reported[0].first.find("virtio-rng queue 0"), std::string::npos) << reported[0].first;
  EXPECT_NE(reported[0].first.find("loop"), std::string::npos) << reported[0].first;
  EXPECT_NE(t.last_error().find("loop"), std::string::npos);
}

// Regression: a host failure (getrandom) used to look like a broken guest
// queue, its cause dropped.
TEST(MmioTransport, RngHostFailureIsReportedAsTheHosts) {
  GuestMemory m = Mem();
  auto rng = std::make_unique<Rng>(std::nullopt, RateLimiter::Clock{}, [](std::span<uint8_t>) {
    return ErrnoStatus(ENOSYS, "getrandom");
  });
  MmioTransport t("virtio-rng", m, std::move(rng), nullptr);
  std::vector<std::pair<std::string, bool>> reported;
  t.set_error_handler([&](const absl::Status& cause, bool host) {
    reported.emplace_back(std::string(cause.message()), host);
  });
  DriverInit(t);
  PutDesc(m, 0, kBuf, 64, kDescFlagWrite, 0);
  Publish(m, 0);
  W(t, reg::kQueueNotify, 0);
  ASSERT_EQ(reported.size(), 1u);
  EXPECT_TRUE(reported[0].second);
  EXPECT_NE(reported[0].first.find("getrandom"), std::string::npos) << reported[0].first;
  EXPECT_NE(reported[0].first.find("ENOSYS"), std::string::npos) << reported[0].first;
}

TEST(Rng, RateLimitHoldsRequestsAndRetriesWhenTokensAreBack) {
  GuestMemory m = Mem();
  RateLimiter::TimePoint now{std::chrono::seconds(1)};
  auto rng = std::make_unique<Rng>(RateLimiterConfig{.bytes = {.rate = 1000, .burst = 1024}},
                                   [&] { return now; });
  std::vector<std::pair<size_t, std::chrono::nanoseconds>> retries;
  rng->set_retry([&](size_t q, std::chrono::nanoseconds d) { retries.emplace_back(q, d); });
  MmioTransport t("virtio-rng", m, std::move(rng), nullptr);
  DriverInit(t);
  // Three 512-byte requests: the burst serves two, the third waits.
  for (uint16_t i = 0; i < 3; ++i) {
    PutDesc(m, i, kBuf + 0x400ULL * i, 512, kDescFlagWrite, 0);
    Publish(m, i);
  }
  W(t, reg::kQueueNotify, 0);
  EXPECT_EQ(Get<uint16_t>(m, kUsed + 2), 2);
  ASSERT_EQ(retries.size(), 1u);
  EXPECT_EQ(retries[0].first, 0u);
  EXPECT_EQ(retries[0].second, std::chrono::milliseconds(512));
  EXPECT_EQ(t.last_error(), "");  // throttled, not broken
  now += std::chrono::milliseconds(511);
  t.Kick(0);
  EXPECT_EQ(Get<uint16_t>(m, kUsed + 2), 2);
  now += std::chrono::milliseconds(1);
  t.Kick(0);  // what the retry timer does
  EXPECT_EQ(Get<uint16_t>(m, kUsed + 2), 3);
  EXPECT_EQ(Get<uint32_t>(m, kUsed + 4 + 8 * 2 + 4), 512u);
}

TEST(Rng, RateLimitIsSavedAndRestored) {
  GuestMemory m = Mem();
  const RateLimiterConfig limit{.bytes = {.rate = 4096, .burst = 512}, .ops = {.rate = 10}};
  MmioTransport a("virtio-rng", m, std::make_unique<Rng>(limit), nullptr);
  DriverInit(a);
  DeviceState d = a.SaveDevice();
  MmioTransport b("virtio-rng", m, std::make_unique<Rng>(), nullptr);
  ASSERT_TRUE(b.RestoreDevice(d).ok());
  EXPECT_EQ(b.device<Rng>().limit(), limit);
  // A limit given for the restore wins over the snapshot's.
  const RateLimiterConfig flag{.bytes = {.rate = 1}};
  MmioTransport c("virtio-rng", m, std::make_unique<Rng>(flag), nullptr);
  ASSERT_TRUE(c.RestoreDevice(d).ok());
  EXPECT_EQ(c.device<Rng>().limit(), flag);
  // An unlimited rng saves what it always did (nothing of its own).
  MmioTransport e("virtio-rng", m, std::make_unique<Rng>(), nullptr);
  DeviceState plain = e.SaveDevice();
  MmioTransport f("virtio-rng", m, std::make_unique<Rng>(), nullptr);
  ASSERT_TRUE(f.RestoreDevice(plain).ok());
  EXPECT_TRUE(f.device<Rng>().limit().unlimited());
}

TEST(MmioTransport, QueueWithRingsOutsideMemoryNeverBecomesReady) {
  GuestMemory m = Mem();
  MmioTransport t("virtio-rng", m, std::make_unique<Rng>(), nullptr);
  W(t, reg::kStatus, kStatusAcknowledge | kStatusDriver);
  W(t, reg::kDriverFeaturesSel, 1);
  W(t, reg::kDriverFeatures, 1);
  W(t, reg::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  W(t, reg::kQueueNum, kSize);
  W(t, reg::kQueueDescLow, 0);
  W(t, reg::kQueueDescHigh, 1);  // 4 GiB: outside the 1 MiB guest
  W(t, reg::kQueueDriverLow, kAvail);
  W(t, reg::kQueueDeviceLow, kUsed);
  W(t, reg::kQueueReady, 1);
  EXPECT_EQ(R(t, reg::kQueueReady), 0u);
}

TEST(MmioTransport, StateRoundTripsThroughDeviceState) {
  GuestMemory m = Mem();
  MmioTransport a("virtio-rng", m, std::make_unique<Rng>(), nullptr);
  DriverInit(a);
  PutDesc(m, 0, kBuf, 16, kDescFlagWrite, 0);
  Publish(m, 0);
  W(a, reg::kQueueNotify, 0);
  const TransportState before = a.save();
  ASSERT_EQ(before.queues.size(), 1u);
  EXPECT_EQ(before.queues[0].next_avail, 1);
  EXPECT_EQ(before.queues[0].next_used, 1);
  DeviceState d = a.SaveDevice();
  EXPECT_EQ(d.name, "virtio-rng");

  MmioTransport b("virtio-rng", m, std::make_unique<Rng>(), nullptr);
  ASSERT_TRUE(b.RestoreDevice(d).ok());
  EXPECT_EQ(b.save(), before);
  // The restored device keeps serving the same rings where it left off.
  Publish(m, 0);
  W(b, reg::kQueueNotify, 0);
  EXPECT_EQ(Get<uint16_t>(m, kUsed + 2), 2);

  // Truncated, trailing-garbage, wrong-name and wrong-version state is refused.
  DeviceState cut = d;
  cut.bytes.pop_back();
  EXPECT_FALSE(b.RestoreDevice(cut).ok());
  DeviceState extra = d;
  extra.bytes.push_back(0);
  EXPECT_FALSE(b.RestoreDevice(extra).ok());
  DeviceState other = d;
  other.name = "virtio-vsock";
  EXPECT_FALSE(b.RestoreDevice(other).ok());
  DeviceState version = d;
  version.bytes[0] = 99;
  EXPECT_FALSE(b.RestoreDevice(version).ok());
}

}  // namespace
}  // namespace forkd::vmm::virtio

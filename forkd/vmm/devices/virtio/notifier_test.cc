// QueueNotifier against a real MmioTransport + virtio-rng: an eventfd signal
// processes the queue on the notifier thread; nothing is processed while
// paused and the pending signal is processed on resume; MarkAllPending kicks
// every queue; Stop returns while paused.
#include "forkd/vmm/devices/virtio/notifier.h"

#include <chrono>
#include <cstring>
#include <thread>

#include "forkd/vmm/devices/virtio/rng.h"
#include "gtest/gtest.h"

namespace forkd::vmm::virtio {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kDesc = 0x1000;
constexpr uint64_t kAvail = 0x2000;
constexpr uint64_t kUsed = 0x3000;
constexpr uint64_t kBuf = 0x10000;
constexpr uint16_t kSize = 8;
constexpr auto kHangGuard = 10s;

void W(MmioTransport& t, uint64_t off, uint32_t v) {
  uint8_t b[4];
  std::memcpy(b, &v, 4);
  t.Write(off, b);
}

template <typename T>
T Get(const GuestMemory& m, uint64_t gpa) {
  T v;
  std::memcpy(&v, m.host_base() + gpa, sizeof v);
  return v;
}

uint16_t UsedIdx(const GuestMemory& m) {
  return __atomic_load_n(reinterpret_cast<uint16_t*>(m.host_base() + kUsed + 2), __ATOMIC_ACQUIRE);
}

// One 64-byte device-writable buffer made available (descriptor 0).
void PublishBuffer(const GuestMemory& m) {
  ASSERT_TRUE(m.WriteObj<uint64_t>(kDesc, kBuf).ok());
  ASSERT_TRUE(m.WriteObj<uint32_t>(kDesc + 8, 64).ok());
  ASSERT_TRUE(m.WriteObj<uint16_t>(kDesc + 12, kDescFlagWrite).ok());
  const uint16_t idx = Get<uint16_t>(m, kAvail + 2);
  ASSERT_TRUE(m.WriteObj<uint16_t>(kAvail + 4 + 2ULL * (idx % kSize), 0).ok());
  ASSERT_TRUE(m.WriteObj<uint16_t>(kAvail + 2, static_cast<uint16_t>(idx + 1)).ok());
}

bool WaitUsed(const GuestMemory& m, uint16_t want) {
  const auto deadline = std::chrono::steady_clock::now() + kHangGuard;
  while (UsedIdx(m) != want) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

struct Fixture {
  GuestMemory mem = *GuestMemory::Anonymous(1 << 20);
  std::shared_ptr<MmioTransport> t =
      std::make_shared<MmioTransport>("virtio-rng", mem, std::make_unique<Rng>(), nullptr);
  std::unique_ptr<QueueNotifier> n = *QueueNotifier::Create();
  std::vector<int> fds;

  Fixture() {
    W(*t, reg::kStatus, kStatusAcknowledge | kStatusDriver);
    W(*t, reg::kDriverFeaturesSel, 1);
    W(*t, reg::kDriverFeatures, 1);
    W(*t, reg::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
    W(*t, reg::kQueueSel, 0);
    W(*t, reg::kQueueNum, kSize);
    W(*t, reg::kQueueDescLow, kDesc);
    W(*t, reg::kQueueDriverLow, kAvail);
    W(*t, reg::kQueueDeviceLow, kUsed);
    W(*t, reg::kQueueReady, 1);
    W(*t, reg::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
    auto f = n->Add(t);
    if (f.ok()) fds = *f;
  }
};

TEST(QueueNotifier, SignalProcessesTheQueueOnTheNotifierThread) {
  Fixture f;
  ASSERT_EQ(f.fds.size(), 1u);
  ASSERT_TRUE(f.n->Start().ok());
  PublishBuffer(f.mem);
  QueueNotifier::Signal(f.fds[0]);
  ASSERT_TRUE(WaitUsed(f.mem, 1));
  EXPECT_EQ(f.n->kicks(), 1u);
  EXPECT_EQ(f.t->mmio_notifies(), 0u);
  // The MMIO path still works next to it, and is counted.
  PublishBuffer(f.mem);
  W(*f.t, reg::kQueueNotify, 0);
  EXPECT_EQ(UsedIdx(f.mem), 2);
  EXPECT_EQ(f.t->mmio_notifies(), 1u);
}

TEST(QueueNotifier, PausedNotifierLeavesMemoryAloneUntilResume) {
  Fixture f;
  ASSERT_TRUE(f.n->Start().ok());
  f.n->Pause();
  PublishBuffer(f.mem);
  QueueNotifier::Signal(f.fds[0]);
  QueueNotifier::Signal(f.fds[0]);
  // Not a deadline: a notifier that ignored the pause would have answered
  // by now on all but a pathologically slow host, making this fail.
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(UsedIdx(f.mem), 0);
  EXPECT_EQ(f.n->kicks(), 0u);
  f.n->Resume();
  ASSERT_TRUE(WaitUsed(f.mem, 1));
  // Two signals while paused: one counter, one kick.
  EXPECT_EQ(f.n->kicks(), 1u);
  f.n->Pause();
  f.n->Stop();  // must not hang on a parked thread
}

TEST(QueueNotifier, MarkAllPendingKicksEveryQueueOnce) {
  Fixture f;
  PublishBuffer(f.mem);  // made available, never notified (as if the count was lost)
  f.n->MarkAllPending();
  ASSERT_TRUE(f.n->Start().ok());
  ASSERT_TRUE(WaitUsed(f.mem, 1));
  EXPECT_EQ(f.n->kicks(), 1u);
}

TEST(QueueNotifier, AnArmedTimerKicksItsQueueOnce) {
  Fixture f;
  auto timers = f.n->AddTimers(f.t);
  ASSERT_TRUE(timers.ok()) << timers.status();
  ASSERT_EQ(timers->size(), 1u);
  ASSERT_TRUE(f.n->Start().ok());
  PublishBuffer(f.mem);  // never notified: only the timer can run the queue
  ASSERT_TRUE(QueueNotifier::ArmTimer((*timers)[0], 1ms).ok());
  ASSERT_TRUE(WaitUsed(f.mem, 1));
  EXPECT_EQ(f.n->kicks(), 1u);
  // MarkAllPending signals the eventfds, never a timer (that would fail).
  PublishBuffer(f.mem);
  f.n->MarkAllPending();
  ASSERT_TRUE(WaitUsed(f.mem, 2));
}

TEST(QueueNotifier, AddAfterStartIsRefused) {
  Fixture f;
  ASSERT_TRUE(f.n->Start().ok());
  EXPECT_FALSE(f.n->Add(f.t).ok());
  EXPECT_FALSE(f.n->AddTimers(f.t).ok());
  EXPECT_FALSE(f.n->Start().ok());
}

}  // namespace
}  // namespace forkd::vmm::virtio

// Defects the device harnesses found, each reproduced here without the
// fuzzer (the crashing input is also in the harness's corpus, named after
// the defect). Written before the fix; each failed then.
#include <cstring>
#include <memory>

#include "forkd/vmm/devices/virtio/mmio_transport.h"
#include "forkd/vmm/devices/virtio/rng.h"
#include "gtest/gtest.h"

namespace forkd::vmm::virtio {
namespace {

void W(MmioTransport& t, uint64_t off, uint32_t v) {
  uint8_t b[4];
  std::memcpy(b, &v, 4);
  t.Write(off, b);
}

// mmio harness, "a saved state did not restore": a driver that wrote a
// QueueNum above QueueNumMax during queue setup (and never made the queue
// ready) left a size in the transport that its own restore refuses as
// corrupt, so the guest could make every snapshot of its VM unrestorable.
TEST(FoundDefects, OversizedQueueNumDoesNotMakeTheSnapshotUnrestorable) {
  GuestMemory m = *GuestMemory::Anonymous(1 << 16);
  MmioTransport a("virtio-rng", m, std::make_unique<Rng>(), nullptr);
  W(a, reg::kStatus, kStatusAcknowledge | kStatusDriver);
  W(a, reg::kDriverFeaturesSel, 1);
  W(a, reg::kDriverFeatures, 1);
  W(a, reg::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  W(a, reg::kQueueSel, 0);
  W(a, reg::kQueueNum, Rng::kQueueSize + 1);
  W(a, reg::kQueueDescLow, 0x1000);
  W(a, reg::kQueueDriverLow, 0x2000);
  W(a, reg::kQueueDeviceLow, 0x3000);
  W(a, reg::kQueueReady, 1);
  uint8_t ready[4];
  a.Read(reg::kQueueReady, ready);
  EXPECT_EQ(ready[0], 0) << "a queue larger than QueueNumMax must not become ready";

  MmioTransport b("virtio-rng", m, std::make_unique<Rng>(), nullptr);
  const absl::Status restored = b.RestoreDevice(a.SaveDevice());
  EXPECT_TRUE(restored.ok()) << restored;
  EXPECT_EQ(b.save(), a.save());
}

// net harness, UBSan "null pointer passed as argument 2" in
// GuestMemory::Write: an empty span (a zero-length buffer, whose data() is
// null) reached memcpy, which is undefined even for 0 bytes. Fails under
// scripts/sanitize (UBSan, halt_on_error) before the fix.
TEST(FoundDefects, WritingNothingToGuestMemoryIsDefined) {
  GuestMemory m = *GuestMemory::Anonymous(1 << 16);
  EXPECT_TRUE(m.Write(0x100, std::span<const uint8_t>()).ok());
  EXPECT_TRUE(m.Write(m.size(), std::span<const uint8_t>()).ok());
  EXPECT_FALSE(m.Write(m.size() + 1, std::span<const uint8_t>()).ok());
}

}  // namespace
}  // namespace forkd::vmm::virtio

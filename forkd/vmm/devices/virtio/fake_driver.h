// Test-only: a stand-in for a guest's virtio driver, for device unit tests.
// It keeps split rings for each queue at fixed addresses of a real
// (anonymous) GuestMemory and drives the device through the transport's
// registers, the way a polling guest driver would.
//
// Layout: queue q's descriptor table at QueueBase(q), its avail ring at
// +0x400 and its used ring at +0x800; buffers where the test's `buf_base`
// function says.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "forkd/vmm/devices/virtio/mmio_transport.h"
#include "forkd/vmm/vstate/memory.h"
#include "gtest/gtest.h"

namespace forkd::vmm::virtio {

inline constexpr uint16_t kFakeQueueSize = 8;

inline uint64_t QueueBase(int q) { return 0x1000 + 0x1000ULL * q; }

// One descriptor of a chain the fake driver posts.
struct FakeDesc {
  uint32_t len;
  bool writable;
  uint64_t addr = 0;  // 0: the buffer's default address, buf_base(q, id)
};

class FakeDriver {
 public:
  using BufBaseFn = uint64_t (*)(int q, int i);

  // Negotiates VIRTIO_F_VERSION_1 plus `driver_features` (low 32 bits), sets
  // up `queues` queues of kFakeQueueSize entries, and sets DRIVER_OK.
  FakeDriver(MmioTransport& t, const GuestMemory& m, int queues, uint32_t driver_features,
             BufBaseFn buf_base)
      : t_(t), m_(m), buf_base_(buf_base), seen_(static_cast<size_t>(queues), 0) {
    W(reg::kStatus, kStatusAcknowledge | kStatusDriver);
    W(reg::kDriverFeaturesSel, 1);
    W(reg::kDriverFeatures, 1);
    W(reg::kDriverFeaturesSel, 0);
    W(reg::kDriverFeatures, driver_features);
    W(reg::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
    for (int q = 0; q < queues; ++q) {
      W(reg::kQueueSel, q);
      W(reg::kQueueNum, kFakeQueueSize);
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

  // Publishes a chain of descriptors first_id, first_id+1, ... on queue q.
  void Post(int q, uint16_t first_id, const std::vector<FakeDesc>& chain) {
    for (size_t k = 0; k < chain.size(); ++k) {
      const uint16_t id = static_cast<uint16_t>(first_id + k);
      const uint64_t d = QueueBase(q) + 16ULL * id;
      Put<uint64_t>(d, chain[k].addr != 0 ? chain[k].addr : buf_base_(q, id));
      Put<uint32_t>(d + 8, chain[k].len);
      const bool more = k + 1 < chain.size();
      Put<uint16_t>(d + 12, static_cast<uint16_t>((chain[k].writable ? 2 : 0) | (more ? 1 : 0)));
      Put<uint16_t>(d + 14, static_cast<uint16_t>(more ? id + 1 : 0));
    }
    const uint64_t avail = QueueBase(q) + 0x400;
    const uint16_t idx = Get<uint16_t>(avail + 2);
    Put<uint16_t>(avail + 4 + 2ULL * (idx % kFakeQueueSize), first_id);
    Put<uint16_t>(avail + 2, static_cast<uint16_t>(idx + 1));
  }

  // {id, len} of the used elements on queue q since the last call.
  std::vector<std::pair<uint32_t, uint32_t>> Used(int q) {
    std::vector<std::pair<uint32_t, uint32_t>> out;
    const uint64_t used = QueueBase(q) + 0x800;
    uint16_t& seen = seen_[static_cast<size_t>(q)];
    while (seen != Get<uint16_t>(used + 2)) {
      const uint64_t e = used + 4 + 8ULL * (seen % kFakeQueueSize);
      out.emplace_back(Get<uint32_t>(e), Get<uint32_t>(e + 4));
      ++seen;
    }
    return out;
  }

  std::string Bytes(uint64_t gpa, size_t len) {
    return {reinterpret_cast<const char*>(m_.host_base() + gpa), len};
  }
  void Fill(uint64_t gpa, const std::string& s) {
    ASSERT_TRUE(m_.Write(gpa, {reinterpret_cast<const uint8_t*>(s.data()), s.size()}).ok());
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
  BufBaseFn buf_base_;
  std::vector<uint16_t> seen_;  // per queue
};

}  // namespace forkd::vmm::virtio

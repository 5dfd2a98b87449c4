// A guest virtio driver for the harnesses (no gtest, unlike the unit tests'
// fake_driver.h): negotiates features, lays out split rings at fixed guest
// addresses, posts descriptor chains and reads the used rings back. It
// writes guest memory only through GuestMemory's checked Write, like a
// guest writing its own RAM; what it posts may still be hostile (any
// address or length), and only the device's own checks stand between that
// and host memory.
//
// Layout: queue q's descriptor table at QueueBase(q), its avail ring at
// +0x400, its used ring at +0x800 (room for kMaxQueueSize entries); each
// descriptor id of each queue owns a buffer slot of kSlotSize bytes from
// kDataStart on. An id is reused only after the device returned its chain,
// so the buffers the device may still write never overlap (unless a
// descriptor is longer than its slot: see ChainDesc::in_slot).
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "forkd/vmm/devices/virtio/mmio_transport.h"
#include "forkd/vmm/vstate/memory.h"

namespace forkd::vmm::fuzz {

inline constexpr uint16_t kMaxQueueSize = 16;
inline constexpr uint64_t kDataStart = 0x8000;
inline constexpr uint64_t kSlotSize = 2048;
constexpr uint64_t QueueBase(size_t q) { return 0x1000 * (q + 1); }
constexpr uint64_t SlotAddr(size_t q, uint16_t id) {
  return kDataStart + (q * kMaxQueueSize + id) * kSlotSize;
}
// Guest memory the layout needs for `queues` queues.
constexpr uint64_t MemoryFor(size_t queues) {
  return kDataStart + queues * kMaxQueueSize * kSlotSize;
}

struct ChainDesc {
  uint64_t addr = 0;  // ignored when in_slot: Post puts the slot's address here
  uint32_t len = 0;
  bool writable = false;
  bool in_slot = true;
  std::vector<uint8_t> fill;  // written at the buffer's address by Post
  // Within its slot, so no other live buffer shares its bytes.
  bool exclusive() const { return in_slot && len <= kSlotSize; }
};

struct UsedElem {
  uint32_t id = 0;
  uint32_t len = 0;
  // What was posted under that head (empty when the head was never posted:
  // the device made it up).
  std::vector<ChainDesc> posted;
};

class RingDriver {
 public:
  RingDriver(const GuestMemory& mem, virtio::MmioTransport* t) : t_(t), mem_(mem) {}
  // Drives another transport over the same rings (a restored device).
  void set_transport(virtio::MmioTransport& t) { t_ = &t; }

  uint32_t R(uint64_t off);
  void W(uint64_t off, uint32_t v);

  // Status 0, then ACKNOWLEDGE|DRIVER, VERSION_1 + `features_lo`,
  // FEATURES_OK, `queues` queues of `size` entries, DRIVER_OK. Returns the
  // status read back (DRIVER_OK clear when the device refused).
  uint32_t Init(size_t queues, uint16_t size, uint32_t features_lo);

  void Fill(uint64_t gpa, std::span<const uint8_t> bytes);

  // Publishes `chain` on queue q under free descriptor ids (ids come back
  // when the device returns the chain, as with a real driver). Returns false
  // (nothing posted) when the chain is empty or not enough ids are free.
  bool Post(size_t q, const std::vector<ChainDesc>& chain);
  // Used elements since the last call (`posted` with the resolved addresses).
  std::vector<UsedElem> TakeUsed(size_t q);

  uint16_t size(size_t q) const { return q < queues_.size() ? queues_[q].size : 0; }

 private:
  struct Ring {
    uint16_t size = 0;
    uint16_t avail_idx = 0;
    uint16_t used_seen = 0;
    std::vector<uint16_t> free_ids;  // descriptors not in any posted chain
    struct Posted {
      std::vector<uint16_t> ids;
      std::vector<ChainDesc> descs;
    };
    std::map<uint16_t, Posted> posted;  // by head
  };
  template <typename T>
  void Put(uint64_t gpa, T v) {
    (void)mem_.WriteObj(gpa, v);
  }
  template <typename T>
  T Get(uint64_t gpa) const;

  virtio::MmioTransport* t_;
  const GuestMemory& mem_;
  std::vector<Ring> queues_;
};

}  // namespace forkd::vmm::fuzz

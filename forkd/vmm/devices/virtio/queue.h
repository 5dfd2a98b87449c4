// A split virtqueue (virtio 1.x, 2.6) read and written in guest memory.
//
// Everything the guest controls is untrusted: ring addresses, the avail
// index, descriptor addresses, lengths, flags and `next` links. Every guest
// address is bounds-checked against guest RAM before it is touched, a chain
// may hold at most `size` descriptors (so a `next` loop ends), and any
// inconsistency is an error the transport turns into DEVICE_NEEDS_RESET
// rather than host memory access or an endless walk.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "forkd/vmm/vstate/memory.h"

namespace forkd::vmm::virtio {

inline constexpr uint16_t kDescFlagNext = 1;
inline constexpr uint16_t kDescFlagWrite = 2;
inline constexpr uint16_t kDescFlagIndirect = 4;

// What the driver configured, plus the device's ring positions: exactly the
// part of a queue a snapshot must carry.
struct QueueState {
  uint16_t max_size = 0;  // device limit (QueueNumMax)
  uint16_t size = 0;      // driver's choice (QueueNum)
  bool ready = false;
  uint64_t desc_addr = 0;
  uint64_t avail_addr = 0;
  uint64_t used_addr = 0;
  uint16_t next_avail = 0;  // next avail ring entry the device consumes
  uint16_t next_used = 0;   // next used ring entry the device fills

  bool operator==(const QueueState&) const = default;
};

struct Descriptor {
  uint64_t addr = 0;
  uint32_t len = 0;
  bool device_writable = false;
};

// One available descriptor chain, already validated.
struct DescriptorChain {
  uint16_t head = 0;
  std::vector<Descriptor> descriptors;
};

class Queue {
 public:
  explicit Queue(uint16_t max_size) { s_.max_size = max_size; }

  QueueState& state() { return s_; }
  const QueueState& state() const { return s_; }
  // Back to the power-on state (device reset), keeping max_size.
  void Reset();

  // Size is a power of two within 1..max_size and the three rings lie
  // inside guest memory with their required alignment.
  absl::Status Validate(const GuestMemory& mem) const;

  // The next available chain, nullopt when the driver published none, or an
  // error when the guest's rings or descriptors are malformed.
  absl::StatusOr<std::optional<DescriptorChain>> Pop(const GuestMemory& mem);

  // How many chains the driver has made available that the device has not
  // popped yet (avail idx - next_avail), without touching them; an error
  // when the rings are malformed or the count exceeds the queue size.
  absl::StatusOr<uint16_t> Available(const GuestMemory& mem) const;

  // Puts the last `n` popped chains back (the device will pop them again):
  // a rate-limited device that cannot serve a chain yet, or a look at what
  // the driver posted.
  void UndoPop(uint16_t n = 1) { s_.next_avail = static_cast<uint16_t>(s_.next_avail - n); }

  // Returns a chain to the driver with `written` bytes filled.
  absl::Status PushUsed(const GuestMemory& mem, uint16_t head, uint32_t written);

 private:
  QueueState s_;
};

}  // namespace forkd::vmm::virtio

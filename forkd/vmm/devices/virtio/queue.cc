#include "forkd/vmm/devices/virtio/queue.h"

#include <atomic>
#include <bit>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"

namespace forkd::vmm::virtio {
namespace {

// Split-ring layout (virtio 1.x 2.6): descriptor table of 16-byte entries;
// avail = flags, idx, ring[size], used_event; used = flags, idx,
// ring[size] of {id, len}, avail_event.
constexpr uint64_t kDescSize = 16;
constexpr uint64_t kRingHeader = 4;  // flags + idx
constexpr uint64_t kUsedElemSize = 8;

uint64_t DescTableBytes(uint16_t size) { return kDescSize * size; }
uint64_t AvailBytes(uint16_t size) { return kRingHeader + 2ULL * size + 2; }
uint64_t UsedBytes(uint16_t size) { return kRingHeader + kUsedElemSize * size + 2; }

// Guest memory is shared with a running vCPU: read and write the rings
// through memcpy on checked spans, never through references kept across
// calls.
template <typename T>
absl::StatusOr<T> Load(const GuestMemory& mem, uint64_t gpa) {
  FORKD_ASSIGN_OR_RETURN(auto s, mem.Slice(gpa, sizeof(T)));
  T v;
  std::memcpy(&v, s.data(), sizeof(T));
  return v;
}

template <typename T>
absl::Status Store(const GuestMemory& mem, uint64_t gpa, T v) {
  FORKD_ASSIGN_OR_RETURN(auto s, mem.Slice(gpa, sizeof(T)));
  std::memcpy(s.data(), &v, sizeof(T));
  return absl::OkStatus();
}

absl::Status CheckRing(const GuestMemory& mem, const char* what, uint64_t addr, uint64_t len,
                       uint64_t align) {
  if (addr % align != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtqueue ", what, " at ", absl::Hex(addr), " is not ", align, "-aligned"));
  }
  return Annotate(mem.Slice(addr, len).status(), absl::StrCat("virtqueue ", what));
}

}  // namespace

void Queue::Reset() {
  const uint16_t max = s_.max_size;
  s_ = QueueState{};
  s_.max_size = max;
}

absl::Status Queue::Validate(const GuestMemory& mem) const {
  if (s_.size == 0 || s_.size > s_.max_size || !std::has_single_bit(s_.size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtqueue size ", s_.size, " is not a power of two in 1..", s_.max_size));
  }
  FORKD_RETURN_IF_ERROR(
      CheckRing(mem, "descriptor table", s_.desc_addr, DescTableBytes(s_.size), 16));
  FORKD_RETURN_IF_ERROR(CheckRing(mem, "avail ring", s_.avail_addr, AvailBytes(s_.size), 2));
  return CheckRing(mem, "used ring", s_.used_addr, UsedBytes(s_.size), 4);
}

absl::StatusOr<uint16_t> Queue::Available(const GuestMemory& mem) const {
  FORKD_RETURN_IF_ERROR(Validate(mem));
  FORKD_ASSIGN_OR_RETURN(uint16_t avail_idx, Load<uint16_t>(mem, s_.avail_addr + 2));
  const uint16_t pending = static_cast<uint16_t>(avail_idx - s_.next_avail);
  if (pending > s_.size) {
    return absl::InvalidArgumentError(absl::StrCat("avail idx ", avail_idx, " is ", pending,
                                                   " ahead of the device, queue size ", s_.size));
  }
  return pending;
}

absl::StatusOr<std::optional<DescriptorChain>> Queue::Pop(const GuestMemory& mem) {
  // Re-validated on every pop: the checks are cheap, and it keeps a restored
  // or reconfigured queue from being walked with stale assumptions.
  FORKD_RETURN_IF_ERROR(Validate(mem));
  FORKD_ASSIGN_OR_RETURN(uint16_t avail_idx, Load<uint16_t>(mem, s_.avail_addr + 2));
  const uint16_t pending = static_cast<uint16_t>(avail_idx - s_.next_avail);
  if (pending == 0) return std::nullopt;
  if (pending > s_.size) {
    return absl::InvalidArgumentError(absl::StrCat("avail idx ", avail_idx, " is ", pending,
                                                   " ahead of the device, queue size ", s_.size));
  }
  // Ring entries written before the index was published must be seen after it.
  std::atomic_thread_fence(std::memory_order_acquire);
  FORKD_ASSIGN_OR_RETURN(uint16_t head, Load<uint16_t>(mem, s_.avail_addr + kRingHeader +
                                                                2ULL * (s_.next_avail % s_.size)));
  DescriptorChain chain;
  chain.head = head;
  uint16_t index = head;
  while (true) {
    if (index >= s_.size) {
      return absl::InvalidArgumentError(
          absl::StrCat("descriptor index ", index, " outside queue of ", s_.size));
    }
    // A chain visits each descriptor at most once, so more than `size`
    // entries means a `next` loop.
    if (chain.descriptors.size() >= s_.size) {
      return absl::InvalidArgumentError(
          absl::StrCat("descriptor chain from ", head, " is longer than the queue (a loop)"));
    }
    const uint64_t at = s_.desc_addr + kDescSize * index;
    FORKD_ASSIGN_OR_RETURN(uint64_t addr, Load<uint64_t>(mem, at));
    FORKD_ASSIGN_OR_RETURN(uint32_t len, Load<uint32_t>(mem, at + 8));
    FORKD_ASSIGN_OR_RETURN(uint16_t flags, Load<uint16_t>(mem, at + 12));
    FORKD_ASSIGN_OR_RETURN(uint16_t next, Load<uint16_t>(mem, at + 14));
    if (flags & kDescFlagIndirect) {
      // VIRTIO_F_INDIRECT_DESC is never offered.
      return absl::InvalidArgumentError("indirect descriptor without VIRTIO_F_INDIRECT_DESC");
    }
    if (!mem.Slice(addr, len).ok()) {
      return absl::InvalidArgumentError(absl::StrCat("descriptor ", index, " buffer [",
                                                     absl::Hex(addr), ", +", len,
                                                     ") is outside guest memory"));
    }
    chain.descriptors.push_back({addr, len, (flags & kDescFlagWrite) != 0});
    if (!(flags & kDescFlagNext)) break;
    index = next;
  }
  ++s_.next_avail;
  return chain;
}

absl::Status Queue::PushUsed(const GuestMemory& mem, uint16_t head, uint32_t written) {
  FORKD_RETURN_IF_ERROR(Validate(mem));
  if (head >= s_.size) {
    return absl::InvalidArgumentError(absl::StrCat("used head ", head, " outside queue"));
  }
  const uint64_t elem = s_.used_addr + kRingHeader + kUsedElemSize * (s_.next_used % s_.size);
  FORKD_RETURN_IF_ERROR(Store<uint32_t>(mem, elem, head));
  FORKD_RETURN_IF_ERROR(Store<uint32_t>(mem, elem + 4, written));
  // The element (and the buffer contents) must be visible before the index.
  std::atomic_thread_fence(std::memory_order_release);
  ++s_.next_used;
  return Store<uint16_t>(mem, s_.used_addr + 2, s_.next_used);
}

}  // namespace forkd::vmm::virtio

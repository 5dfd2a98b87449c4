// Harness (b): a split virtqueue parsed from fuzzed guest memory.
//
// Input: the queue's configuration (max size, size, ring addresses: small
// aligned, arbitrary 64-bit, or at the very end of guest memory; next
// avail/used), then the guest memory image (copied at address 0: descriptor
// tables with loops, out-of-range addresses, indirect flags, huge lengths;
// avail indices that wrap). The queue is popped until it is empty or
// refuses, and each chain is returned with a fuzzed length.
//
// Promises checked: every descriptor Pop returns lies inside guest memory
// (no wrap-around), a chain is never longer than the queue and its head is
// inside it, a refused Pop consumes nothing, UndoPop + Pop yields the same
// chain, PushUsed writes only the used ring and publishes the index it
// reports. ASan/UBSan check the rest (no access outside the mapping).
#include <algorithm>
#include <cstring>

#include "forkd/vmm/devices/virtio/queue.h"
#include "forkd/vmm/fuzz/check.h"
#include "forkd/vmm/fuzz/entries.h"
#include "forkd/vmm/fuzz/fuzz_input.h"
#include "forkd/vmm/fuzz/guest_arena.h"

namespace forkd::vmm::fuzz {
namespace {

using virtio::DescriptorChain;
using virtio::Queue;

constexpr uint64_t kMemSize = 16 * 1024;

uint64_t Address(FuzzInput& in) {
  switch (in.U8() % 4) {
    case 0:
      return in.U16() % kMemSize;  // anywhere, maybe misaligned
    case 1:
      return kMemSize - in.U8();  // at the very end (straddling it)
    case 2:
      return in.U64();  // anything, including wrap-around sums
    default:
      return (in.U16() % kMemSize) & ~uint64_t{15};  // aligned for every ring
  }
}

bool SameChain(const DescriptorChain& a, const DescriptorChain& b) {
  if (a.head != b.head || a.descriptors.size() != b.descriptors.size()) return false;
  for (size_t i = 0; i < a.descriptors.size(); ++i) {
    const auto& x = a.descriptors[i];
    const auto& y = b.descriptors[i];
    if (x.addr != y.addr || x.len != y.len || x.device_writable != y.device_writable) return false;
  }
  return true;
}

}  // namespace

int VirtqueueOneInput(const uint8_t* data, size_t size) {
  const GuestMemory& mem = FreshGuestMemory<kMemSize>();
  FuzzInput in(data, size);
  const uint16_t max_size = static_cast<uint16_t>(1 + in.U16() % 1024);
  Queue q(max_size);
  auto& s = q.state();
  s.size = in.U8() % 2 == 0 ? static_cast<uint16_t>(1u << (in.U8() % 11)) : in.U16();
  s.desc_addr = Address(in);
  s.avail_addr = Address(in);
  s.used_addr = Address(in);
  s.next_avail = in.U16();
  s.next_used = in.U16();
  s.ready = true;
  const uint8_t pushes = in.U8();
  const auto image = in.Bytes(kMemSize);
  if (!image.empty()) std::memcpy(mem.host_base(), image.data(), image.size());

  const bool valid = q.Validate(mem).ok();
  // Enough pops to wrap the avail ring more than once.
  for (int n = 0; n < 2 * 1024 + 2; ++n) {
    const uint16_t before = s.next_avail;
    auto chain = q.Pop(mem);
    if (!chain.ok()) {
      FORKD_FUZZ_CHECK(s.next_avail == before, "a refused Pop consumed an entry");
      break;
    }
    FORKD_FUZZ_CHECK(valid, "Pop served a queue that does not validate");
    if (!chain->has_value()) break;
    const DescriptorChain& c = **chain;
    ++reached().chains_popped;
    FORKD_FUZZ_CHECK(s.next_avail == static_cast<uint16_t>(before + 1), "Pop consumed != 1");
    FORKD_FUZZ_CHECK(c.head < s.size, "chain head outside the queue");
    FORKD_FUZZ_CHECK(!c.descriptors.empty(), "empty chain");
    FORKD_FUZZ_CHECK(c.descriptors.size() <= s.size, "chain longer than the queue");
    for (const auto& d : c.descriptors) {
      FORKD_FUZZ_CHECK(d.addr <= mem.size() && d.len <= mem.size() - d.addr,
                       "descriptor outside guest memory");
    }
    // Nothing changed in memory: the same chain again.
    q.UndoPop();
    auto again = q.Pop(mem);
    FORKD_FUZZ_CHECK(again.ok() && again->has_value() && SameChain(c, **again),
                     "UndoPop + Pop differ");
    if (n < pushes) {
      const uint16_t used_before = s.next_used;
      const uint32_t written = c.descriptors.front().len;
      if (q.PushUsed(mem, c.head, written).ok()) {
        FORKD_FUZZ_CHECK(s.next_used == static_cast<uint16_t>(used_before + 1),
                         "PushUsed moved next_used by != 1");
        uint16_t published;
        std::memcpy(&published, mem.host_base() + s.used_addr + 2, 2);
        FORKD_FUZZ_CHECK(published == s.next_used, "used idx in memory != next_used");
      }
    }
  }
  // A head the queue does not have is refused, never written.
  FORKD_FUZZ_CHECK(!q.PushUsed(mem, s.size, 0).ok(), "PushUsed accepted a head >= size");
  return 0;
}

}  // namespace forkd::vmm::fuzz

// The boot GDT: what a 64-bit boot-protocol kernel expects to find loaded
// (flat code at selector 0x10, flat data at 0x18), and the conversion from a
// descriptor to the kvm_segment KVM_SET_SREGS wants.
#pragma once

#include <linux/kvm.h>

#include <array>
#include <cstdint>

namespace forkd::vmm::gdt {

// Encodes a segment descriptor from its flags (G/DB/L/AVL + access byte,
// as 0xFAA: flags nibble << 12 | access), base and limit.
constexpr uint64_t Entry(uint16_t flags, uint32_t base, uint32_t limit) {
  return ((uint64_t(base) & 0xff000000) << 32) | ((uint64_t(flags) & 0xf0ff) << 40) |
         ((uint64_t(limit) & 0x000f0000) << 32) | ((uint64_t(base) & 0x00ffffff) << 16) |
         (uint64_t(limit) & 0x0000ffff);
}

inline constexpr uint16_t kCodeSelector = 0x10;
inline constexpr uint16_t kDataSelector = 0x18;
inline constexpr uint16_t kTssSelector = 0x20;

// null, null, code64 (0x10), data (0x18), TSS (0x20).
inline constexpr std::array<uint64_t, 4 + 1> kBootGdt = {
    0,
    0,
    Entry(0xa09b, 0, 0xfffff),  // present, DPL0, code exec/read, accessed, L=1, G=1
    Entry(0xc093, 0, 0xfffff),  // present, DPL0, data r/w, accessed, D/B=1, G=1
    Entry(0x808b, 0, 0xfffff),  // present, busy 64-bit TSS
};

// The kvm_segment matching descriptor `entry` at GDT index `index`.
kvm_segment SegmentFromEntry(uint64_t entry, uint8_t index);

}  // namespace forkd::vmm::gdt

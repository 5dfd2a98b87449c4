#include "forkd/vmm/arch/x86_64/gdt.h"

namespace forkd::vmm::gdt {

kvm_segment SegmentFromEntry(uint64_t entry, uint8_t index) {
  kvm_segment s{};
  s.base = ((entry >> 16) & 0xffffff) | (((entry >> 56) & 0xff) << 24);
  uint32_t limit = static_cast<uint32_t>((entry & 0xffff) | (((entry >> 48) & 0xf) << 16));
  s.g = (entry >> 55) & 1;
  // With G=1 the limit counts 4 KiB units; KVM wants it in bytes.
  s.limit = s.g ? (limit << 12) | 0xfff : limit;
  s.selector = static_cast<uint16_t>(index * 8);
  s.type = (entry >> 40) & 0xf;
  s.s = (entry >> 44) & 1;
  s.dpl = (entry >> 45) & 3;
  s.present = (entry >> 47) & 1;
  s.avl = (entry >> 52) & 1;
  s.l = (entry >> 53) & 1;
  s.db = (entry >> 54) & 1;
  s.unusable = s.present ? 0 : 1;
  return s;
}

}  // namespace forkd::vmm::gdt

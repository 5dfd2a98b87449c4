#include "forkd/vmm/arch/x86_64/regs.h"

#include "common/errno_status.h"
#include "forkd/vmm/arch/x86_64/gdt.h"
#include "forkd/vmm/arch/x86_64/layout.h"
#include "forkd/vmm/arch/x86_64/page_tables.h"

namespace forkd::vmm::regs {

absl::Status WriteBootTables(const GuestMemory& mem) {
  FORKD_RETURN_IF_ERROR(mem.WriteObj(layout::kGdtAddr, gdt::kBootGdt));
  FORKD_RETURN_IF_ERROR(mem.WriteObj(layout::kIdtAddr, uint64_t{0}));
  auto tables = page_tables::BuildIdentityTables();
  FORKD_RETURN_IF_ERROR(mem.WriteObj(layout::kPml4Addr, tables.pml4));
  FORKD_RETURN_IF_ERROR(mem.WriteObj(layout::kPdptAddr, tables.pdpt));
  FORKD_RETURN_IF_ERROR(mem.WriteObj(layout::kPdAddr, tables.pds));
  return absl::OkStatus();
}

void SetupLongModeSregs(kvm_sregs& sregs) {
  const uint8_t code_index = gdt::kCodeSelector / 8;
  const uint8_t data_index = gdt::kDataSelector / 8;
  const uint8_t tss_index = gdt::kTssSelector / 8;
  sregs.gdt.base = layout::kGdtAddr;
  sregs.gdt.limit = sizeof(gdt::kBootGdt) - 1;
  sregs.idt.base = layout::kIdtAddr;
  sregs.idt.limit = sizeof(uint64_t) - 1;

  sregs.cs = gdt::SegmentFromEntry(gdt::kBootGdt[code_index], code_index);
  kvm_segment data = gdt::SegmentFromEntry(gdt::kBootGdt[data_index], data_index);
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
  sregs.tr = gdt::SegmentFromEntry(gdt::kBootGdt[tss_index], tss_index);

  sregs.cr3 = layout::kPml4Addr;
  sregs.cr4 |= kCr4Pae;
  sregs.cr0 |= kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Wp | kCr0Am | kCr0Pg;
  sregs.efer |= kEferLme | kEferLma;
}

kvm_regs BootRegs(uint64_t entry, uint64_t zero_page) {
  kvm_regs r{};
  r.rflags = 0x2;  // reserved bit 1; IF clear
  r.rip = entry;
  r.rsp = layout::kBootStackPointer;
  r.rbp = layout::kBootStackPointer;
  r.rsi = zero_page;
  return r;
}

kvm_fpu BootFpu() {
  kvm_fpu f{};
  f.fcw = 0x37f;
  f.mxcsr = 0x1f80;
  return f;
}

}  // namespace forkd::vmm::regs

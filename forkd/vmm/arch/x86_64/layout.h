// Where the VMM puts things in guest physical memory for the 64-bit Linux
// boot protocol. Every address the boot path writes is named here, so a
// reader can see the whole low-memory map in one place.
#pragma once

#include <cstdint>

namespace forkd::vmm::layout {

inline constexpr uint64_t kPageSize = 4096;
inline constexpr uint64_t kMiB = 1024 * 1024;

// Boot GDT and IDT (the IDT is left empty: the kernel installs its own).
inline constexpr uint64_t kGdtAddr = 0x500;
inline constexpr uint64_t kIdtAddr = 0x520;
// Linux zero page (struct boot_params); rsi points here at entry.
inline constexpr uint64_t kZeroPageAddr = 0x7000;
// Initial stack pointer, below the page tables.
inline constexpr uint64_t kBootStackPointer = 0x8ff0;
// Identity page tables for the low 4 GiB: one PML4, one PDPT, four PDs of
// 2 MiB pages.
inline constexpr uint64_t kPml4Addr = 0x9000;
inline constexpr uint64_t kPdptAddr = 0xa000;
inline constexpr uint64_t kPdAddr = 0xb000;
inline constexpr uint64_t kIdentityMappedBytes = 4ULL << 30;
// Kernel command line, NUL terminated.
inline constexpr uint64_t kCmdlineAddr = 0x20000;
inline constexpr uint64_t kCmdlineMaxSize = 0x10000;
// End of conventional low memory reported in e820 (the EBDA starts here on PCs).
inline constexpr uint64_t kEbdaStart = 0x9fc00;
// ACPI (acpi/tables.h): a reserved e820 range in the BIOS area below 1 MiB.
// The RSDP at its start (Linux also finds it by scanning 0xE0000..0xFFFFF;
// the zero page's acpi_rsdp_addr points at it too), the other tables after
// it, and the VM generation ID's 16 bytes on a page of their own.
inline constexpr uint64_t kAcpiRegionStart = 0xe0000;
inline constexpr uint64_t kAcpiRegionSize = 0x20000;
inline constexpr uint64_t kRsdpAddr = kAcpiRegionStart;
inline constexpr uint64_t kAcpiTablesStart = kAcpiRegionStart + 0x40;
inline constexpr uint64_t kAcpiTablesEnd = 0xef000;
inline constexpr uint64_t kVmGenIdAddr = kAcpiTablesEnd;
// Protected-mode kernel (bzImage payload or vmlinux) goes at 1 MiB.
inline constexpr uint64_t kKernelLoadAddr = 0x100000;
// The 64-bit entry point of a bzImage is 0x200 past its load address.
inline constexpr uint64_t kBzImage64BitEntryOffset = 0x200;
// Guest RAM is one region at GPA 0 and stays below the MMIO hole, which
// holds the virtio-mmio window and the x86 top-of-4GiB area.
inline constexpr uint64_t kMmioHoleStart = 0xc0000000;
inline constexpr uint64_t kMaxGuestMemory = kMmioHoleStart;
inline constexpr uint64_t kVirtioMmioBase = 0xd0000000;
inline constexpr uint64_t kVirtioMmioDeviceSize = 0x1000;
// Each virtio device type has a fixed slot (MMIO window base + slot * size,
// GSI base + slot), so a restored machine recreates every device at the
// address and IRQ its snapshot's guest drivers already use.
inline constexpr uint32_t kVirtioIrqBase = 5;  // above COM1 (4); GSIs < 16 reach PIC and IOAPIC
inline constexpr uint32_t kVirtioRngSlot = 0;
inline constexpr uint32_t kVirtioVsockSlot = 1;
inline constexpr uint32_t kVirtioNetSlot = 2;
constexpr uint64_t VirtioMmioAddr(uint32_t slot) {
  return kVirtioMmioBase + slot * kVirtioMmioDeviceSize;
}
constexpr uint32_t VirtioIrq(uint32_t slot) { return kVirtioIrqBase + slot; }
// The ACPI Generic Event Device's interrupt (acpi/tables.h): raised on restore
// so the guest's vmgenid driver reads the new generation ID.
inline constexpr uint32_t kGedIrq = 10;
// Intel-specific KVM requirements (unused by SVM/PVM but harmless): three
// pages for the real-mode TSS and one for the EPT identity map, at the top of
// the 4 GiB hole where no RAM or device lives.
inline constexpr uint64_t kTssAddr = 0xfffbd000;
inline constexpr uint64_t kIdentityMapAddr = 0xfffbc000;

// Serial and i8042 ports.
inline constexpr uint16_t kCom1Port = 0x3f8;
inline constexpr uint16_t kCom1PortCount = 8;
inline constexpr uint32_t kCom1Irq = 4;
inline constexpr uint16_t kI8042DataPort = 0x60;
inline constexpr uint16_t kI8042CommandPort = 0x64;
// CMOS/RTC index and data ports (devices/rtc.h).
inline constexpr uint16_t kRtcPort = 0x70;

// MMIO alias of COM1 (same device, register stride 1). Why: on kvm_pvm,
// port I/O from guest CPL3 raises #GP even with IOPL=3, and the probe
// guest's payload runs at CPL3; MMIO from CPL3 exits to the VMM natively.
// Linux can use it too (console=uart8250,mmio,0xc0000000).
inline constexpr uint64_t kSerialMmioAddr = kMmioHoleStart;
inline constexpr uint64_t kSerialMmioSize = 0x1000;

inline constexpr int kMaxVcpus = 4;

}  // namespace forkd::vmm::layout

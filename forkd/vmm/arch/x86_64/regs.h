// Register state for entering a kernel through the 64-bit boot protocol:
// long mode with paging on (this host cannot run 32-bit paging), flat
// segments from the boot GDT, rsi = zero page, interrupts off.
#pragma once

#include <linux/kvm.h>

#include <cstdint>

#include "absl/status/status.h"
#include "forkd/vmm/vstate/memory.h"

namespace forkd::vmm::regs {

inline constexpr uint64_t kCr0Pe = 1ULL << 0;
inline constexpr uint64_t kCr0Mp = 1ULL << 1;
inline constexpr uint64_t kCr0Et = 1ULL << 4;
inline constexpr uint64_t kCr0Ne = 1ULL << 5;
inline constexpr uint64_t kCr0Wp = 1ULL << 16;
inline constexpr uint64_t kCr0Am = 1ULL << 18;
inline constexpr uint64_t kCr0Pg = 1ULL << 31;
inline constexpr uint64_t kCr4Pae = 1ULL << 5;
inline constexpr uint64_t kEferLme = 1ULL << 8;
inline constexpr uint64_t kEferLma = 1ULL << 10;

// Writes the boot GDT, an empty IDT and the identity page tables into guest
// memory (shared by all vCPUs).
absl::Status WriteBootTables(const GuestMemory& mem);

// Long-mode sregs on top of what KVM_GET_SREGS returned.
void SetupLongModeSregs(kvm_sregs& sregs);
kvm_regs BootRegs(uint64_t entry, uint64_t zero_page);
kvm_fpu BootFpu();

}  // namespace forkd::vmm::regs

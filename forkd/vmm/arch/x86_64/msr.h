// MSRs the boot path programs, and MSR lists for snapshots.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace forkd::vmm::msr {

inline constexpr uint32_t kIa32SysenterCs = 0x174;
inline constexpr uint32_t kIa32SysenterEsp = 0x175;
inline constexpr uint32_t kIa32SysenterEip = 0x176;
inline constexpr uint32_t kIa32Tsc = 0x10;
inline constexpr uint32_t kIa32MiscEnable = 0x1a0;
inline constexpr uint32_t kMtrrDefType = 0x2ff;
inline constexpr uint32_t kStar = 0xc0000081;
inline constexpr uint32_t kLstar = 0xc0000082;
inline constexpr uint32_t kCstar = 0xc0000083;
inline constexpr uint32_t kSyscallMask = 0xc0000084;
inline constexpr uint32_t kKernelGsBase = 0xc0000102;

inline constexpr uint64_t kMiscEnableFastString = 1;
// MTRRs enabled, default type write-back.
inline constexpr uint64_t kMtrrDefTypeEnabledWb = (1 << 11) | 6;

// kvm_pvm MSRs: readable, absent from KVM_GET_MSR_INDEX_LIST (some are
// read-only). A snapshot must carry them (kvm-feasibility.md).
inline constexpr uint32_t kUnlistedReadable[] = {0x4b564d10, 0x4b564d11, 0x4b564d12, 0x4b564d13};

// MSRs a restore may find KVM refusing to set, because their value belongs
// to the host the snapshot was taken on (documented, entry by entry, in
// forkd/vmm/README.md, "MSRs a restore may skip"). Any other refused MSR
// fails the restore: the guest would run with state it never had.
inline constexpr uint32_t kRestoreMayRefuse[] = {0x4b564d11, 0x4b564d12, 0x4b564d13};
bool IsHostSpecific(uint32_t index);

// The MSR values a vCPU starts with for the 64-bit boot protocol.
std::vector<std::pair<uint32_t, uint64_t>> BootMsrs();

}  // namespace forkd::vmm::msr

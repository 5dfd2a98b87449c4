// C-layout views of the KVM structs that end in a flexible array.
//
// Why: Debian 12's <linux/kvm.h> declares those arrays with
// __DECLARE_FLEX_ARRAY, which in C++ adds a 1-byte empty struct. That
// changes sizeof() (kvm_cpuid2: 12 instead of 8, kvm_msrs: 16 instead of 8,
// kvm_xsave: 4100 instead of 4096), moves the array, and — because _IOWR
// encodes the size — changes the ioctl numbers, so the kernel answers
// EINVAL/ENOTTY. Everything that touches these ioctls uses the definitions
// below, which match the kernel's C layout.
#pragma once

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstdint>

namespace forkd::vmm::kvm_abi {

struct Cpuid2Header {
  uint32_t nent;
  uint32_t padding;
  // kvm_cpuid_entry2 entries[nent] follow.
};
struct MsrsHeader {
  uint32_t nmsrs;
  uint32_t pad;
  // kvm_msr_entry entries[nmsrs] follow.
};
struct MsrListHeader {
  uint32_t nmsrs;
  // uint32_t indices[nmsrs] follow.
};
// The legacy 4 KiB XSAVE area (KVM_GET_XSAVE / KVM_SET_XSAVE).
inline constexpr size_t kXsaveLegacyBytes = 4096;
struct XsaveLegacy {
  uint32_t region[kXsaveLegacyBytes / 4];
};

static_assert(sizeof(Cpuid2Header) == 8 && sizeof(MsrsHeader) == 8 && sizeof(MsrListHeader) == 4);
static_assert(sizeof(kvm_cpuid_entry2) == 40 && sizeof(kvm_msr_entry) == 16);

inline constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, MsrListHeader);
inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, Cpuid2Header);
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, MsrsHeader);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, MsrsHeader);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, Cpuid2Header);
inline constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, XsaveLegacy);
inline constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, XsaveLegacy);
inline constexpr unsigned long kGetXsave2 = _IOR(KVMIO, 0xcf, XsaveLegacy);

}  // namespace forkd::vmm::kvm_abi

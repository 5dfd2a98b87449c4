#include "forkd/vmm/arch/x86_64/msr.h"

namespace forkd::vmm::msr {

bool IsHostSpecific(uint32_t index) {
  for (uint32_t m : kRestoreMayRefuse) {
    if (m == index) return true;
  }
  return false;
}

std::vector<std::pair<uint32_t, uint64_t>> BootMsrs() {
  // The SYSCALL/SYSENTER MSRs start cleared: the kernel programs them.
  return {
      {kIa32SysenterCs, 0},
      {kIa32SysenterEsp, 0},
      {kIa32SysenterEip, 0},
      {kStar, 0},
      {kLstar, 0},
      {kCstar, 0},
      {kSyscallMask, 0},
      {kKernelGsBase, 0},
      {kIa32MiscEnable, kMiscEnableFastString},
      {kMtrrDefType, kMtrrDefTypeEnabledWb},
  };
}

}  // namespace forkd::vmm::msr

#include "forkd/vmm/vstate/kvm.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "forkd/vmm/arch/x86_64/msr.h"
#include "forkd/vmm/vstate/kvm_abi.h"

namespace forkd::vmm {

absl::StatusOr<Kvm> Kvm::Open() {
  Kvm kvm;
  kvm.fd_ = UniqueFd(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!kvm.fd_) return ErrnoStatus(errno, "open /dev/kvm");
  int version = ::ioctl(kvm.fd(), KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    return absl::FailedPreconditionError(
        absl::StrCat("KVM_GET_API_VERSION: got ", version, ", want ", KVM_API_VERSION));
  }
  int mmap_size = ::ioctl(kvm.fd(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (mmap_size <= 0) return ErrnoStatus(errno, "KVM_GET_VCPU_MMAP_SIZE");
  kvm.vcpu_mmap_size_ = static_cast<size_t>(mmap_size);

  int xsave2 = kvm.CheckExtension(KVM_CAP_XSAVE2);
  if (xsave2 > static_cast<int>(kvm_abi::kXsaveLegacyBytes)) {
    kvm.xsave_size_ = static_cast<size_t>(xsave2);
  }

  // KVM_GET_SUPPORTED_CPUID: grow the buffer until it fits (E2BIG).
  for (uint32_t n = 64;; n *= 2) {
    std::vector<uint8_t> buf(sizeof(kvm_abi::Cpuid2Header) + n * sizeof(kvm_cpuid_entry2));
    auto* hdr = reinterpret_cast<kvm_abi::Cpuid2Header*>(buf.data());
    hdr->nent = n;
    if (::ioctl(kvm.fd(), kvm_abi::kGetSupportedCpuid, buf.data()) == 0) {
      kvm.cpuid_.resize(hdr->nent);
      std::memcpy(kvm.cpuid_.data(), buf.data() + sizeof(*hdr),
                  hdr->nent * sizeof(kvm_cpuid_entry2));
      break;
    }
    if (errno != E2BIG || n >= 4096) return ErrnoStatus(errno, "KVM_GET_SUPPORTED_CPUID");
  }

  for (uint32_t n = 64;; n *= 2) {
    std::vector<uint8_t> buf(sizeof(kvm_abi::MsrListHeader) + n * sizeof(uint32_t));
    auto* hdr = reinterpret_cast<kvm_abi::MsrListHeader*>(buf.data());
    hdr->nmsrs = n;
    if (::ioctl(kvm.fd(), kvm_abi::kGetMsrIndexList, buf.data()) == 0) {
      kvm.msrs_.resize(hdr->nmsrs);
      std::memcpy(kvm.msrs_.data(), buf.data() + sizeof(*hdr), hdr->nmsrs * sizeof(uint32_t));
      break;
    }
    if (errno != E2BIG || n >= 16384) return ErrnoStatus(errno, "KVM_GET_MSR_INDEX_LIST");
  }
  for (uint32_t msr : msr::kUnlistedReadable) {
    if (std::find(kvm.msrs_.begin(), kvm.msrs_.end(), msr) == kvm.msrs_.end()) {
      kvm.msrs_.push_back(msr);
    }
  }

  struct stat st {};
  kvm.is_pvm_ = ::stat("/sys/module/kvm_pvm", &st) == 0;
  return kvm;
}

int Kvm::CheckExtension(int cap) const {
  int r = ::ioctl(fd(), KVM_CHECK_EXTENSION, cap);
  return r < 0 ? 0 : r;
}

}  // namespace forkd::vmm

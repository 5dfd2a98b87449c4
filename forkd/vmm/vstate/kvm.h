// Kvm: the /dev/kvm system fd and the host facts read from it once
// (supported CPUID, MSR index list, kvm_run size). Shared read-only by every
// VM the process creates.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace forkd::vmm {

class Kvm {
 public:
  static absl::StatusOr<Kvm> Open();

  int fd() const { return fd_.get(); }
  size_t vcpu_mmap_size() const { return vcpu_mmap_size_; }
  // KVM_GET_SUPPORTED_CPUID entries.
  const std::vector<kvm_cpuid_entry2>& supported_cpuid() const { return cpuid_; }
  // KVM_GET_MSR_INDEX_LIST plus MSRs known to be readable but unlisted.
  const std::vector<uint32_t>& msr_indices() const { return msrs_; }
  // KVM_CHECK_EXTENSION on the system fd (0 when absent).
  int CheckExtension(int cap) const;
  // True on kvm_pvm (software virtualization; see docs/host-facts.md).
  bool is_pvm() const { return is_pvm_; }
  // Bytes of XSAVE state (KVM_CAP_XSAVE2), at least the legacy 4096.
  size_t xsave_size() const { return xsave_size_; }

 private:
  UniqueFd fd_;
  size_t vcpu_mmap_size_ = 0;
  size_t xsave_size_ = 4096;
  bool is_pvm_ = false;
  std::vector<kvm_cpuid_entry2> cpuid_;
  std::vector<uint32_t> msrs_;
};

}  // namespace forkd::vmm

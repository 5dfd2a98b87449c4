#include "forkd/vmm/arch/x86_64/cpuid.h"

#include <cstdint>
#include <cstring>

namespace forkd::vmm::cpuid {
namespace {

constexpr uint32_t kLeaf1EcxHypervisor = 1u << 31;
constexpr uint32_t kLeaf1EdxHtt = 1u << 28;
constexpr uint32_t kKvmSignatureLeaf = 0x40000000;

}  // namespace

std::vector<kvm_cpuid_entry2> ForVcpu(const std::vector<kvm_cpuid_entry2>& supported,
                                      int vcpu_index, int num_vcpus) {
  std::vector<kvm_cpuid_entry2> out = supported;
  bool has_kvm_leaf = false;
  const auto apic_id = static_cast<uint32_t>(vcpu_index);
  for (auto& e : out) {
    switch (e.function) {
      case 1:
        // EBX[31:24] initial APIC id, [23:16] logical processors per package.
        e.ebx = (e.ebx & 0x0000ffff) | (apic_id << 24) | (uint32_t(num_vcpus) << 16);
        e.ecx |= kLeaf1EcxHypervisor;
        if (num_vcpus > 1) e.edx |= kLeaf1EdxHtt;
        break;
      case 0xb:
      case 0x1f:
        // Extended topology: EDX is the x2APIC id of this vCPU.
        e.edx = apic_id;
        break;
      case kKvmSignatureLeaf:
        has_kvm_leaf = true;
        break;
      default:
        break;
    }
  }
  if (!has_kvm_leaf) {
    // Advertise KVM so the guest finds kvmclock ("KVMKVMKVM\0\0\0").
    kvm_cpuid_entry2 sig{};
    sig.function = kKvmSignatureLeaf;
    sig.eax = kKvmSignatureLeaf + 1;
    std::memcpy(&sig.ebx, "KVMK", 4);
    std::memcpy(&sig.ecx, "VMKV", 4);
    std::memcpy(&sig.edx, "M\0\0\0", 4);
    out.push_back(sig);
  }
  return out;
}

}  // namespace forkd::vmm::cpuid

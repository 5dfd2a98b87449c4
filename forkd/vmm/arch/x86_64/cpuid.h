// Per-vCPU CPUID, derived from KVM_GET_SUPPORTED_CPUID: APIC ids, the
// hypervisor bit and KVM's paravirt leaves. (On PVM hosts the guest sees
// host bits whatever we set: DESIGN.md section 7.)
#pragma once

#include <linux/kvm.h>

#include <vector>

namespace forkd::vmm::cpuid {

std::vector<kvm_cpuid_entry2> ForVcpu(const std::vector<kvm_cpuid_entry2>& supported,
                                      int vcpu_index, int num_vcpus);

}  // namespace forkd::vmm::cpuid

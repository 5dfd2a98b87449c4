// Per-vCPU CPUID, derived from KVM_GET_SUPPORTED_CPUID: APIC ids, the
// hypervisor bit and KVM's paravirt leaves. (On PVM hosts the guest sees
// host bits whatever we set: docs/host-facts.md.)
#pragma once

#include <linux/kvm.h>

#include <vector>

#include "absl/status/status.h"

namespace forkd::vmm::cpuid {

std::vector<kvm_cpuid_entry2> ForVcpu(const std::vector<kvm_cpuid_entry2>& supported,
                                      int vcpu_index, int num_vcpus);

// The snapshot keeps each vCPU's CPUID exactly as the guest was given it
// (ForVcpu's output) and a restore sets it again instead of deriving it from
// the restoring host. Before that, CheckProvidable compares it with the
// restoring host's KVM_GET_SUPPORTED_CPUID under this mask: the feature-flag
// registers, where every bit the guest saw must also be supported:
//   0x1.0         ECX, EDX        (minus ECX[27] OSXSAVE and ECX[31] hypervisor,
//                                  EDX[28] HTT: set by the OS or by ForVcpu)
//   0x7.0         EBX, ECX, EDX   (minus ECX[4] OSPKE: set by the OS)
//   0x7.1         EAX
//   0xd.1         EAX             (XSAVEOPT/XSAVEC/XGETBV1/XSAVES)
//   0x80000001.0  ECX, EDX
//   0x80000008.0  EBX
//   0x40000001.0  EAX             (KVM paravirt features: kvmclock, ...)
// Every other leaf (topology, cache and brand strings, XSAVE sizes, which the
// snapshot's CPU identity already pins) is restored as saved without a check.
// FAILED_PRECONDITION naming the leaf, register and missing bits otherwise.
absl::Status CheckProvidable(const std::vector<kvm_cpuid_entry2>& snapshot,
                             const std::vector<kvm_cpuid_entry2>& supported);

}  // namespace forkd::vmm::cpuid

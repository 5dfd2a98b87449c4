// Plain state structs collected from KVM and devices for a snapshot. They
// mirror what forkd/snapshot serialises (VcpuState, VmState, DeviceState) and
// are converted at one seam (persist.cc) so the KVM side never depends on
// the on-disk format.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

namespace forkd::vmm {

struct MsrValue {
  uint32_t index = 0;
  uint64_t value = 0;
};

struct VcpuState {
  kvm_regs regs{};
  kvm_sregs sregs{};
  // XSAVE area (KVM_GET_XSAVE[2]); empty when the host has no XSAVE and
  // `fpu` carries the legacy state instead.
  std::vector<uint8_t> xsave;
  kvm_fpu fpu{};
  kvm_xcrs xcrs{};
  std::vector<MsrValue> msrs;
  kvm_lapic_state lapic{};
  kvm_vcpu_events events{};
  kvm_debugregs debugregs{};
  kvm_mp_state mp_state{};
  uint32_t tsc_khz = 0;
  std::vector<kvm_cpuid_entry2> cpuid;  // as set by KVM_SET_CPUID2
};

struct VmState {
  kvm_irqchip pic_master{};
  kvm_irqchip pic_slave{};
  kvm_irqchip ioapic{};
  kvm_pit_state2 pit{};
  kvm_clock_data clock{};
};

struct DeviceState {
  std::string name;
  std::vector<uint8_t> bytes;
};

}  // namespace forkd::vmm

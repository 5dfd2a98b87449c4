// Vm: one KVM virtual machine fd and the VM-wide kernel objects on it
// (memory slot, in-kernel irqchip, PIT), plus their snapshot state.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "forkd/vmm/vstate/kvm.h"
#include "forkd/vmm/vstate/memory.h"
#include "forkd/vmm/vstate/state.h"

namespace forkd::vmm {

// kvmclock value (ns) for a restore: the saved clock plus the host time
// since it was saved, measured in host TSC cycles at `tsc_khz`. Never goes
// backwards (a TSC that reads lower than the saved one adds nothing).
uint64_t AdvancedKvmclock(uint64_t saved_clock_ns, uint64_t saved_host_tsc, uint64_t now_host_tsc,
                          uint32_t tsc_khz);

class Vm {
 public:
  static absl::StatusOr<Vm> Create(const Kvm& kvm);

  int fd() const { return fd_.get(); }

  // Registers guest RAM as slot 0 at GPA 0. Must come before
  // CreateIrqchip(): on kvm_pvm the other order makes this call ~40x slower.
  absl::Status SetMemory(const GuestMemory& mem);
  // KVM_SET_TSS_ADDR / identity map, KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2.
  absl::Status CreateIrqchipAndPit();
  // Pulses an edge on a GSI of the in-kernel PIC/IOAPIC.
  absl::Status TriggerIrq(uint32_t irq) const;
  // KVM_IRQFD: every write to `event_fd` pulses `gsi` in the kernel, with no
  // exit to user space and no ioctl on the device's hot path.
  absl::Status RegisterIrqfd(int event_fd, uint32_t gsi) const;
  // KVM_IOEVENTFD on MMIO: a 4-byte guest write of `datamatch` at `addr`
  // increments `event_fd` inside the kernel and the vCPU resumes at once
  // (no exit to user space); other writes there still exit as MMIO.
  absl::Status RegisterIoeventfd(int event_fd, uint64_t addr, uint32_t datamatch) const;

  absl::StatusOr<VmState> Save() const;
  // Restores the PIT and the three irqchips (before vCPU state).
  absl::Status RestoreChips(const VmState& state);
  // Restores kvmclock (last), advanced by the host time elapsed since it was
  // saved: on kvm_pvm the guest TSC is the host TSC and cannot be offset, so
  // a restored kvmclock must move forward with it or the guest wedges.
  absl::Status RestoreClock(const VmState& state, uint32_t tsc_khz);

 private:
  explicit Vm(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace forkd::vmm

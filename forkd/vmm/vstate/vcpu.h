// Vcpu: one KVM vCPU fd, its kvm_run mapping, boot configuration, snapshot
// state, and the run loop with pause/resume/stop.
//
// Threading: RunLoop() runs on the vCPU's own thread. RequestPause/Resume/
// RequestStop come from any other thread; they set a flag, set
// kvm_run->immediate_exit and kick the thread with a signal so a KVM_RUN in
// progress returns EINTR. Before parking, the loop runs KVM_RUN once with
// immediate_exit set so the kernel completes any half-done I/O and the saved
// state is consistent (required on kvm_pvm).
#pragma once

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "forkd/vmm/devices/bus.h"
#include "forkd/vmm/mapping.h"
#include "forkd/vmm/vm_exit.h"
#include "forkd/vmm/vstate/kvm.h"
#include "forkd/vmm/vstate/state.h"
#include "forkd/vmm/vstate/vm.h"

namespace forkd::vmm {

class Vcpu {
 public:
  static absl::StatusOr<std::unique_ptr<Vcpu>> Create(const Kvm& kvm, const Vm& vm, int index);

  int index() const { return index_; }
  int fd() const { return fd_.get(); }

  // CPUID for this vCPU (every boot and restore needs it).
  absl::Status SetCpuid(const Kvm& kvm, int num_vcpus);
  // A snapshot's CPUID, set as saved (checked by the caller, cpuid.h).
  absl::Status SetCpuidEntries(std::vector<kvm_cpuid_entry2> entries);
  // KVM_SET_TSC_KHZ when `khz` differs from this vCPU's; KVM accepts it
  // within its tolerance, or with TSC scaling. FAILED_PRECONDITION naming
  // tsc_khz and both values otherwise.
  absl::Status SetTscKhz(uint32_t khz);
  // Long-mode entry state for the boot vCPU; secondary vCPUs keep KVM's
  // INIT state (mp_state uninitialized) and wait for INIT-SIPI from the
  // in-kernel LAPIC, as Linux expects.
  absl::Status ConfigureForBoot(uint64_t entry, uint64_t zero_page);

  absl::StatusOr<VcpuState> Save(const Kvm& kvm) const;
  // KVM_SET_MSRS stops at the first rejected MSR and kvm_pvm rejects some it
  // lists as readable, so a refused MSR is skipped and the rest set on
  // (never "stop at the first"). The indices of rejected MSRs are returned
  // in `rejected_msrs`; the caller decides whether a rejection is allowed
  // (Machine::RestoreState: msr::IsHostSpecific).
  absl::Status Restore(const VcpuState& s, std::vector<uint32_t>* rejected_msrs);

  // Runs the guest until the VM ends (latch set by anyone) or a stop is
  // requested; returns the exit this vCPU observed.
  VmExit RunLoop(const Bus& pio, const Bus& mmio, const ExitLatch& latch);

  // Thread control (any thread). `thread` is the RunLoop thread.
  void SetThread(pthread_t thread);
  void RequestPause();
  // Blocks until the vCPU is parked (or its loop has ended).
  void WaitPaused();
  void Resume();
  void RequestStop();

 private:
  Vcpu(int index, UniqueFd fd, Mapping run);
  kvm_run* run() const { return reinterpret_cast<kvm_run*>(run_map_.data()); }
  void Kick();
  // Handles one KVM exit; returns a VmExit when it ends the VM.
  std::optional<VmExit> HandleExit(const Bus& pio, const Bus& mmio);
  // Completes pending I/O, parks while paused. False when stopping.
  bool ParkIfRequested();

  int index_;
  UniqueFd fd_;
  std::vector<kvm_cpuid_entry2> cpuid_;  // what KVM_SET_CPUID2 last set
  Mapping run_map_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool pause_requested_ = false;
  bool stop_requested_ = false;
  bool parked_ = false;
  bool loop_done_ = false;
  std::atomic<bool> has_thread_{false};
  pthread_t thread_{};
};

}  // namespace forkd::vmm

// Machine: one running microVM. Owns the VM fd, guest memory, vCPUs (one
// thread each), the device buses and devices, and the serial input pump.
// Built by builder.h (cold boot or restore); pause/resume/stop from any
// thread; the first VM-ending event is recorded once in the exit latch.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "forkd/vmm/acpi/tables.h"
#include "forkd/vmm/acpi/vmgenid.h"
#include "forkd/vmm/devices/bus.h"
#include "forkd/vmm/devices/i8042.h"
#include "forkd/vmm/devices/rate_limiter.h"
#include "forkd/vmm/devices/rtc.h"
#include "forkd/vmm/devices/serial.h"
#include "forkd/vmm/devices/virtio/mmio_transport.h"
#include "forkd/vmm/devices/virtio/net.h"
#include "forkd/vmm/devices/virtio/net_pump.h"
#include "forkd/vmm/devices/virtio/notifier.h"
#include "forkd/vmm/devices/virtio/vsock_muxer.h"
#include "forkd/vmm/vm_exit.h"
#include "forkd/vmm/vstate/kvm.h"
#include "forkd/vmm/vstate/memory.h"
#include "forkd/vmm/vstate/state.h"
#include "forkd/vmm/vstate/vcpu.h"
#include "forkd/vmm/vstate/vm.h"
#include "kernel-stage/guest_pin.h"

namespace forkd::vmm {

struct SerialConfig {
  int out_fd = -1;  // borrowed; guest output is written here as it happens
  int in_fd = -1;   // borrowed; bytes read here are fed to the guest
};

// virtio-net's host side: the tap `tap_name` inside the network namespace
// at `netns_path` (empty: the VMM's own), attached, not created (tap.h).
// `mac`: the guest's MAC on boot (random when unset); on restore it
// overrides the snapshot's MAC (config space changes, config generation
// bumps) and unset keeps it.
struct NetConfig {
  std::string tap_name;
  std::string netns_path;
  std::optional<virtio::MacAddress> mac;
  // Already attached by the caller (forkd-vmm's jail attaches it before it
  // drops privileges, jail/tap_attach.h); the machine takes the fd. Null:
  // the machine attaches tap_name itself (virtio::OpenTap).
  std::shared_ptr<UniqueFd> attached_tap;
};

// Token-bucket limits per device (devices/rate_limiter.h). Unset: unlimited
// on boot; on restore, the snapshot's (a set one replaces the snapshot's).
struct RateLimits {
  std::optional<RateLimiterConfig> rng, net_rx, net_tx, vsock;
};

// Which virtio-mmio devices the machine has (each at its fixed slot in
// layout.h). A restore recreates the set its snapshot's device states name.
struct VirtioConfig {
  bool rng = false;
  // virtio-vsock when non-zero (a guest CID >= 3), host side a unix socket
  // listener at vsock_uds_path (see devices/virtio/vsock_muxer.h).
  uint64_t vsock_cid = 0;
  std::string vsock_uds_path;
  // Queue notifications through KVM_IOEVENTFD (see devices/virtio/notifier.h).
  // Off, or refused by KVM, they take the MMIO exit and are processed on the
  // vCPU thread; host-side events use the notifier thread either way.
  bool ioeventfd = true;
  // virtio-net when set (see devices/virtio/net.h).
  std::optional<NetConfig> net;
  RateLimits limits;
};

// Everything a snapshot holds besides guest memory, in VMM terms.
struct MachineState {
  std::vector<VcpuState> vcpus;
  VmState vm;
  std::vector<DeviceState> devices;
};

class Machine {
 public:
  // Creates the VM, registers `mem`, then the irqchip and PIT (in that
  // order, see Vm::SetMemory), the vCPUs with CPUID, and the devices.
  static absl::StatusOr<std::unique_ptr<Machine>> Create(std::shared_ptr<const Kvm> kvm,
                                                         GuestMemory mem, int num_vcpus,
                                                         const SerialConfig& serial,
                                                         const VirtioConfig& virtio = {});
  ~Machine();
  Machine(const Machine&) = delete;
  Machine& operator=(const Machine&) = delete;

  const Kvm& kvm() const { return *kvm_; }
  Vm& vm() { return vm_; }
  const GuestMemory& memory() const { return mem_; }
  std::vector<std::unique_ptr<Vcpu>>& vcpus() { return vcpus_; }
  Serial& serial() { return *serial_; }
  I8042& i8042() { return *i8042_; }
  Bus& pio_bus() { return pio_; }
  Bus& mmio_bus() { return mmio_; }
  const std::vector<std::shared_ptr<virtio::MmioTransport>>& virtio_devices() const {
    return virtio_;
  }
  // `virtio_mmio.device=<size>@<addr>:<irq>` for every virtio device, space
  // separated: how a Linux guest (CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES) finds them.
  std::string VirtioCmdline() const;
  // Every virtio device's MMIO window and GSI, for the ACPI DSDT.
  std::vector<acpi::VirtioMmioDevice> VirtioWindows() const;

  // Gives the machine a VM generation ID (acpi/vmgenid.h): a fresh value now,
  // and on every restore of its snapshots a fresh value plus the GED
  // interrupt before the vCPUs run. Call before Start(), after the ACPI
  // tables that describe it are written.
  absl::Status EnableVmGenId();
  // The current VM generation ID; nullopt without one.
  std::optional<acpi::GenerationId> generation_id() const;
  // Virtqueues whose QueueNotify is an ioeventfd (0 when off or refused).
  int ioeventfd_queues() const { return ioeventfd_queues_; }
  // Queues processed by the notifier thread (guest ioeventfd or host event).
  uint64_t notifier_kicks() const { return notifier_->kicks(); }

  // Starts one thread per vCPU and the serial input pump. After
  // RestoreState, first sets kvmclock (advanced to now), so a machine may be
  // restored ahead of time and started on demand (a standby fork).
  // `vcpus_parked`: the vCPU threads start paused (no guest instruction runs
  // until Resume()), so the caller can seal itself with its own seccomp
  // filter between the threads' creation and the guest's first instruction
  // (forkd-vmm; seccomp/thread_filters.h).
  absl::Status Start(bool vcpus_parked = false);
  // Parks every vCPU with its state complete (see Vcpu). Idempotent.
  void Pause();
  void Resume();
  bool paused() const { return paused_; }
  // Ends the VM (status kStopped unless it already ended) and joins threads.
  // Idempotent and thread-safe.
  VmExit Stop();

  // How the VM ended; nullopt while it runs. WaitForExit blocks (hang guard).
  std::optional<VmExit> exit() const { return latch_.Get(); }
  std::optional<VmExit> WaitForExit(std::chrono::milliseconds timeout) const;

  // What the guest booted (docs/guest-pin.md): set by BuildForBoot from the bytes it loaded, by
  // RestoreSnapshot from the snapshot; stamped into every snapshot of this machine. A machine
  // nobody stamped is unpinned.
  const kernel_stage::GuestPin& guest_pin() const { return guest_pin_; }
  void set_guest_pin(const kernel_stage::GuestPin& pin) { guest_pin_ = pin; }

  // Snapshot state of a paused VM (vCPUs, irqchip/PIT/clock, devices).
  absl::StatusOr<MachineState> SaveState() const;
  // Applies a snapshot's state to a freshly created (not started) machine.
  // Returns the number of host-specific MSRs KVM refused (msr::IsHostSpecific:
  // kvm_pvm's read-only ones); a refusal of any other MSR fails the restore.
  // `new_vm_generation` (always true in forkd-vmm): a snapshot with a VM
  // generation ID gets a fresh value, announced through the GED in Start().
  // False keeps the snapshot's value and raises nothing: forkd-vmm-test-hook's
  // "VMGenID off" fork (RestoreOptions::new_vm_generation).
  absl::StatusOr<int> RestoreState(const MachineState& state, bool new_vm_generation = true);

 private:
  Machine(std::shared_ptr<const Kvm> kvm, Vm vm, GuestMemory mem, const SerialConfig& serial);
  void VcpuThread(Vcpu* vcpu);
  void InputPumpThread();
  void EndVm(VmExit e);
  // A host-side failure that leaves a device dead (its thread ended, or a
  // host call such as getrandom failed): logged, and the VM stops with an
  // error status rather than run on with a device that no longer works.
  void DeviceFailed(const absl::Status& cause);
  // Wires `device` up at `slot` (irqfd, MMIO window, queue notifiers).
  // Returns its transport, which owns the device and lives as long as the
  // machine: reach the device through it (MmioTransport::device), never
  // through a pointer taken before the move, which dangles if this fails.
  absl::StatusOr<virtio::MmioTransport*> AddVirtio(const std::string& name, uint32_t slot,
                                                   std::unique_ptr<virtio::VirtioDevice> device);

  std::shared_ptr<const Kvm> kvm_;
  Vm vm_;
  GuestMemory mem_;
  SerialConfig serial_cfg_;
  Bus pio_;
  Bus mmio_;
  std::shared_ptr<Serial> serial_;
  std::shared_ptr<I8042> i8042_;
  std::shared_ptr<Rtc> rtc_;
  struct VirtioSlot {
    uint64_t addr;
    uint32_t irq;
  };
  std::vector<std::shared_ptr<virtio::MmioTransport>> virtio_;
  std::vector<VirtioSlot> virtio_slots_;  // parallel to virtio_
  std::vector<UniqueFd> irqfds_;          // registered with KVM_IRQFD; live as long as the VM

  // Parallel to virtio_: each queue's notify eventfd (owned by notifier_).
  std::vector<std::vector<int>> notify_fds_;
  bool use_ioeventfd_ = true;
  int ioeventfd_queues_ = 0;
  // After virtio_ (its thread kicks them, joined by Stop() and its
  // destructor) and before vsock_muxer_, whose thread signals its eventfds.
  std::unique_ptr<virtio::QueueNotifier> notifier_;
  // After virtio_: destroyed first, so its thread stops before the device goes.
  std::unique_ptr<virtio::VsockMuxer> vsock_muxer_;
  virtio::MmioTransport* vsock_transport_ = nullptr;
  // Likewise after virtio_: the pump's thread kicks the net transport.
  std::unique_ptr<virtio::NetPump> net_pump_;
  virtio::MmioTransport* net_transport_ = nullptr;
  std::vector<std::unique_ptr<Vcpu>> vcpus_;
  std::vector<std::thread> threads_;
  std::thread input_thread_;
  UniqueFd input_stop_;  // eventfd that wakes the input pump to exit
  ExitLatch latch_;
  std::mutex stop_mu_;  // Stop() may race from a signal thread and main
  bool started_ = false;
  bool paused_ = false;
  // Set by RestoreState; applied by Start() so the guest clock advances by
  // all the host time that passed before the vCPUs run.
  std::optional<VmState> pending_clock_;
  kernel_stage::GuestPin guest_pin_{.unpinned = true};
  uint32_t pending_tsc_khz_ = 0;
  // The VM generation ID device exists (saved as a device state), and a
  // restore replaced its value: Start() raises the GED interrupt.
  bool vmgenid_ = false;
  bool pending_vmgenid_notify_ = false;
};

}  // namespace forkd::vmm

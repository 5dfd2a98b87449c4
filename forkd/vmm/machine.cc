#include "forkd/vmm/machine.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "forkd/vmm/arch/x86_64/cpuid.h"
#include "forkd/vmm/arch/x86_64/layout.h"
#include "forkd/vmm/arch/x86_64/msr.h"
#include "forkd/vmm/devices/virtio/net.h"
#include "forkd/vmm/devices/virtio/rng.h"
#include "forkd/vmm/devices/virtio/tap.h"
#include "forkd/vmm/devices/virtio/vsock.h"
#include "forkd/vmm/seccomp/thread_filters.h"
#include "forkd/vmm/vstate/kick.h"

namespace forkd::vmm {
namespace {

// The VM generation ID's device state: only its presence (the value lives in
// guest memory and is replaced on restore).
constexpr char kVmGenIdDevice[] = "vmgenid";
constexpr uint8_t kVmGenIdStateVersion = 1;

}  // namespace

Machine::Machine(std::shared_ptr<const Kvm> kvm, Vm vm, GuestMemory mem, const SerialConfig& serial)
    : kvm_(std::move(kvm)), vm_(std::move(vm)), mem_(std::move(mem)), serial_cfg_(serial) {}

absl::StatusOr<std::unique_ptr<Machine>> Machine::Create(std::shared_ptr<const Kvm> kvm,
                                                         GuestMemory mem, int num_vcpus,
                                                         const SerialConfig& serial,
                                                         const VirtioConfig& virtio) {
  if (num_vcpus < 1 || num_vcpus > layout::kMaxVcpus) {
    return absl::InvalidArgumentError(
        absl::StrCat("vCPU count ", num_vcpus, " is outside 1..", layout::kMaxVcpus));
  }
  FORKD_ASSIGN_OR_RETURN(Vm vm, Vm::Create(*kvm));
  FORKD_RETURN_IF_ERROR(vm.SetMemory(mem));
  FORKD_RETURN_IF_ERROR(vm.CreateIrqchipAndPit());
  std::unique_ptr<Machine> m(new Machine(std::move(kvm), std::move(vm), std::move(mem), serial));
  FORKD_ASSIGN_OR_RETURN(m->notifier_, virtio::QueueNotifier::Create());
  m->use_ioeventfd_ = virtio.ioeventfd;
  for (int i = 0; i < num_vcpus; ++i) {
    FORKD_ASSIGN_OR_RETURN(auto vcpu, Vcpu::Create(*m->kvm_, m->vm_, i));
    FORKD_RETURN_IF_ERROR(vcpu->SetCpuid(*m->kvm_, num_vcpus));
    m->vcpus_.push_back(std::move(vcpu));
  }

  Machine* self = m.get();
  m->serial_ = std::make_shared<Serial>(serial.out_fd, [self] {
    // A failed IRQ pulse only delays the guest's interrupt-driven I/O; the
    // guest still sees LSR state, so it is not worth ending the VM for.
    (void)self->vm_.TriggerIrq(layout::kCom1Irq);
  });
  m->i8042_ = std::make_shared<I8042>([self] { self->EndVm({ExitKind::kReset, "i8042"}); });
  FORKD_RETURN_IF_ERROR(
      m->pio_.Register(layout::kCom1Port, layout::kCom1PortCount, m->serial_, Serial::kName));
  FORKD_RETURN_IF_ERROR(m->mmio_.Register(layout::kSerialMmioAddr, layout::kSerialMmioSize,
                                          m->serial_, Serial::kName));
  FORKD_RETURN_IF_ERROR(m->pio_.Register(layout::kI8042DataPort,
                                         layout::kI8042CommandPort - layout::kI8042DataPort + 1,
                                         m->i8042_, I8042::kName));
  m->rtc_ = std::make_shared<Rtc>();
  FORKD_RETURN_IF_ERROR(m->pio_.Register(layout::kRtcPort, Rtc::kPortCount, m->rtc_, Rtc::kName));
  if (virtio.rng) {
    FORKD_RETURN_IF_ERROR(m->AddVirtio(virtio::Rng::kName, layout::kVirtioRngSlot,
                                       std::make_unique<virtio::Rng>(virtio.limits.rng))
                              .status());
  }
  if (virtio.vsock_cid != 0) {
    if (virtio.vsock_cid < 3 || virtio.vsock_cid > 0xffffffffULL) {
      return absl::InvalidArgumentError(
          absl::StrCat("vsock guest CID ", virtio.vsock_cid, " is outside 3..2^32-1"));
    }
    FORKD_ASSIGN_OR_RETURN(m->vsock_muxer_, virtio::VsockMuxer::Listen(virtio.vsock_uds_path));
    FORKD_ASSIGN_OR_RETURN(
        m->vsock_transport_,
        m->AddVirtio(virtio::Vsock::kName, layout::kVirtioVsockSlot,
                     std::make_unique<virtio::Vsock>(virtio.vsock_cid, m->vsock_muxer_.get(),
                                                     virtio::Vsock::Clock{}, virtio.limits.vsock)));
    // Through the notifier thread (rx queue's eventfd), so it honours pause.
    const int rx_fd = m->notify_fds_.back()[0];
    m->vsock_muxer_->Start(
        &m->vsock_transport_->device<virtio::Vsock>(),
        [rx_fd] { virtio::QueueNotifier::Signal(rx_fd); },
        [self](const absl::Status& s) { self->DeviceFailed(s); });
  }
  if (virtio.net) {
    UniqueFd tap;
    if (virtio.net->attached_tap && *virtio.net->attached_tap) {
      tap = std::move(*virtio.net->attached_tap);
    } else {
      FORKD_ASSIGN_OR_RETURN(tap, virtio::OpenTap(virtio.net->tap_name, virtio.net->netns_path));
    }
    FORKD_ASSIGN_OR_RETURN(virtio::MacAddress mac, virtio::RandomMacAddress());
    FORKD_ASSIGN_OR_RETURN(m->net_transport_,
                           m->AddVirtio(virtio::Net::kName, layout::kVirtioNetSlot,
                                        std::make_unique<virtio::Net>(
                                            std::move(tap), mac, virtio.net->mac,
                                            virtio::NetRateLimits{.rx = virtio.limits.net_rx,
                                                                  .tx = virtio.limits.net_tx})));
    virtio::MmioTransport* transport = m->net_transport_;
    FORKD_ASSIGN_OR_RETURN(m->net_pump_,
                           virtio::NetPump::Start(
                               &transport->device<virtio::Net>(),
                               [transport] { transport->Kick(virtio::Net::kRxQueue); },
                               [self](const absl::Status& s) { self->DeviceFailed(s); }));
  }
  return m;
}

absl::StatusOr<virtio::MmioTransport*> Machine::AddVirtio(
    const std::string& name, uint32_t slot, std::unique_ptr<virtio::VirtioDevice> device) {
  UniqueFd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!efd) return ErrnoStatus(errno, "eventfd for " + name);
  const uint32_t irq = layout::VirtioIrq(slot);
  FORKD_RETURN_IF_ERROR(Annotate(vm_.RegisterIrqfd(efd.get(), irq), name));
  const int fd = efd.get();
  auto transport = std::make_shared<virtio::MmioTransport>(name, mem_, std::move(device), [fd] {
    // EAGAIN means the counter is already pending an interrupt: nothing lost.
    uint64_t one = 1;
    (void)!::write(fd, &one, sizeof one);
  });
  const uint64_t addr = layout::VirtioMmioAddr(slot);
  FORKD_RETURN_IF_ERROR(mmio_.Register(addr, layout::kVirtioMmioDeviceSize, transport, name));
  FORKD_ASSIGN_OR_RETURN(std::vector<int> notify, notifier_->Add(transport));
  // Rate-limited devices are run again by a timer once their tokens are back.
  FORKD_ASSIGN_OR_RETURN(std::vector<int> timers, notifier_->AddTimers(transport));
  transport->set_retry([this, name, timers](size_t queue, std::chrono::nanoseconds delay) {
    if (queue >= timers.size()) return;
    absl::Status s = virtio::QueueNotifier::ArmTimer(timers[queue], delay);
    if (!s.ok()) DeviceFailed(Annotate(s, absl::StrCat(name, " queue ", queue, " retry timer")));
  });
  transport->set_error_handler([this](const absl::Status& cause, bool host_failure) {
    if (host_failure) {
      DeviceFailed(cause);
      return;
    }
    // The guest broke its own device (DEVICE_NEEDS_RESET): its problem,
    // but never silently.
    (void)std::fprintf(stderr, "forkd-vmm: device needs reset: %s\n", cause.ToString().c_str());
  });
  for (uint32_t i = 0; use_ioeventfd_ && i < notify.size(); ++i) {
    absl::Status s =
        vm_.RegisterIoeventfd(notify[i], addr + virtio::reg::kQueueNotify, /*datamatch=*/i);
    if (!s.ok()) {
      // Not worth failing the VM for: the MMIO exit still delivers the
      // notify, only more slowly.
      static std::once_flag logged;
      std::call_once(logged, [&] {
        (void)std::fprintf(stderr,
                           "forkd-vmm: %s; virtqueue notifications take the MMIO exit instead\n",
                           s.ToString().c_str());
      });
      use_ioeventfd_ = false;
      break;
    }
    ++ioeventfd_queues_;
  }
  irqfds_.push_back(std::move(efd));
  notify_fds_.push_back(std::move(notify));
  virtio_.push_back(std::move(transport));
  virtio_slots_.push_back({addr, irq});
  return virtio_.back().get();
}

std::string Machine::VirtioCmdline() const {
  std::string out;
  for (const auto& s : virtio_slots_) {
    absl::StrAppend(&out, out.empty() ? "" : " ",
                    "virtio_mmio.device=", layout::kVirtioMmioDeviceSize / 1024, "K@0x",
                    absl::Hex(s.addr), ":", s.irq);
  }
  return out;
}

std::vector<acpi::VirtioMmioDevice> Machine::VirtioWindows() const {
  std::vector<acpi::VirtioMmioDevice> out;
  for (const auto& s : virtio_slots_) {
    out.push_back({s.addr, static_cast<uint32_t>(layout::kVirtioMmioDeviceSize), s.irq});
  }
  return out;
}

absl::Status Machine::EnableVmGenId() {
  if (started_) return absl::FailedPreconditionError("VM generation ID: machine already started");
  FORKD_RETURN_IF_ERROR(acpi::WriteNewGenerationId(mem_, layout::kVmGenIdAddr).status());
  vmgenid_ = true;
  return absl::OkStatus();
}

std::optional<acpi::GenerationId> Machine::generation_id() const {
  if (!vmgenid_) return std::nullopt;
  auto id = acpi::ReadGenerationId(mem_, layout::kVmGenIdAddr);
  if (!id.ok()) return std::nullopt;
  return *id;
}

Machine::~Machine() { Stop(); }

absl::Status Machine::Start(bool vcpus_parked) {
  if (started_) return absl::FailedPreconditionError("machine already started");
  if (pending_clock_) {
    FORKD_RETURN_IF_ERROR(vm_.RestoreClock(*pending_clock_, pending_tsc_khz_));
    pending_clock_.reset();
  }
  if (pending_vmgenid_notify_) {
    // Before any vCPU runs: the guest's GED handler sees the edge as soon as
    // it does, and reads the value RestoreState wrote.
    FORKD_RETURN_IF_ERROR(Annotate(vm_.TriggerIrq(layout::kGedIrq), "VM generation ID notify"));
    pending_vmgenid_notify_ = false;
  }
  InstallKickSignalHandler();
  input_stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!input_stop_) return ErrnoStatus(errno, "eventfd");
  FORKD_RETURN_IF_ERROR(notifier_->Start());
  started_ = true;
  if (vcpus_parked) {
    // Before the threads exist: each parks at its first loop iteration.
    for (auto& v : vcpus_) v->RequestPause();
    paused_ = true;
  }
  for (auto& v : vcpus_) {
    threads_.emplace_back(&Machine::VcpuThread, this, v.get());
    v->SetThread(threads_.back().native_handle());
  }
  if (serial_cfg_.in_fd >= 0) input_thread_ = std::thread(&Machine::InputPumpThread, this);
  return absl::OkStatus();
}

void Machine::VcpuThread(Vcpu* vcpu) {
  seccomp::EnterThread(seccomp::ThreadKind::kVcpu);  // before any KVM_RUN
  VmExit e = vcpu->RunLoop(pio_, mmio_, latch_);
  if (e.kind != ExitKind::kStopped) EndVm(std::move(e));
}

void Machine::DeviceFailed(const absl::Status& cause) {
  (void)std::fprintf(stderr, "forkd-vmm: device failed, stopping the VM: %s\n",
                     cause.ToString().c_str());
  EndVm({ExitKind::kError, std::string(cause.message())});
}

void Machine::EndVm(VmExit e) {
  if (!latch_.Set(std::move(e))) return;
  for (auto& v : vcpus_) v->RequestStop();
}

void Machine::InputPumpThread() {
  seccomp::EnterThread(seccomp::ThreadKind::kDevice);
  uint8_t buf[64];
  size_t have = 0;
  while (true) {
    pollfd fds[2] = {{input_stop_.get(), POLLIN, 0}, {serial_cfg_.in_fd, POLLIN, 0}};
    // While the guest's receive FIFO is full, wake up periodically to retry
    // instead of reading more.
    const bool backlog = have > 0;
    int n = ::poll(fds, backlog ? 1 : 2, backlog ? 1 : -1);
    if (n < 0 && errno != EINTR) return;
    if (fds[0].revents) return;
    if (!backlog && fds[1].revents) {
      ssize_t r = ::read(serial_cfg_.in_fd, buf, sizeof buf);
      if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) return;  // EOF: input closed
      if (r > 0) have = static_cast<size_t>(r);
    }
    if (have > 0) {
      size_t taken = serial_->EnqueueInput({buf, have});
      std::copy(buf + taken, buf + have, buf);
      have -= taken;
    }
  }
}

void Machine::Pause() {
  if (!started_ || paused_) return;
  for (auto& v : vcpus_) v->RequestPause();
  for (auto& v : vcpus_) v->WaitPaused();
  // After the vCPUs: from here on nothing writes guest memory or device state.
  notifier_->Pause();
  // Host-side device threads must not write guest memory under a snapshot.
  if (net_pump_) net_pump_->Pause();
  paused_ = true;
}

void Machine::Resume() {
  if (!paused_) return;
  paused_ = false;
  notifier_->Resume();
  if (net_pump_) net_pump_->Resume();
  for (auto& v : vcpus_) v->Resume();
}

VmExit Machine::Stop() {
  std::lock_guard lock(stop_mu_);
  latch_.Set({ExitKind::kStopped, "host request"});
  for (auto& v : vcpus_) v->RequestStop();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
  if (notifier_) notifier_->Stop();  // null only when Create failed early
  // An ended VM takes no more frames (and may still be saved).
  if (net_pump_) net_pump_->Pause();
  if (input_thread_.joinable()) {
    uint64_t one = 1;
    (void)!::write(input_stop_.get(), &one, sizeof one);
    input_thread_.join();
  }
  return *latch_.Get();
}

std::optional<VmExit> Machine::WaitForExit(std::chrono::milliseconds timeout) const {
  if (!latch_.WaitFor(timeout)) return std::nullopt;
  return latch_.Get();
}

absl::StatusOr<MachineState> Machine::SaveState() const {
  if (started_ && !paused_ && !latch_.is_set()) {
    return absl::FailedPreconditionError("save state: pause the machine first");
  }
  MachineState s;
  for (const auto& v : vcpus_) {
    FORKD_ASSIGN_OR_RETURN(auto vs, v->Save(*kvm_));
    s.vcpus.push_back(std::move(vs));
  }
  FORKD_ASSIGN_OR_RETURN(s.vm, vm_.Save());
  s.devices.push_back(serial_->SaveDevice());
  s.devices.push_back(i8042_->SaveDevice());
  s.devices.push_back(rtc_->SaveDevice());
  if (vmgenid_) s.devices.push_back({kVmGenIdDevice, {kVmGenIdStateVersion}});
  for (const auto& v : virtio_) s.devices.push_back(v->SaveDevice());
  return s;
}

absl::StatusOr<int> Machine::RestoreState(const MachineState& state, bool new_vm_generation) {
  if (started_) return absl::FailedPreconditionError("restore state: machine already started");
  if (state.vcpus.size() != vcpus_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot has ", state.vcpus.size(), " vCPUs, machine has ", vcpus_.size()));
  }
  FORKD_RETURN_IF_ERROR(vm_.RestoreChips(state.vm));
  int rejected = 0;
  for (size_t i = 0; i < vcpus_.size(); ++i) {
    // The guest's own CPUID and TSC frequency, not this host's: before the
    // MSRs and XSAVE state, which KVM checks against the CPUID.
    const VcpuState& saved = state.vcpus[i];
    if (saved.cpuid.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("vcpu ", i, ": the snapshot has no cpuid"));
    }
    FORKD_RETURN_IF_ERROR(Annotate(cpuid::CheckProvidable(saved.cpuid, kvm_->supported_cpuid()),
                                   absl::StrCat("vcpu ", i)));
    FORKD_RETURN_IF_ERROR(
        Annotate(vcpus_[i]->SetCpuidEntries(saved.cpuid), absl::StrCat("vcpu ", i)));
    if (saved.tsc_khz != 0) {
      FORKD_RETURN_IF_ERROR(
          Annotate(vcpus_[i]->SetTscKhz(saved.tsc_khz), absl::StrCat("vcpu ", i)));
    }
    std::vector<uint32_t> refused;
    FORKD_RETURN_IF_ERROR(
        Annotate(vcpus_[i]->Restore(state.vcpus[i], &refused), absl::StrCat("vcpu ", i)));
    // Only MSRs whose value is the host's may be left as the new VM has
    // them; any other refusal would run the guest with state it never had.
    for (uint32_t index : refused) {
      if (!msr::IsHostSpecific(index)) {
        return absl::FailedPreconditionError(
            absl::StrCat("vcpu ", i, ": KVM refused to restore MSR 0x", absl::Hex(index),
                         ", which is not on the allow-list of host-specific MSRs "
                         "(forkd/vmm/README.md)"));
      }
      ++rejected;
    }
  }
  for (const auto& d : state.devices) {
    if (d.name == Serial::kName) {
      FORKD_RETURN_IF_ERROR(serial_->RestoreDevice(d));
    } else if (d.name == I8042::kName) {
      FORKD_RETURN_IF_ERROR(i8042_->RestoreDevice(d));
    } else if (d.name == Rtc::kName) {
      FORKD_RETURN_IF_ERROR(rtc_->RestoreDevice(d));
    } else if (d.name == kVmGenIdDevice) {
      if (d.bytes != std::vector<uint8_t>{kVmGenIdStateVersion}) {
        return absl::DataLossError("vmgenid state: bad version or length");
      }
      vmgenid_ = true;
      if (new_vm_generation) {
        // Every restore is a new generation: a fresh value, announced in Start().
        FORKD_RETURN_IF_ERROR(acpi::WriteNewGenerationId(mem_, layout::kVmGenIdAddr).status());
        pending_vmgenid_notify_ = true;
      }
    } else if (auto it = std::find_if(virtio_.begin(), virtio_.end(),
                                      [&](const auto& v) { return v->name() == d.name; });
               it != virtio_.end()) {
      FORKD_RETURN_IF_ERROR((*it)->RestoreDevice(d));
    } else {
      return absl::InvalidArgumentError(absl::StrCat("snapshot has unknown device ", d.name));
    }
  }
  // Process every queue once when the machine starts (a kick with nothing
  // available does nothing), since the guest will not notify again for what
  // it made available before the snapshot:
  //  - a notify may still have been in an eventfd counter, which the
  //    snapshot does not hold;
  //  - virtio-vsock's TRANSPORT_RESET event (queued by its restore) goes out
  //    on the event queue, telling the guest its connections are gone;
  //  - virtio-net's rx buffers take frames from the fork's (new) tap.
  notifier_->MarkAllPending();
  // kvmclock is set in Start(), right before the vCPUs run.
  pending_clock_ = state.vm;
  pending_tsc_khz_ = state.vcpus[0].tsc_khz;
  return rejected;
}

}  // namespace forkd::vmm

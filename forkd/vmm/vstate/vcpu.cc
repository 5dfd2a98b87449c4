#include "forkd/vmm/vstate/vcpu.h"

#include <signal.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/errno_status.h"
#include "forkd/vmm/arch/x86_64/cpuid.h"
#include "forkd/vmm/arch/x86_64/msr.h"
#include "forkd/vmm/arch/x86_64/regs.h"
#include "forkd/vmm/vstate/kick.h"
#include "forkd/vmm/vstate/kvm_abi.h"

namespace forkd::vmm {
namespace {

// KVM_SET_MSRS / KVM_GET_MSRS for one MSR; returns whether KVM took it.
// kvm_msrs ends in a flexible array: lay out a header plus one entry.
struct OneMsr {
  kvm_abi::MsrsHeader hdr{1, 0};
  kvm_msr_entry entry{};
};

bool SetOneMsr(int fd, uint32_t index, uint64_t value) {
  OneMsr m;
  m.entry.index = index;
  m.entry.data = value;
  return ::ioctl(fd, kvm_abi::kSetMsrs, &m) == 1;
}

bool GetOneMsr(int fd, uint32_t index, uint64_t* value) {
  OneMsr m;
  m.entry.index = index;
  if (::ioctl(fd, kvm_abi::kGetMsrs, &m) != 1) return false;
  *value = m.entry.data;
  return true;
}

// Sets `msrs`, skipping the ones KVM rejects; returns the rejected indices.
// KVM_SET_MSRS stops at the first MSR it refuses and returns how many it set
// (docs/host-facts.md), so: set a batch, skip the refused entry, set the
// rest -- the same result as one ioctl per MSR, in a few ioctls instead of ~50.
std::vector<uint32_t> SetMsrsSkippingRejected(int fd, const std::vector<MsrValue>& msrs) {
  std::vector<uint8_t> buf(sizeof(kvm_abi::MsrsHeader) + msrs.size() * sizeof(kvm_msr_entry));
  auto* hdr = reinterpret_cast<kvm_abi::MsrsHeader*>(buf.data());
  auto* entries = reinterpret_cast<kvm_msr_entry*>(buf.data() + sizeof(*hdr));
  std::vector<uint32_t> rejected;
  size_t next = 0;
  while (next < msrs.size()) {
    const size_t n = msrs.size() - next;
    hdr->nmsrs = static_cast<uint32_t>(n);
    hdr->pad = 0;
    for (size_t i = 0; i < n; ++i) {
      entries[i] = kvm_msr_entry{};
      entries[i].index = msrs[next + i].index;
      entries[i].data = msrs[next + i].value;
    }
    int set = ::ioctl(fd, kvm_abi::kSetMsrs, buf.data());
    if (set < 0) set = 0;  // a failing ioctl: treat the first entry as refused
    next += static_cast<size_t>(set);
    if (next < msrs.size()) {
      rejected.push_back(msrs[next].index);  // refused: skip it
      ++next;
    }
  }
  return rejected;
}

absl::Status Ioctl(int fd, unsigned long req, void* arg, const char* what) {
  if (::ioctl(fd, req, arg) < 0) return ErrnoStatus(errno, what);
  return absl::OkStatus();
}

}  // namespace

Vcpu::Vcpu(int index, UniqueFd fd, Mapping run)
    : index_(index), fd_(std::move(fd)), run_map_(std::move(run)) {}

absl::StatusOr<std::unique_ptr<Vcpu>> Vcpu::Create(const Kvm& kvm, const Vm& vm, int index) {
  int fd = ::ioctl(vm.fd(), KVM_CREATE_VCPU, index);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("KVM_CREATE_VCPU ", index));
  UniqueFd owned(fd);
  FORKD_ASSIGN_OR_RETURN(Mapping run, Mapping::Map(kvm.vcpu_mmap_size(), PROT_READ | PROT_WRITE,
                                                   MAP_SHARED, fd, 0, "kvm_run"));
  return std::unique_ptr<Vcpu>(new Vcpu(index, std::move(owned), std::move(run)));
}

absl::Status Vcpu::SetCpuid(const Kvm& kvm, int num_vcpus) {
  return SetCpuidEntries(cpuid::ForVcpu(kvm.supported_cpuid(), index_, num_vcpus));
}

absl::Status Vcpu::SetTscKhz(uint32_t khz) {
  const int have = ::ioctl(fd(), KVM_GET_TSC_KHZ, 0);
  if (have <= 0) return ErrnoStatus(errno, "KVM_GET_TSC_KHZ");
  if (static_cast<uint32_t>(have) == khz) return absl::OkStatus();
  if (::ioctl(fd(), KVM_SET_TSC_KHZ, static_cast<unsigned long>(khz)) != 0) {
    const int err = errno;
    return absl::FailedPreconditionError(
        absl::StrCat("tsc_khz: the snapshot's guest runs at ", khz, " kHz, this host at ", have,
                     " kHz, and KVM_SET_TSC_KHZ refused it (", strerror(err),
                     "): no TSC scaling beyond KVM's tolerance"));
  }
  return absl::OkStatus();
}

absl::Status Vcpu::SetCpuidEntries(std::vector<kvm_cpuid_entry2> entries) {
  std::vector<uint8_t> buf(sizeof(kvm_abi::Cpuid2Header) +
                           entries.size() * sizeof(kvm_cpuid_entry2));
  auto* hdr = reinterpret_cast<kvm_abi::Cpuid2Header*>(buf.data());
  hdr->nent = static_cast<uint32_t>(entries.size());
  std::memcpy(buf.data() + sizeof(*hdr), entries.data(), entries.size() * sizeof(kvm_cpuid_entry2));
  FORKD_RETURN_IF_ERROR(Ioctl(fd(), kvm_abi::kSetCpuid2, buf.data(), "KVM_SET_CPUID2"));
  cpuid_ = std::move(entries);
  return absl::OkStatus();
}

absl::Status Vcpu::ConfigureForBoot(uint64_t entry, uint64_t zero_page) {
  for (auto [index, value] : msr::BootMsrs()) {
    if (!SetOneMsr(fd(), index, value)) {
      return absl::InternalError(absl::StrCat("KVM_SET_MSRS rejected boot MSR ", absl::Hex(index)));
    }
  }
  // LAPIC: LINT0 in ExtINT mode (the PIC's output) and LINT1 as NMI.
  kvm_lapic_state lapic{};
  FORKD_RETURN_IF_ERROR(Ioctl(fd(), KVM_GET_LAPIC, &lapic, "KVM_GET_LAPIC"));
  auto set_lvt = [&lapic](size_t off, uint32_t mode) {
    uint32_t v;
    std::memcpy(&v, lapic.regs + off, 4);
    v = (v & ~0x700u) | (mode << 8);
    std::memcpy(lapic.regs + off, &v, 4);
  };
  constexpr size_t kLint0 = 0x350, kLint1 = 0x360;
  constexpr uint32_t kDeliveryExtInt = 7, kDeliveryNmi = 4;
  set_lvt(kLint0, kDeliveryExtInt);
  set_lvt(kLint1, kDeliveryNmi);
  FORKD_RETURN_IF_ERROR(Ioctl(fd(), KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC"));

  if (index_ != 0) return absl::OkStatus();

  kvm_sregs sregs{};
  FORKD_RETURN_IF_ERROR(Ioctl(fd(), KVM_GET_SREGS, &sregs, "KVM_GET_SREGS"));
  regs::SetupLongModeSregs(sregs);
  FORKD_RETURN_IF_ERROR(Ioctl(fd(), KVM_SET_SREGS, &sregs, "KVM_SET_SREGS"));
  kvm_regs r = regs::BootRegs(entry, zero_page);
  FORKD_RETURN_IF_ERROR(Ioctl(fd(), KVM_SET_REGS, &r, "KVM_SET_REGS"));
  kvm_fpu fpu = regs::BootFpu();
  return Ioctl(fd(), KVM_SET_FPU, &fpu, "KVM_SET_FPU");
}

absl::StatusOr<VcpuState> Vcpu::Save(const Kvm& kvm) const {
  VcpuState s;
  FORKD_RETURN_IF_ERROR(Ioctl(fd(), KVM_GET_MP_STATE, &s.mp_state, "KVM_GET_MP_STATE"));
  FORKD_RETURN_IF_ERROR(Ioctl(fd(), KVM_GET_REGS, &s.regs, "KVM_GET_REGS"));
  FORKD_RETURN_IF_ERROR(Ioctl(fd(), KVM_GET_SREGS, &s.sregs, "KVM_GET_SREGS"));
  if (kvm.CheckExtension(KVM_CAP_XSAVE) > 0) {
    s.xsave.assign(kvm.xsave_size(), 0);
    unsigned long req =
        kvm.xsave_size() > kvm_abi::kXsaveLegacyBytes ? kvm_abi::kGetXsave2 : kvm_abi::kGetXsave;
    FORKD_RETURN_IF_ERROR(Ioctl(fd(), req, s.xsave.data(), "KVM_GET_XSAVE"));
  }
  FORKD_RETURN_IF_ERROR(Ioctl(fd(), KVM_GET_FPU, &s.fpu, "KVM_GET_FPU"));
  if (kvm.CheckExtension(KVM_CAP_XCRS) > 0) {
    FORKD_RETURN_IF_ERROR(Ioctl(fd(), KVM_GET_XCRS, &s.xcrs, "KVM_GET_XCRS"));
  }
  FORKD_RETURN_IF_ERROR(Ioctl(fd(), KVM_GET_LAPIC, &s.lapic, "KVM_GET_LAPIC"));
  FORKD_RETURN_IF_ERROR(Ioctl(fd(), KVM_GET_VCPU_EVENTS, &s.events, "KVM_GET_VCPU_EVENTS"));
  FORKD_RETURN_IF_ERROR(Ioctl(fd(), KVM_GET_DEBUGREGS, &s.debugregs, "KVM_GET_DEBUGREGS"));
  int khz = ::ioctl(fd(), KVM_GET_TSC_KHZ, 0);
  if (khz <= 0) return ErrnoStatus(errno, "KVM_GET_TSC_KHZ");
  s.tsc_khz = static_cast<uint32_t>(khz);
  s.cpuid = cpuid_;
  // One at a time: the list holds MSRs KVM reports but cannot always read.
  for (uint32_t index : kvm.msr_indices()) {
    uint64_t value = 0;
    if (GetOneMsr(fd(), index, &value)) s.msrs.push_back({index, value});
  }
  return s;
}

absl::Status Vcpu::Restore(const VcpuState& s, std::vector<uint32_t>* rejected_msrs) {
  // Order from kvm-feasibility.md: sregs, mp_state, regs, xsave, xcrs,
  // debugregs, lapic, MSRs one by one, then events last (they may carry a
  // pending exception that the other state must not clobber).
  FORKD_RETURN_IF_ERROR(
      Ioctl(fd(), KVM_SET_SREGS, const_cast<kvm_sregs*>(&s.sregs), "KVM_SET_SREGS"));
  FORKD_RETURN_IF_ERROR(
      Ioctl(fd(), KVM_SET_MP_STATE, const_cast<kvm_mp_state*>(&s.mp_state), "KVM_SET_MP_STATE"));
  FORKD_RETURN_IF_ERROR(Ioctl(fd(), KVM_SET_REGS, const_cast<kvm_regs*>(&s.regs), "KVM_SET_REGS"));
  if (!s.xsave.empty()) {
    if (s.xsave.size() < kvm_abi::kXsaveLegacyBytes) {
      return absl::InvalidArgumentError("XSAVE state shorter than 4096 bytes");
    }
    FORKD_RETURN_IF_ERROR(
        Ioctl(fd(), kvm_abi::kSetXsave, const_cast<uint8_t*>(s.xsave.data()), "KVM_SET_XSAVE"));
    FORKD_RETURN_IF_ERROR(
        Ioctl(fd(), KVM_SET_XCRS, const_cast<kvm_xcrs*>(&s.xcrs), "KVM_SET_XCRS"));
  } else {
    FORKD_RETURN_IF_ERROR(Ioctl(fd(), KVM_SET_FPU, const_cast<kvm_fpu*>(&s.fpu), "KVM_SET_FPU"));
  }
  FORKD_RETURN_IF_ERROR(Ioctl(fd(), KVM_SET_DEBUGREGS, const_cast<kvm_debugregs*>(&s.debugregs),
                              "KVM_SET_DEBUGREGS"));
  FORKD_RETURN_IF_ERROR(
      Ioctl(fd(), KVM_SET_LAPIC, const_cast<kvm_lapic_state*>(&s.lapic), "KVM_SET_LAPIC"));
  std::vector<uint32_t> rejected = SetMsrsSkippingRejected(fd(), s.msrs);
  if (rejected_msrs != nullptr) *rejected_msrs = std::move(rejected);
  return Ioctl(fd(), KVM_SET_VCPU_EVENTS, const_cast<kvm_vcpu_events*>(&s.events),
               "KVM_SET_VCPU_EVENTS");
}

void Vcpu::SetThread(pthread_t thread) {
  std::lock_guard lock(mu_);
  // The loop may already have ended (e.g. KVM_RUN failed at once); never
  // arm kicks at a thread that is about to be joined.
  if (loop_done_) return;
  thread_ = thread;
  has_thread_ = true;
}

void Vcpu::Kick() {
  if (has_thread_) pthread_kill(thread_, KickSignal());
}

void Vcpu::RequestPause() {
  std::lock_guard lock(mu_);
  pause_requested_ = true;
  run()->immediate_exit = 1;
  Kick();
}

void Vcpu::WaitPaused() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [this] { return parked_ || loop_done_; });
}

void Vcpu::Resume() {
  {
    std::lock_guard lock(mu_);
    pause_requested_ = false;
    run()->immediate_exit = 0;
  }
  cv_.notify_all();
}

void Vcpu::RequestStop() {
  {
    std::lock_guard lock(mu_);
    stop_requested_ = true;
    run()->immediate_exit = 1;
    Kick();
  }
  cv_.notify_all();
}

bool Vcpu::ParkIfRequested() {
  std::unique_lock lock(mu_);
  if (stop_requested_) return false;
  if (!pause_requested_) return true;
  // Let KVM finish any emulated instruction or pending I/O so the state we
  // are about to expose is complete; with immediate_exit it returns EINTR.
  run()->immediate_exit = 1;
  (void)::ioctl(fd(), KVM_RUN, 0);
  parked_ = true;
  cv_.notify_all();
  cv_.wait(lock, [this] { return !pause_requested_ || stop_requested_; });
  parked_ = false;
  return !stop_requested_;
}

VmExit Vcpu::RunLoop(const Bus& pio, const Bus& mmio, const ExitLatch& latch) {
  VmExit result{ExitKind::kStopped, ""};
  while (!latch.is_set()) {
    if (!ParkIfRequested()) break;
    ClearKick();
    if (::ioctl(fd(), KVM_RUN, 0) < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;  // kicked: re-check flags
      result = {ExitKind::kError, ErrnoStatus(errno, "KVM_RUN").ToString()};
      break;
    }
    if (auto end = HandleExit(pio, mmio)) {
      result = *end;
      break;
    }
  }
  {
    std::lock_guard lock(mu_);
    loop_done_ = true;
    // No more kicks: the thread may be joined at any moment from now on.
    has_thread_ = false;
  }
  cv_.notify_all();
  return result;
}

std::optional<VmExit> Vcpu::HandleExit(const Bus& pio, const Bus& mmio) {
  kvm_run* r = run();
  switch (r->exit_reason) {
    case KVM_EXIT_IO: {
      auto* base = reinterpret_cast<uint8_t*>(r) + r->io.data_offset;
      for (uint32_t i = 0; i < r->io.count; ++i) {
        std::span<uint8_t> data(base + i * r->io.size, r->io.size);
        if (r->io.direction == KVM_EXIT_IO_OUT) {
          pio.Write(r->io.port, data);  // writes to unclaimed ports are dropped
        } else if (!pio.Read(r->io.port, data)) {
          std::memset(data.data(), 0xff, data.size());  // floating ISA bus
        }
      }
      return std::nullopt;
    }
    case KVM_EXIT_MMIO: {
      std::span<uint8_t> data(r->mmio.data, r->mmio.len);
      if (r->mmio.is_write) {
        mmio.Write(r->mmio.phys_addr, data);
      } else if (!mmio.Read(r->mmio.phys_addr, data)) {
        std::memset(data.data(), 0, data.size());
      }
      return std::nullopt;
    }
    case KVM_EXIT_INTR:
    case KVM_EXIT_IRQ_WINDOW_OPEN:
    case KVM_EXIT_DEBUG:
      return std::nullopt;
    case KVM_EXIT_HLT:
      // With the in-kernel LAPIC, HLT never reaches user space unless the
      // guest halted for good.
      return VmExit{ExitKind::kShutdown, "hlt"};
    case KVM_EXIT_SHUTDOWN:
      return VmExit{ExitKind::kShutdown, absl::StrCat("triple fault on vcpu ", index_)};
    case KVM_EXIT_SYSTEM_EVENT:
      switch (r->system_event.type) {
        case KVM_SYSTEM_EVENT_RESET:
          return VmExit{ExitKind::kReset, "system event"};
        case KVM_SYSTEM_EVENT_SHUTDOWN:
          return VmExit{ExitKind::kShutdown, "system event"};
        default:
          return VmExit{ExitKind::kError, absl::StrCat("system event type ", r->system_event.type)};
      }
    case KVM_EXIT_INTERNAL_ERROR: {
      std::string detail = absl::StrCat("suberror ", r->internal.suberror, " on vcpu ", index_);
      for (uint32_t i = 0; i < r->internal.ndata && i < 16; ++i) {
        absl::StrAppend(&detail, i == 0 ? " data" : "", " ", absl::Hex(r->internal.data[i]));
      }
      return VmExit{ExitKind::kInternalError, detail};
    }
    case KVM_EXIT_FAIL_ENTRY:
      return VmExit{ExitKind::kFailEntry,
                    absl::StrCat("hardware entry failure reason ",
                                 absl::Hex(r->fail_entry.hardware_entry_failure_reason), " on cpu ",
                                 r->fail_entry.cpu)};
    case KVM_EXIT_UNKNOWN:
      return VmExit{ExitKind::kError,
                    absl::StrCat("unknown exit, hardware reason ",
                                 absl::Hex(r->hw.hardware_exit_reason), " on vcpu ", index_)};
    default:
      return VmExit{ExitKind::kError, absl::StrCat("unhandled KVM exit reason ", r->exit_reason)};
  }
}

}  // namespace forkd::vmm

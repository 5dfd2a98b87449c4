#include "forkd/vmm/vstate/vm.h"

#include <sys/ioctl.h>
#include <x86intrin.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "forkd/vmm/arch/x86_64/layout.h"

namespace forkd::vmm {

uint64_t AdvancedKvmclock(uint64_t saved_clock_ns, uint64_t saved_host_tsc, uint64_t now_host_tsc,
                          uint32_t tsc_khz) {
  if (tsc_khz == 0 || now_host_tsc <= saved_host_tsc) return saved_clock_ns;
  // cycles / kHz = ms; scale to ns in 128 bits so long gaps cannot overflow.
  unsigned __int128 cycles = now_host_tsc - saved_host_tsc;
  return saved_clock_ns + static_cast<uint64_t>(cycles * 1000000 / tsc_khz);
}

absl::StatusOr<Vm> Vm::Create(const Kvm& kvm) {
  int fd = ::ioctl(kvm.fd(), KVM_CREATE_VM, 0);
  if (fd < 0) return ErrnoStatus(errno, "KVM_CREATE_VM");
  return Vm(UniqueFd(fd));
}

absl::Status Vm::SetMemory(const GuestMemory& mem) {
  kvm_userspace_memory_region region{};
  region.slot = 0;
  region.guest_phys_addr = 0;
  region.memory_size = mem.size();
  region.userspace_addr = reinterpret_cast<uint64_t>(mem.host_base());
  if (::ioctl(fd(), KVM_SET_USER_MEMORY_REGION, &region) != 0) {
    return ErrnoStatus(errno, "KVM_SET_USER_MEMORY_REGION");
  }
  return absl::OkStatus();
}

absl::Status Vm::CreateIrqchipAndPit() {
  if (::ioctl(fd(), KVM_SET_TSS_ADDR, layout::kTssAddr) != 0) {
    return ErrnoStatus(errno, "KVM_SET_TSS_ADDR");
  }
  uint64_t identity = layout::kIdentityMapAddr;
  if (::ioctl(fd(), KVM_SET_IDENTITY_MAP_ADDR, &identity) != 0) {
    return ErrnoStatus(errno, "KVM_SET_IDENTITY_MAP_ADDR");
  }
  if (::ioctl(fd(), KVM_CREATE_IRQCHIP, 0) != 0) return ErrnoStatus(errno, "KVM_CREATE_IRQCHIP");
  kvm_pit_config pit{};
  pit.flags = KVM_PIT_SPEAKER_DUMMY;
  if (::ioctl(fd(), KVM_CREATE_PIT2, &pit) != 0) return ErrnoStatus(errno, "KVM_CREATE_PIT2");
  return absl::OkStatus();
}

absl::Status Vm::TriggerIrq(uint32_t irq) const {
  kvm_irq_level level{};
  level.irq = irq;
  level.level = 1;
  if (::ioctl(fd(), KVM_IRQ_LINE, &level) != 0) return ErrnoStatus(errno, "KVM_IRQ_LINE high");
  level.level = 0;
  if (::ioctl(fd(), KVM_IRQ_LINE, &level) != 0) return ErrnoStatus(errno, "KVM_IRQ_LINE low");
  return absl::OkStatus();
}

absl::Status Vm::RegisterIrqfd(int event_fd, uint32_t gsi) const {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(event_fd);
  irqfd.gsi = gsi;
  if (::ioctl(fd(), KVM_IRQFD, &irqfd) != 0) {
    return ErrnoStatus(errno, absl::StrCat("KVM_IRQFD gsi ", gsi));
  }
  return absl::OkStatus();
}

// No flexible array in this struct, so <linux/kvm.h> is right in C++ too;
// pinned here because the ioctl number encodes its size.
static_assert(sizeof(kvm_ioeventfd) == 64);
static_assert(KVM_IOEVENTFD == 0x4040ae79);

absl::Status Vm::RegisterIoeventfd(int event_fd, uint64_t addr, uint32_t datamatch) const {
  kvm_ioeventfd io{};
  io.datamatch = datamatch;
  io.addr = addr;
  io.len = 4;
  io.fd = event_fd;
  io.flags = KVM_IOEVENTFD_FLAG_DATAMATCH;
  if (::ioctl(fd(), KVM_IOEVENTFD, &io) != 0) {
    return ErrnoStatus(errno, absl::StrCat("KVM_IOEVENTFD 0x", absl::Hex(addr), " = ", datamatch));
  }
  return absl::OkStatus();
}

absl::StatusOr<VmState> Vm::Save() const {
  VmState s;
  s.pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
  s.pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
  s.ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
  for (kvm_irqchip* chip : {&s.pic_master, &s.pic_slave, &s.ioapic}) {
    if (::ioctl(fd(), KVM_GET_IRQCHIP, chip) != 0) {
      return ErrnoStatus(errno, absl::StrCat("KVM_GET_IRQCHIP ", chip->chip_id));
    }
  }
  if (::ioctl(fd(), KVM_GET_PIT2, &s.pit) != 0) return ErrnoStatus(errno, "KVM_GET_PIT2");
  if (::ioctl(fd(), KVM_GET_CLOCK, &s.clock) != 0) return ErrnoStatus(errno, "KVM_GET_CLOCK");
  return s;
}

absl::Status Vm::RestoreChips(const VmState& state) {
  if (::ioctl(fd(), KVM_SET_PIT2, &state.pit) != 0) return ErrnoStatus(errno, "KVM_SET_PIT2");
  for (const kvm_irqchip* chip : {&state.pic_master, &state.pic_slave, &state.ioapic}) {
    if (::ioctl(fd(), KVM_SET_IRQCHIP, chip) != 0) {
      return ErrnoStatus(errno, absl::StrCat("KVM_SET_IRQCHIP ", chip->chip_id));
    }
  }
  return absl::OkStatus();
}

absl::Status Vm::RestoreClock(const VmState& state, uint32_t tsc_khz) {
  kvm_clock_data clock{};
  clock.clock = state.clock.clock;
  if (state.clock.flags & KVM_CLOCK_HOST_TSC) {
    clock.clock = AdvancedKvmclock(state.clock.clock, state.clock.host_tsc, __rdtsc(), tsc_khz);
  }
  if (::ioctl(fd(), KVM_SET_CLOCK, &clock) != 0) return ErrnoStatus(errno, "KVM_SET_CLOCK");
  return absl::OkStatus();
}

}  // namespace forkd::vmm

#include "forkd/vmm/persist.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <x86intrin.h>

#include <algorithm>
#include <chrono>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"
#include "forkd/snapshot/cpu_identity.h"
#include "forkd/snapshot/snapshot_dir.h"
#include "forkd/snapshot/state.h"
#include "forkd/vmm/devices/virtio/net.h"
#include "forkd/vmm/devices/virtio/rng.h"
#include "forkd/vmm/devices/virtio/vsock.h"

namespace forkd::vmm {
namespace {

namespace fs = std::filesystem;

uint64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

snapshot::VcpuState ToFormat(const VcpuState& v) {
  snapshot::VcpuState f;
  f.regs = v.regs;
  f.sregs = v.sregs;
  f.fpu = v.fpu;
  f.xsave = v.xsave;  // empty on a host without XSAVE: restore uses `fpu`
  f.xcrs = v.xcrs;
  for (const auto& m : v.msrs) f.msrs.push_back({m.index, m.value});
  f.lapic = v.lapic;
  f.events = v.events;
  f.debugregs = v.debugregs;
  f.mp_state = v.mp_state;
  f.tsc_khz = v.tsc_khz;
  f.cpuid = v.cpuid;
  return f;
}

VcpuState FromFormat(const snapshot::VcpuState& f) {
  VcpuState v;
  v.regs = f.regs;
  v.sregs = f.sregs;
  v.fpu = f.fpu;
  v.xsave = f.xsave;
  v.xcrs = f.xcrs;
  for (const auto& m : f.msrs) v.msrs.push_back({m.index, m.value});
  v.lapic = f.lapic;
  v.events = f.events;
  v.debugregs = f.debugregs;
  v.mp_state = f.mp_state;
  v.tsc_khz = f.tsc_khz;
  v.cpuid = f.cpuid;
  return v;
}

}  // namespace

absl::Status SaveSnapshot(const Machine& machine, const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", dir.string(), ": ", ec.message()));
  // State first (cheap, and fails fast if the machine is running), then RAM.
  FORKD_ASSIGN_OR_RETURN(MachineState ms, machine.SaveState());
  // A snapshot already in `dir` may be mapped by running forks (each holds
  // its memory file with a shared flock, see GuestMemory::FilePrivate):
  // refused then. Otherwise the lock is held exclusively until the new
  // file replaces it, so no restore starts from a half-written directory.
  const fs::path memory_path = snapshot::MemoryPath(dir);
  UniqueFd old_memory(::open(memory_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!old_memory && errno != ENOENT) return ErrnoStatus(errno, "open " + memory_path.string());
  if (old_memory && ::flock(old_memory.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("snapshot ", dir.string(),
                       " is in use (a fork maps its memory file); snapshot into a new directory"));
    }
    return ErrnoStatus(errno, "flock " + memory_path.string());
  }
  // RAM into a new file, renamed over the old one: a mapping of the old
  // file (whoever holds it) never sees its pages change.
  std::string tmp = (dir / ".memory.XXXXXX").string();
  UniqueFd tmp_fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!tmp_fd) return ErrnoStatus(errno, "create a temporary memory file in " + dir.string());
  tmp_fd.reset();
  absl::Status written = machine.memory().SaveToFile(tmp);
  if (written.ok() && ::rename(tmp.c_str(), memory_path.c_str()) != 0) {
    written = ErrnoStatus(errno, "rename " + tmp + " to " + memory_path.string());
  }
  if (!written.ok()) {
    (void)::unlink(tmp.c_str());
    return written;
  }

  snapshot::SnapshotState s;
  s.header.cpu = snapshot::HostCpuIdentity();
  s.header.memory = {{0, machine.memory().size(), 0}};
  s.header.vcpu_count = static_cast<uint32_t>(ms.vcpus.size());
  const kernel_stage::GuestPin& pin = machine.guest_pin();
  s.header.kernel_sha256 = pin.kernel_sha256;
  s.header.initrd_sha256 = pin.initrd_sha256;
  s.header.guest_protocol_version = pin.agent_protocol;
  s.header.unpinned = pin.unpinned;
  s.header.created_unix_ns =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count());
  for (const auto& v : ms.vcpus) {
    s.vcpus.push_back(ToFormat(v));
  }
  s.vm.pic_master = ms.vm.pic_master;
  s.vm.pic_slave = ms.vm.pic_slave;
  s.vm.ioapic = ms.vm.ioapic;
  s.vm.pit = ms.vm.pit;
  s.vm.clock = ms.vm.clock;
  s.vm.host_monotonic_ns = MonotonicNs();
  s.vm.host_tsc = (ms.vm.clock.flags & KVM_CLOCK_HOST_TSC) ? ms.vm.clock.host_tsc
                                                           : static_cast<uint64_t>(__rdtsc());
  for (const auto& d : ms.devices) s.devices.push_back({d.name, d.bytes});
  return Annotate(snapshot::SaveSnapshot(dir, s), "save snapshot " + dir.string());
}

absl::StatusOr<std::unique_ptr<Machine>> RestoreSnapshot(std::shared_ptr<const Kvm> kvm,
                                                         const fs::path& dir, SerialConfig serial,
                                                         RestoreReport* report,
                                                         const RestoreOptions& options) {
  const std::string& vsock_uds_path = options.vsock_uds_path;
  const std::optional<NetConfig>& net = options.net;
  auto opened =
      snapshot::OpenSnapshot(dir, snapshot::VerifyMode::kStateOnly, snapshot::HostCpuIdentity());
  if (!opened.ok()) return Annotate(opened.status(), "open snapshot " + dir.string());
  const snapshot::SnapshotState& s = opened->state;
  const kernel_stage::GuestPin stamped{.kernel_sha256 = s.header.kernel_sha256,
                                       .initrd_sha256 = s.header.initrd_sha256,
                                       .agent_protocol = s.header.guest_protocol_version,
                                       .unpinned = s.header.unpinned};
  if (options.expect_pin) {
    FORKD_RETURN_IF_ERROR(
        Annotate(kernel_stage::CheckPin(*options.expect_pin, stamped), "restore " + dir.string()));
  }
  if (s.header.memory.size() != 1 || s.header.memory[0].guest_phys_addr != 0 ||
      s.header.memory[0].file_offset != 0) {
    return absl::UnimplementedError(
        "snapshot memory layout is not the single region at GPA 0 this VMM writes");
  }
  FORKD_ASSIGN_OR_RETURN(GuestMemory mem, GuestMemory::FilePrivate(opened->memory_path.string(),
                                                                   s.header.memory[0].size));
  // The snapshot's device states say which virtio devices the guest had.
  VirtioConfig virtio;
  virtio.ioeventfd = options.ioeventfd;
  virtio.limits = options.limits;
  for (const auto& d : s.devices) {
    if (d.name == virtio::Rng::kName) virtio.rng = true;
    if (d.name == virtio::Vsock::kName) {
      if (vsock_uds_path.empty()) {
        return absl::InvalidArgumentError(
            "snapshot has virtio-vsock: the restore needs its own socket path");
      }
      // Placeholder CID: the device's saved state sets the real one.
      virtio.vsock_cid = 3;
      virtio.vsock_uds_path = vsock_uds_path;
    }
    if (d.name == virtio::Net::kName) {
      if (!net) {
        return absl::InvalidArgumentError(
            "snapshot has virtio-net: the restore needs the fork's own tap");
      }
      virtio.net = net;  // the MAC, unless overridden, comes from the device's state
    }
  }
  if (net && !virtio.net) {
    return absl::InvalidArgumentError("a tap was given but the snapshot has no virtio-net");
  }
  const RateLimits& l = options.limits;
  if ((l.rng && !virtio.rng) || (l.vsock && virtio.vsock_cid == 0) ||
      ((l.net_rx || l.net_tx) && !virtio.net)) {
    return absl::InvalidArgumentError("a rate limit for a device the snapshot does not have");
  }
  FORKD_ASSIGN_OR_RETURN(auto machine,
                         Machine::Create(std::move(kvm), std::move(mem),
                                         static_cast<int>(s.vcpus.size()), serial, virtio));
  MachineState ms;
  for (const auto& v : s.vcpus) ms.vcpus.push_back(FromFormat(v));
  ms.vm.pic_master = s.vm.pic_master;
  ms.vm.pic_slave = s.vm.pic_slave;
  ms.vm.ioapic = s.vm.ioapic;
  ms.vm.pit = s.vm.pit;
  ms.vm.clock = s.vm.clock;
  ms.vm.clock.host_tsc = s.vm.host_tsc;
  ms.vm.clock.flags |= KVM_CLOCK_HOST_TSC;
  for (const auto& d : s.devices) ms.devices.push_back({d.name, d.bytes});
  machine->set_guest_pin(stamped);
  FORKD_ASSIGN_OR_RETURN(int rejected, machine->RestoreState(ms, options.new_vm_generation));
  if (report != nullptr) report->rejected_msrs = rejected;
  return machine;
}

}  // namespace forkd::vmm

#include "forkd/vmm/builder.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"
#include "forkd/vmm/acpi/tables.h"
#include "forkd/vmm/arch/x86_64/boot_params.h"
#include "forkd/vmm/arch/x86_64/layout.h"
#include "forkd/vmm/arch/x86_64/regs.h"
#include "forkd/vmm/loader/kernel_image.h"
#include "kernel-stage/guest_pin.h"
#include "kernel-stage/pinned_file.h"

namespace forkd::vmm {
namespace {

constexpr uint64_t kDefaultInitrdAddrMax = 0x37ffffff;

absl::Status LoadKernel(const GuestMemory& mem, const KernelImage& k, std::string_view bytes) {
  for (const auto& seg : k.segments) {
    FORKD_ASSIGN_OR_RETURN(auto dst, mem.Slice(seg.gpa, seg.mem_size));
    std::memcpy(dst.data(), bytes.data() + seg.file_offset, seg.file_size);
    std::memset(dst.data() + seg.file_size, 0, seg.mem_size - seg.file_size);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open " + path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "fstat " + path);
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::read(fd.get(), out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "read " + path);
    if (n == 0) return absl::DataLossError(absl::StrCat(path, " shrank while reading"));
    done += static_cast<size_t>(n);
  }
  return out;
}

absl::StatusOr<kernel_stage::GuestPin> PinLoadedImages(const BootConfig& cfg,
                                                       std::string_view kernel,
                                                       std::string_view initrd) {
  if (cfg.expect_initrd_sha256 && !cfg.expect_kernel_sha256) {
    return absl::InvalidArgumentError("an initramfs digest without a kernel digest pins nothing");
  }
  if (cfg.expect_kernel_sha256 && !cfg.initrd_path.empty() && !cfg.expect_initrd_sha256) {
    return absl::InvalidArgumentError(
        absl::StrCat("a pinned boot needs the initramfs digest too (", cfg.initrd_path, ")"));
  }
  kernel_stage::GuestPin pin{
      .kernel_sha256 =
          kernel_stage::Sha256({reinterpret_cast<const uint8_t*>(kernel.data()), kernel.size()}),
      .initrd_sha256 =
          kernel_stage::Sha256({reinterpret_cast<const uint8_t*>(initrd.data()), initrd.size()}),
      .agent_protocol = cfg.agent_protocol,
      .unpinned = !cfg.expect_kernel_sha256.has_value()};
  if (cfg.expect_kernel_sha256 && pin.kernel_sha256 != *cfg.expect_kernel_sha256) {
    return kernel_stage::DigestMismatch("guest pin: kernel " + cfg.kernel_path,
                                        *cfg.expect_kernel_sha256, pin.kernel_sha256);
  }
  if (cfg.expect_initrd_sha256 && pin.initrd_sha256 != *cfg.expect_initrd_sha256) {
    return kernel_stage::DigestMismatch(
        "guest pin: initramfs " + (cfg.initrd_path.empty() ? "(none)" : cfg.initrd_path),
        *cfg.expect_initrd_sha256, pin.initrd_sha256);
  }
  return pin;
}

absl::StatusOr<std::unique_ptr<Machine>> BuildForBoot(std::shared_ptr<const Kvm> kvm,
                                                      const BootConfig& cfg) {
  if (cfg.cmdline.size() + 1 > layout::kCmdlineMaxSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("kernel command line of ", cfg.cmdline.size(), " bytes is too long"));
  }
  // Read once, hash what was read, load exactly that: no window in which the file could be
  // swapped between the check and the load.
  FORKD_ASSIGN_OR_RETURN(std::string kernel, ReadWholeFile(cfg.kernel_path));
  std::string initrd;
  if (!cfg.initrd_path.empty()) {
    FORKD_ASSIGN_OR_RETURN(initrd, ReadWholeFile(cfg.initrd_path));
  }
  FORKD_ASSIGN_OR_RETURN(kernel_stage::GuestPin pin, PinLoadedImages(cfg, kernel, initrd));
  auto parsed = ParseKernelImage({reinterpret_cast<const uint8_t*>(kernel.data()), kernel.size()});
  if (!parsed.ok()) return Annotate(parsed.status(), "kernel " + cfg.kernel_path);
  const KernelImage& image = *parsed;
  if (image.end() > cfg.mem_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("kernel needs ", image.end(), " bytes of guest memory, have ", cfg.mem_size));
  }

  absl::StatusOr<GuestMemory> mem =
      cfg.shared_memory_path.empty()
          ? GuestMemory::Anonymous(cfg.mem_size)
          : GuestMemory::FileShared(cfg.shared_memory_path, cfg.mem_size);
  if (!mem.ok()) return mem.status();
  FORKD_ASSIGN_OR_RETURN(auto machine, Machine::Create(std::move(kvm), *std::move(mem), cfg.vcpus,
                                                       cfg.serial, cfg.virtio));
  machine->set_guest_pin(pin);
  const GuestMemory& m = machine->memory();

  FORKD_RETURN_IF_ERROR(LoadKernel(m, image, kernel));
  std::string cmdline = cfg.cmdline;
  if (cfg.declare_virtio_on_cmdline && !machine->virtio_devices().empty()) {
    absl::StrAppend(&cmdline, cmdline.empty() ? "" : " ", machine->VirtioCmdline());
  }
  if (cmdline.size() + 1 > layout::kCmdlineMaxSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("kernel command line of ", cmdline.size(), " bytes is too long"));
  }
  const uint32_t cmdline_size = static_cast<uint32_t>(cmdline.size());
  cmdline.push_back('\0');
  FORKD_RETURN_IF_ERROR(m.Write(
      layout::kCmdlineAddr, {reinterpret_cast<const uint8_t*>(cmdline.data()), cmdline.size()}));

  ZeroPageParams zp;
  zp.mem_size = cfg.mem_size;
  zp.cmdline_addr = layout::kCmdlineAddr;
  zp.cmdline_size = cmdline_size;
  zp.header = image.header;
  if (!cfg.initrd_path.empty()) {
    uint64_t addr_max = image.header && image.header->initrd_addr_max != 0
                            ? image.header->initrd_addr_max
                            : kDefaultInitrdAddrMax;
    FORKD_ASSIGN_OR_RETURN(uint64_t addr,
                           PlaceInitrd(cfg.mem_size, addr_max, image.end(), initrd.size()));
    FORKD_RETURN_IF_ERROR(
        m.Write(addr, {reinterpret_cast<const uint8_t*>(initrd.data()), initrd.size()}));
    zp.initrd_addr = addr;
    zp.initrd_size = initrd.size();
  }
  if (cfg.acpi) {
    acpi::AcpiConfig acpi_cfg;
    acpi_cfg.num_vcpus = cfg.vcpus;
    acpi_cfg.virtio = machine->VirtioWindows();
    acpi_cfg.vmgenid = true;
    acpi_cfg.vmgenid_addr = layout::kVmGenIdAddr;
    acpi_cfg.ged_gsi = layout::kGedIrq;
    FORKD_RETURN_IF_ERROR(Annotate(acpi::WriteTables(m, acpi_cfg), "ACPI tables"));
    FORKD_RETURN_IF_ERROR(machine->EnableVmGenId());
    zp.acpi_rsdp_addr = layout::kRsdpAddr;
  }
  FORKD_ASSIGN_OR_RETURN(boot_params bp, BuildZeroPage(zp));
  FORKD_RETURN_IF_ERROR(m.WriteObj(layout::kZeroPageAddr, bp));
  FORKD_RETURN_IF_ERROR(regs::WriteBootTables(m));
  for (auto& v : machine->vcpus()) {
    FORKD_RETURN_IF_ERROR(Annotate(v->ConfigureForBoot(image.entry, layout::kZeroPageAddr),
                                   absl::StrCat("vcpu ", v->index())));
  }
  return machine;
}

}  // namespace forkd::vmm

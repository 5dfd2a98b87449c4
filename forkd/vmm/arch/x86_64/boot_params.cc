#include "forkd/vmm/arch/x86_64/boot_params.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "forkd/vmm/arch/x86_64/layout.h"

namespace forkd::vmm {
namespace {

constexpr uint16_t kBootFlag = 0xaa55;
constexpr uint32_t kHdrSMagic = 0x53726448;  // "HdrS"
constexpr uint8_t kLoaderUndefined = 0xff;
constexpr uint32_t kDefaultKernelAlignment = 0x1000000;

}  // namespace

std::vector<E820Entry> BuildE820(uint64_t mem_size) {
  std::vector<E820Entry> map;
  map.push_back({0, layout::kEbdaStart, kE820Ram});
  // The ACPI tables and the VM generation ID (acpi/tables.h).
  map.push_back({layout::kAcpiRegionStart, layout::kAcpiRegionSize, kE820Reserved});
  if (mem_size > layout::kKernelLoadAddr) {
    map.push_back({layout::kKernelLoadAddr, mem_size - layout::kKernelLoadAddr, kE820Ram});
  }
  return map;
}

absl::StatusOr<boot_params> BuildZeroPage(const ZeroPageParams& p) {
  if (p.mem_size <= layout::kKernelLoadAddr) {
    return absl::InvalidArgumentError(
        absl::StrCat("guest memory of ", p.mem_size, " bytes leaves no room above 1 MiB"));
  }
  boot_params bp;
  std::memset(&bp, 0, sizeof bp);
  if (p.header) {
    bp.hdr = *p.header;
  } else {
    bp.hdr.boot_flag = kBootFlag;
    bp.hdr.header = kHdrSMagic;
    bp.hdr.kernel_alignment = kDefaultKernelAlignment;
  }
  bp.hdr.type_of_loader = kLoaderUndefined;
  bp.hdr.cmd_line_ptr = static_cast<uint32_t>(p.cmdline_addr);
  bp.ext_cmd_line_ptr = static_cast<uint32_t>(p.cmdline_addr >> 32);
  bp.hdr.cmdline_size = p.cmdline_size;
  bp.hdr.ramdisk_image = static_cast<uint32_t>(p.initrd_addr);
  bp.ext_ramdisk_image = static_cast<uint32_t>(p.initrd_addr >> 32);
  bp.hdr.ramdisk_size = static_cast<uint32_t>(p.initrd_size);
  bp.ext_ramdisk_size = static_cast<uint32_t>(p.initrd_size >> 32);

  bp.acpi_rsdp_addr = p.acpi_rsdp_addr;

  auto e820 = BuildE820(p.mem_size);
  if (e820.size() > E820_MAX_ENTRIES_ZEROPAGE) {
    return absl::InternalError("e820 map does not fit the zero page");
  }
  for (size_t i = 0; i < e820.size(); ++i) {
    bp.e820_table[i].addr = e820[i].addr;
    bp.e820_table[i].size = e820[i].size;
    bp.e820_table[i].type = e820[i].type;
  }
  bp.e820_entries = static_cast<uint8_t>(e820.size());
  return bp;
}

absl::StatusOr<uint64_t> PlaceInitrd(uint64_t mem_size, uint64_t initrd_addr_max,
                                     uint64_t kernel_end, uint64_t size) {
  // initrd_addr_max is the highest address the initramfs may occupy.
  uint64_t limit = std::min(mem_size, initrd_addr_max + 1);
  if (size == 0 || size > limit) {
    return absl::InvalidArgumentError(absl::StrCat("initramfs of ", size, " bytes does not fit"));
  }
  uint64_t addr = (limit - size) & ~(layout::kPageSize - 1);
  if (addr < kernel_end) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "initramfs of ", size, " bytes overlaps the kernel; give the guest more memory"));
  }
  return addr;
}

}  // namespace forkd::vmm

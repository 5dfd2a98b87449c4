// The Linux zero page (struct boot_params) for the 64-bit boot protocol:
// setup header (copied from a bzImage, or synthesised for an ELF kernel),
// e820 memory map, command line and initramfs location.
#pragma once

#include <asm/bootparam.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"

namespace forkd::vmm {

inline constexpr uint32_t kE820Ram = 1;
inline constexpr uint32_t kE820Reserved = 2;

struct E820Entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
};

// RAM below the EBDA and from 1 MiB to the end of guest memory; the ACPI
// region (layout::kAcpiRegionStart) reserved.
std::vector<E820Entry> BuildE820(uint64_t mem_size);

struct ZeroPageParams {
  uint64_t mem_size = 0;
  uint64_t cmdline_addr = 0;
  uint32_t cmdline_size = 0;  // bytes, excluding the NUL
  uint64_t initrd_addr = 0;
  uint64_t initrd_size = 0;
  // The setup header of a bzImage; absent for an ELF kernel.
  std::optional<setup_header> header;
  // Where the ACPI RSDP is (0: no ACPI tables).
  uint64_t acpi_rsdp_addr = 0;
};

absl::StatusOr<boot_params> BuildZeroPage(const ZeroPageParams& p);

// Highest page-aligned address for an initramfs of `size` bytes that stays
// below both `initrd_addr_max` and the end of memory, and above `kernel_end`.
absl::StatusOr<uint64_t> PlaceInitrd(uint64_t mem_size, uint64_t initrd_addr_max,
                                     uint64_t kernel_end, uint64_t size);

}  // namespace forkd::vmm

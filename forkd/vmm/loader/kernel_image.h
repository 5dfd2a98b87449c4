// Parsing of guest kernel images into a load plan (pure: bytes in, plan out,
// so malformed input is unit-testable). Two formats:
//  - bzImage: the protected-mode payload goes at 1 MiB and the 64-bit entry
//    is at +0x200; its setup header seeds the zero page.
//  - ELF64 (vmlinux, or the probe guest): PT_LOAD segments at their physical
//    addresses, entry translated from virtual to physical.
#pragma once

#include <asm/bootparam.h>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace forkd::vmm {

struct LoadSegment {
  uint64_t gpa = 0;
  uint64_t file_offset = 0;
  uint64_t file_size = 0;
  uint64_t mem_size = 0;  // >= file_size; the rest is zero-filled
};

struct KernelImage {
  enum class Format { kBzImage, kElf };
  Format format = Format::kElf;
  std::vector<LoadSegment> segments;
  uint64_t entry = 0;  // guest physical address
  // bzImage only: its setup header, for the zero page.
  std::optional<setup_header> header;
  // Highest guest physical address the image occupies (exclusive).
  uint64_t end() const;
};

absl::StatusOr<KernelImage> ParseKernelImage(std::span<const uint8_t> image);
absl::StatusOr<KernelImage> ParseBzImage(std::span<const uint8_t> image);
absl::StatusOr<KernelImage> ParseElf(std::span<const uint8_t> image);

}  // namespace forkd::vmm

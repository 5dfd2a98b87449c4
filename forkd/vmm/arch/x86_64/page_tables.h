// Identity page tables for the boot path: the low 4 GiB mapped with 2 MiB
// pages (PML4 -> PDPT -> 4 PDs), as the 64-bit boot protocol requires.
#pragma once

#include <array>
#include <cstdint>

#include "forkd/vmm/arch/x86_64/layout.h"

namespace forkd::vmm::page_tables {

inline constexpr uint64_t kPresent = 1 << 0;
inline constexpr uint64_t kWritable = 1 << 1;
inline constexpr uint64_t kHugePage = 1 << 7;
inline constexpr int kNumPds = layout::kIdentityMappedBytes / (1ULL << 30);

struct IdentityTables {
  std::array<uint64_t, 512> pml4{};
  std::array<uint64_t, 512> pdpt{};
  std::array<std::array<uint64_t, 512>, kNumPds> pds{};
};

// Tables whose entries point at the layout addresses (kPml4Addr, ...).
IdentityTables BuildIdentityTables();

}  // namespace forkd::vmm::page_tables

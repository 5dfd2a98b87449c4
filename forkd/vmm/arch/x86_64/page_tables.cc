#include "forkd/vmm/arch/x86_64/page_tables.h"

namespace forkd::vmm::page_tables {

IdentityTables BuildIdentityTables() {
  IdentityTables t;
  t.pml4[0] = layout::kPdptAddr | kPresent | kWritable;
  for (int i = 0; i < kNumPds; ++i) {
    t.pdpt[i] = (layout::kPdAddr + i * layout::kPageSize) | kPresent | kWritable;
    for (int j = 0; j < 512; ++j) {
      uint64_t phys = (uint64_t(i) << 30) | (uint64_t(j) << 21);
      t.pds[i][j] = phys | kPresent | kWritable | kHugePage;
    }
  }
  return t;
}

}  // namespace forkd::vmm::page_tables

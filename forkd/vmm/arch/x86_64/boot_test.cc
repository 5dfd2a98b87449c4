// Pure boot-path construction: zero page, e820, page tables, GDT, CPUID.
#include <cstring>

#include "forkd/vmm/arch/x86_64/boot_params.h"
#include "forkd/vmm/arch/x86_64/cpuid.h"
#include "forkd/vmm/arch/x86_64/gdt.h"
#include "forkd/vmm/arch/x86_64/layout.h"
#include "forkd/vmm/arch/x86_64/msr.h"
#include "forkd/vmm/arch/x86_64/page_tables.h"
#include "gtest/gtest.h"

namespace forkd::vmm {
namespace {

TEST(Msr, OnlyTheReadOnlyPvmMsrsMayBeRefusedOnRestore) {
  for (uint32_t m : {0x4b564d11u, 0x4b564d12u, 0x4b564d13u}) EXPECT_TRUE(msr::IsHostSpecific(m));
  // 0x4b564d10 is writable on kvm_pvm: a refusal of it is a real failure.
  for (uint32_t m : {0x4b564d10u, msr::kIa32Tsc, msr::kLstar, msr::kKernelGsBase, 0x4b564d14u}) {
    EXPECT_FALSE(msr::IsHostSpecific(m)) << std::hex << m;
  }
}

TEST(E820, LowRamTheReservedAcpiRegionAndRamFromOneMiB) {
  auto map = BuildE820(256 << 20);
  ASSERT_EQ(map.size(), 3u);
  EXPECT_EQ(map[0].addr, 0u);
  EXPECT_EQ(map[0].size, layout::kEbdaStart);
  EXPECT_EQ(map[1].addr, layout::kAcpiRegionStart);
  EXPECT_EQ(map[1].addr + map[1].size, layout::kKernelLoadAddr);
  EXPECT_EQ(map[1].type, kE820Reserved);
  EXPECT_LE(layout::kVmGenIdAddr + 16, map[1].addr + map[1].size);
  EXPECT_EQ(map[2].addr, layout::kKernelLoadAddr);
  EXPECT_EQ(map[2].addr + map[2].size, 256u << 20);
  EXPECT_EQ(map[2].type, kE820Ram);
}

TEST(ZeroPage, SynthesisedHeaderForElf) {
  ZeroPageParams p;
  p.mem_size = 128 << 20;
  p.cmdline_addr = layout::kCmdlineAddr;
  p.cmdline_size = 12;
  p.initrd_addr = 0x5000000;
  p.initrd_size = 0x1234;
  auto bp = BuildZeroPage(p);
  ASSERT_TRUE(bp.ok()) << bp.status();
  EXPECT_EQ(bp->hdr.boot_flag, 0xaa55);
  // A copy: the packed field sits at 0x202, and gtest binds a reference to it.
  EXPECT_EQ(uint32_t{bp->hdr.header}, 0x53726448u);
  EXPECT_EQ(bp->hdr.type_of_loader, 0xff);
  EXPECT_EQ(bp->hdr.cmd_line_ptr, layout::kCmdlineAddr);
  EXPECT_EQ(bp->hdr.cmdline_size, 12u);
  EXPECT_EQ(bp->hdr.ramdisk_image, 0x5000000u);
  EXPECT_EQ(bp->hdr.ramdisk_size, 0x1234u);
  EXPECT_EQ(bp->e820_entries, 3);
  EXPECT_EQ(bp->e820_table[2].size, (128u << 20) - layout::kKernelLoadAddr);
  EXPECT_EQ(bp->acpi_rsdp_addr, 0u);
}

TEST(ZeroPage, KeepsBzImageHeaderFields) {
  setup_header h{};
  h.boot_flag = 0xaa55;
  h.header = 0x53726448;
  h.version = 0x020f;
  h.kernel_alignment = 0x200000;
  ZeroPageParams p;
  p.mem_size = 64 << 20;
  p.header = h;
  auto bp = BuildZeroPage(p);
  ASSERT_TRUE(bp.ok());
  EXPECT_EQ(bp->hdr.version, 0x020f);
  EXPECT_EQ(bp->hdr.kernel_alignment, 0x200000u);
  EXPECT_EQ(bp->hdr.type_of_loader, 0xff);
}

TEST(ZeroPage, RejectsTinyMemory) {
  ZeroPageParams p;
  p.mem_size = 1 << 20;
  EXPECT_FALSE(BuildZeroPage(p).ok());
}

TEST(Initrd, PlacedHighestBelowLimits) {
  auto a = PlaceInitrd(256 << 20, 0x37ffffff, 8 << 20, 10000);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a % layout::kPageSize, 0u);
  EXPECT_LE(*a + 10000, 256u << 20);
  EXPECT_GT(*a + 10000 + layout::kPageSize, 256u << 20);
  auto capped = PlaceInitrd(2048ULL << 20, 0x37ffffff, 8 << 20, 4096);
  ASSERT_TRUE(capped.ok());
  EXPECT_LE(*capped + 4096, 0x38000000u);
  EXPECT_FALSE(PlaceInitrd(64 << 20, 0x37ffffff, 60 << 20, 8 << 20).ok());  // overlaps kernel
  EXPECT_FALSE(PlaceInitrd(64 << 20, 0x37ffffff, 0, 0).ok());
}

TEST(PageTables, IdentityMapsLowFourGiB) {
  auto t = page_tables::BuildIdentityTables();
  EXPECT_EQ(t.pml4[0] & ~0xfffULL, layout::kPdptAddr);
  EXPECT_EQ(t.pml4[1], 0u);
  for (int i = 0; i < page_tables::kNumPds; ++i) {
    EXPECT_EQ(t.pdpt[i] & ~0xfffULL, layout::kPdAddr + i * layout::kPageSize);
    EXPECT_TRUE(t.pdpt[i] & page_tables::kPresent);
  }
  // A walk of an arbitrary address lands on itself.
  for (uint64_t addr : {0x0ULL, 0x1234567ULL, 0xbfffffffULL, 0xfffbd000ULL}) {
    uint64_t pde = t.pds[addr >> 30][(addr >> 21) & 511];
    EXPECT_TRUE(pde & page_tables::kHugePage);
    EXPECT_EQ((pde & ~0x1fffffULL & ((1ULL << 52) - 1)) | (addr & 0x1fffff), addr);
  }
  EXPECT_LT(layout::kPdAddr + page_tables::kNumPds * layout::kPageSize, layout::kCmdlineAddr);
}

TEST(Gdt, SegmentsDecodeToLongModeCode) {
  auto cs = gdt::SegmentFromEntry(gdt::kBootGdt[2], 2);
  EXPECT_EQ(cs.selector, gdt::kCodeSelector);
  EXPECT_EQ(cs.l, 1);
  EXPECT_EQ(cs.db, 0);
  EXPECT_EQ(cs.present, 1);
  EXPECT_EQ(cs.type, 0xb);
  EXPECT_EQ(cs.limit, 0xffffffffu);
  auto ds = gdt::SegmentFromEntry(gdt::kBootGdt[3], 3);
  EXPECT_EQ(ds.selector, gdt::kDataSelector);
  EXPECT_EQ(ds.db, 1);
  EXPECT_EQ(ds.type, 0x3);
  auto null_seg = gdt::SegmentFromEntry(0, 0);
  EXPECT_EQ(null_seg.unusable, 1);
}

TEST(Cpuid, PerVcpuApicIdsAndHypervisorLeaves) {
  std::vector<kvm_cpuid_entry2> supported(2);
  supported[0].function = 1;
  supported[0].ebx = 0xffff0800;
  supported[1].function = 0xb;
  auto c = cpuid::ForVcpu(supported, 3, 4);
  EXPECT_EQ(c[0].ebx >> 24, 3u);
  EXPECT_EQ((c[0].ebx >> 16) & 0xff, 4u);
  EXPECT_EQ(c[0].ebx & 0xffff, 0x0800u);
  EXPECT_TRUE(c[0].ecx & (1u << 31));
  EXPECT_EQ(c[1].edx, 3u);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[2].function, 0x40000000u);
  EXPECT_EQ(std::memcmp(&c[2].ebx, "KVMKVMKVM", 4), 0);
}

std::vector<kvm_cpuid_entry2> SomeHostCpuid() {
  std::vector<kvm_cpuid_entry2> s(4);
  s[0].function = 1;
  s[0].ecx = 0x7ed8320b;
  s[0].edx = 0x078bfbff;
  s[1].function = 7;
  s[1].flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
  s[1].ebx = 0x219c07ab;  // includes AVX2 (bit 5)
  s[2].function = 7;
  s[2].index = 1;
  s[2].flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
  s[3].function = 0x80000001;
  s[3].ecx = 0x75c237ff;
  return s;
}

TEST(Cpuid, TheGuestsOwnCpuidIsProvidableByItsHost) {
  const auto host = SomeHostCpuid();
  // ForVcpu's edits (hypervisor, HTT, APIC ids, the KVM leaf) are all masked.
  for (int n : {1, 4}) {
    EXPECT_TRUE(cpuid::CheckProvidable(cpuid::ForVcpu(host, n - 1, n), host).ok());
  }
  // So are the bits the guest OS turns on (OSXSAVE, OSPKE).
  auto snap = cpuid::ForVcpu(host, 0, 1);
  snap[0].ecx |= 1u << 27;
  snap[1].ecx |= 1u << 4;
  EXPECT_TRUE(cpuid::CheckProvidable(snap, host).ok());
}

TEST(Cpuid, AHostWithoutAFeatureTheGuestSawRefusesNamingIt) {
  const auto snap = cpuid::ForVcpu(SomeHostCpuid(), 0, 1);
  auto host = SomeHostCpuid();
  host[1].ebx &= ~(1u << 5);  // no AVX2 here
  absl::Status s = cpuid::CheckProvidable(snap, host);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("cpuid 0x7.0 ebx"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("bits 0x20 "), absl::string_view::npos) << s;

  host = SomeHostCpuid();
  host.erase(host.begin() + 3);  // no extended leaf at all
  s = cpuid::CheckProvidable(snap, host);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("cpuid 0x80000001.0 ecx"), absl::string_view::npos) << s;

  // A host with more features than the guest saw is fine.
  host = SomeHostCpuid();
  host[0].ecx |= 1u << 30;
  EXPECT_TRUE(cpuid::CheckProvidable(snap, host).ok());
}

}  // namespace
}  // namespace forkd::vmm

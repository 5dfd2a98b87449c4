#include "forkd/vmm/loader/kernel_image.h"

#include <elf.h>

#include <cstring>
#include <vector>

#include "forkd/vmm/arch/x86_64/layout.h"
#include "gtest/gtest.h"

namespace forkd::vmm {
namespace {

std::vector<uint8_t> MakeBzImage(uint16_t version = 0x020f, uint16_t xloadflags = 1,
                                 uint8_t setup_sects = 4, size_t payload = 4096) {
  std::vector<uint8_t> img((setup_sects + 1) * 512 + payload, 0);
  setup_header hdr{};
  hdr.setup_sects = setup_sects;
  hdr.boot_flag = 0xaa55;
  hdr.header = 0x53726448;
  hdr.version = version;
  hdr.xloadflags = xloadflags;
  hdr.init_size = 0x200000;
  hdr.initrd_addr_max = 0x7fffffff;
  std::memcpy(img.data() + 0x1f1, &hdr, sizeof hdr);
  return img;
}

std::vector<uint8_t> MakeElf(uint64_t paddr = 0x100000, uint64_t vaddr = 0x100000,
                             uint64_t entry = 0x100000, uint64_t filesz = 64) {
  std::vector<uint8_t> img(sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr) + filesz, 0);
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_entry = entry;
  eh.e_phoff = sizeof(Elf64_Ehdr);
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = 1;
  Elf64_Phdr ph{};
  ph.p_type = PT_LOAD;
  ph.p_offset = sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr);
  ph.p_vaddr = vaddr;
  ph.p_paddr = paddr;
  ph.p_filesz = filesz;
  ph.p_memsz = filesz + 4096;
  std::memcpy(img.data(), &eh, sizeof eh);
  std::memcpy(img.data() + sizeof eh, &ph, sizeof ph);
  return img;
}

TEST(KernelImage, ParsesBzImage) {
  auto img = MakeBzImage();
  auto k = ParseKernelImage(img);
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(k->format, KernelImage::Format::kBzImage);
  EXPECT_EQ(k->entry, layout::kKernelLoadAddr + 0x200);
  ASSERT_EQ(k->segments.size(), 1u);
  EXPECT_EQ(k->segments[0].gpa, layout::kKernelLoadAddr);
  EXPECT_EQ(k->segments[0].file_offset, 5u * 512);
  EXPECT_EQ(k->segments[0].file_size, 4096u);
  EXPECT_EQ(k->segments[0].mem_size, 0x200000u);  // init_size wins
  ASSERT_TRUE(k->header.has_value());
  // A copy: the packed header sits unaligned inside the optional.
  EXPECT_EQ(uint32_t{k->header->initrd_addr_max}, 0x7fffffffu);
}

TEST(KernelImage, ZeroSetupSectsMeansFour) {
  auto img = MakeBzImage(0x020f, 1, 0, 8192);
  img.resize(5 * 512 + 100);
  auto k = ParseBzImage(img);
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(k->segments[0].file_offset, 5u * 512);
}

TEST(KernelImage, RejectsMalformedBzImages) {
  EXPECT_FALSE(ParseKernelImage(std::vector<uint8_t>(100, 0)).ok());
  auto bad_flag = MakeBzImage();
  bad_flag[0x1fe] = 0;
  EXPECT_FALSE(ParseKernelImage(bad_flag).ok());
  EXPECT_FALSE(ParseKernelImage(MakeBzImage(0x020b)).ok());     // no 64-bit entry
  EXPECT_FALSE(ParseKernelImage(MakeBzImage(0x020f, 0)).ok());  // XLF_KERNEL_64 clear
  auto truncated = MakeBzImage(0x020f, 1, 60, 0);
  truncated.resize(1024);
  EXPECT_FALSE(ParseKernelImage(truncated).ok());  // setup_sects past the end
}

TEST(KernelImage, ParsesElfAndTranslatesEntry) {
  auto k = ParseKernelImage(MakeElf(0x1000000, 0xffffffff81000000ULL, 0xffffffff81000010ULL));
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(k->format, KernelImage::Format::kElf);
  EXPECT_EQ(k->entry, 0x1000010u);
  EXPECT_EQ(k->end(), 0x1000000u + 64 + 4096);
  EXPECT_FALSE(k->header.has_value());
}

TEST(KernelImage, RejectsMalformedElf) {
  auto img = MakeElf();
  EXPECT_FALSE(ParseKernelImage(std::span(img).first(40)).ok());  // header truncated
  auto wrong_machine = img;
  reinterpret_cast<Elf64_Ehdr*>(wrong_machine.data())->e_machine = EM_386;
  EXPECT_FALSE(ParseKernelImage(wrong_machine).ok());
  auto ph_outside = img;
  reinterpret_cast<Elf64_Ehdr*>(ph_outside.data())->e_phoff = 1 << 20;
  EXPECT_FALSE(ParseKernelImage(ph_outside).ok());
  auto seg_outside = img;
  reinterpret_cast<Elf64_Phdr*>(seg_outside.data() + sizeof(Elf64_Ehdr))->p_filesz = 1 << 20;
  EXPECT_FALSE(ParseKernelImage(seg_outside).ok());
  EXPECT_FALSE(ParseKernelImage(MakeElf(0x1000)).ok());         // over boot structures
  EXPECT_FALSE(ParseKernelImage(MakeElf(0xfff00000000)).ok());  // beyond guest RAM
  EXPECT_FALSE(ParseKernelImage(MakeElf(0x100000, 0x100000, 0x900000)).ok());  // entry
  auto phnum_huge = img;
  reinterpret_cast<Elf64_Ehdr*>(phnum_huge.data())->e_phnum = 0xffff;
  EXPECT_FALSE(ParseKernelImage(phnum_huge).ok());
}

}  // namespace
}  // namespace forkd::vmm

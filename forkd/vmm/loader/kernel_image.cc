#include "forkd/vmm/loader/kernel_image.h"

#include <elf.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "forkd/vmm/arch/x86_64/layout.h"

namespace forkd::vmm {
namespace {

constexpr uint64_t kSetupHeaderOffset = 0x1f1;
constexpr uint16_t kBootFlag = 0xaa55;
constexpr uint32_t kHdrSMagic = 0x53726448;  // "HdrS"
// The 64-bit entry point exists from boot protocol 2.12 with XLF_KERNEL_64.
constexpr uint16_t kMinBootProtocol = 0x020c;
constexpr uint16_t kXlfKernel64 = 1 << 0;

template <typename T>
T Load(std::span<const uint8_t> image, uint64_t off) {
  T v;
  std::memcpy(&v, image.data() + off, sizeof v);
  return v;
}

}  // namespace

uint64_t KernelImage::end() const {
  uint64_t e = 0;
  for (const auto& s : segments) e = std::max(e, s.gpa + s.mem_size);
  return e;
}

absl::StatusOr<KernelImage> ParseKernelImage(std::span<const uint8_t> image) {
  if (image.size() >= 4 && std::memcmp(image.data(), ELFMAG, SELFMAG) == 0) {
    return ParseElf(image);
  }
  return ParseBzImage(image);
}

absl::StatusOr<KernelImage> ParseBzImage(std::span<const uint8_t> image) {
  if (image.size() < kSetupHeaderOffset + sizeof(setup_header)) {
    return absl::InvalidArgumentError("kernel image too small for a bzImage setup header");
  }
  auto hdr = Load<setup_header>(image, kSetupHeaderOffset);
  if (hdr.boot_flag != kBootFlag || hdr.header != kHdrSMagic) {
    return absl::InvalidArgumentError("not a bzImage (no 0xAA55 boot flag / HdrS magic) or ELF");
  }
  if (hdr.version < kMinBootProtocol || !(hdr.xloadflags & kXlfKernel64)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bzImage boot protocol ", absl::Hex(hdr.version),
        " has no 64-bit entry (need >= 2.12 with XLF_KERNEL_64); this host cannot run real "
        "mode or 32-bit paging"));
  }
  uint64_t setup_sects = hdr.setup_sects == 0 ? 4 : hdr.setup_sects;
  uint64_t payload_off = (setup_sects + 1) * 512;
  if (payload_off >= image.size()) {
    return absl::InvalidArgumentError("bzImage setup_sects points past the end of the file");
  }
  KernelImage k;
  k.format = KernelImage::Format::kBzImage;
  uint64_t payload_size = image.size() - payload_off;
  // The decompressor needs init_size bytes from the load address.
  uint64_t mem_size = std::max<uint64_t>(payload_size, hdr.init_size);
  k.segments.push_back({layout::kKernelLoadAddr, payload_off, payload_size, mem_size});
  k.entry = layout::kKernelLoadAddr + layout::kBzImage64BitEntryOffset;
  k.header = hdr;
  return k;
}

absl::StatusOr<KernelImage> ParseElf(std::span<const uint8_t> image) {
  if (image.size() < sizeof(Elf64_Ehdr)) return absl::InvalidArgumentError("ELF header truncated");
  auto eh = Load<Elf64_Ehdr>(image, 0);
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
      eh.e_ident[EI_DATA] != ELFDATA2LSB) {
    return absl::InvalidArgumentError("not a little-endian ELF64 image");
  }
  if (eh.e_machine != EM_X86_64) return absl::InvalidArgumentError("ELF is not x86-64");
  if (eh.e_type != ET_EXEC) return absl::InvalidArgumentError("ELF is not an executable");
  if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0) {
    return absl::InvalidArgumentError("ELF has no usable program headers");
  }
  uint64_t ph_end = eh.e_phoff + uint64_t(eh.e_phnum) * sizeof(Elf64_Phdr);
  if (eh.e_phoff > image.size() || ph_end > image.size() || ph_end < eh.e_phoff) {
    return absl::InvalidArgumentError("ELF program headers lie outside the file");
  }
  KernelImage k;
  k.format = KernelImage::Format::kElf;
  bool entry_found = false;
  for (int i = 0; i < eh.e_phnum; ++i) {
    auto ph = Load<Elf64_Phdr>(image, eh.e_phoff + uint64_t(i) * sizeof(Elf64_Phdr));
    if (ph.p_type != PT_LOAD) continue;
    if (ph.p_filesz > ph.p_memsz || ph.p_offset > image.size() ||
        ph.p_filesz > image.size() - ph.p_offset) {
      return absl::InvalidArgumentError(absl::StrCat("ELF segment ", i, " lies outside the file"));
    }
    if (ph.p_paddr + ph.p_memsz < ph.p_paddr || ph.p_paddr + ph.p_memsz > layout::kMaxGuestMemory) {
      return absl::InvalidArgumentError(
          absl::StrCat("ELF segment ", i, " at ", absl::Hex(ph.p_paddr), " is outside guest RAM"));
    }
    if (ph.p_paddr < layout::kKernelLoadAddr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ELF segment ", i, " at ", absl::Hex(ph.p_paddr), " overlaps the VMM's boot structures"));
    }
    k.segments.push_back({ph.p_paddr, ph.p_offset, ph.p_filesz, ph.p_memsz});
    // vmlinux links at a virtual address; translate the entry to physical.
    if (eh.e_entry >= ph.p_vaddr && eh.e_entry < ph.p_vaddr + ph.p_memsz) {
      k.entry = eh.e_entry - ph.p_vaddr + ph.p_paddr;
      entry_found = true;
    }
  }
  if (k.segments.empty()) return absl::InvalidArgumentError("ELF has no PT_LOAD segment");
  if (!entry_found) return absl::InvalidArgumentError("ELF entry point is in no PT_LOAD segment");
  return k;
}

}  // namespace forkd::vmm

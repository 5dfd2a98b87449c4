// Builds the guest initramfs (uncompressed newc; the build gzips it):
//   mkinitramfs --out FILE --init AGENT --busybox BUSYBOX --applets LIST
// AGENT becomes /init, BUSYBOX /bin/busybox, and every name in LIST (one per
// line, the output of `busybox --list`) a /bin symlink to it. Both binaries
// must be statically linked: the initramfs has no dynamic loader or libc.
#include <elf.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "agent/initramfs/newc.h"
#include "common/errno_status.h"

namespace forkd::agent::initramfs {
namespace {

absl::StatusOr<std::string> Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in.good() && !in.eof()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return ss.str();
}

// A binary that asks for a program interpreter (PT_INTERP) is dynamically
// linked and would fail in the guest with a bare "No such file or directory".
absl::Status RequireStaticElf(const std::string& path, const std::string& bytes) {
  Elf64_Ehdr eh;
  if (bytes.size() < sizeof(eh) || std::memcmp(bytes.data(), ELFMAG, SELFMAG) != 0 ||
      bytes[EI_CLASS] != ELFCLASS64) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a 64-bit ELF executable"));
  }
  std::memcpy(&eh, bytes.data(), sizeof(eh));
  for (size_t i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    const size_t off = eh.e_phoff + i * eh.e_phentsize;
    if (off + sizeof(ph) > bytes.size()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": truncated program headers"));
    }
    std::memcpy(&ph, bytes.data() + off, sizeof(ph));
    if (ph.p_type == PT_INTERP) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " is dynamically linked; the initramfs needs a static binary"));
    }
  }
  return absl::OkStatus();
}

absl::Status Run(const std::string& out, const std::string& init, const std::string& busybox,
                 const std::string& applets_file) {
  FORKD_ASSIGN_OR_RETURN(std::string init_bytes, Slurp(init));
  FORKD_RETURN_IF_ERROR(RequireStaticElf(init, init_bytes));
  FORKD_ASSIGN_OR_RETURN(std::string busybox_bytes, Slurp(busybox));
  FORKD_RETURN_IF_ERROR(RequireStaticElf(busybox, busybox_bytes));
  FORKD_ASSIGN_OR_RETURN(std::string applets_text, Slurp(applets_file));

  std::vector<Entry> entries;
  for (const char* d : {"bin", "dev", "etc", "proc", "root", "run", "sbin", "sys", "tmp", "usr",
                        "usr/bin", "usr/sbin"}) {
    entries.push_back(Directory(d));
  }
  // Must exist before /init runs: the kernel opens it for init's stdio.
  entries.push_back(CharDevice("dev/console", 5, 1, 0600));
  entries.push_back(File("init", std::move(init_bytes), 0755));
  entries.push_back(File("bin/busybox", std::move(busybox_bytes), 0755));
  std::set<std::string> seen = {"busybox"};
  std::istringstream lines(applets_text);
  for (std::string name; std::getline(lines, name);) {
    if (name.empty() || !seen.insert(name).second) continue;
    if (name.find('/') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("applet name '", name, "' contains '/'"));
    }
    entries.push_back(Symlink("bin/" + name, "busybox"));
  }
  if (!seen.count("sh")) {
    return absl::InvalidArgumentError(absl::StrCat(busybox, " lists no 'sh' applet"));
  }

  const std::string archive = WriteNewc(entries);
  std::ofstream o(out, std::ios::binary | std::ios::trunc);
  o.write(archive.data(), static_cast<std::streamsize>(archive.size()));
  o.close();
  if (!o) return absl::InternalError(absl::StrCat("cannot write ", out));
  return absl::OkStatus();
}

}  // namespace
}  // namespace forkd::agent::initramfs

int main(int argc, char** argv) {
  std::string out, init, busybox, applets;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--out") {
      out = argv[i + 1];
    } else if (flag == "--init") {
      init = argv[i + 1];
    } else if (flag == "--busybox") {
      busybox = argv[i + 1];
    } else if (flag == "--applets") {
      applets = argv[i + 1];
    } else {
      std::cerr << "mkinitramfs: unknown flag " << flag << "\n";
      return 2;
    }
  }
  if (out.empty() || init.empty() || busybox.empty() || applets.empty() || argc % 2 != 1) {
    std::cerr << "usage: mkinitramfs --out FILE --init AGENT --busybox BUSYBOX --applets LIST\n";
    return 2;
  }
  const auto s = forkd::agent::initramfs::Run(out, init, busybox, applets);
  if (!s.ok()) {
    std::cerr << "mkinitramfs: " << forkd::ToStd(s.message()) << "\n";
    return 1;
  }
  return 0;
}

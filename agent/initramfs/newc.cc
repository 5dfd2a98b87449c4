#include "agent/initramfs/newc.h"

#include <sys/stat.h>

#include <cstdio>

#include "absl/strings/str_cat.h"

namespace forkd::agent::initramfs {
namespace {

constexpr char kMagic[] = "070701";
constexpr size_t kHeaderBytes = 110;  // magic + 13 eight-digit hex fields
constexpr char kTrailer[] = "TRAILER!!!";

void Pad4(std::string& out) {
  while (out.size() % 4 != 0) out.push_back('\0');
}

void AppendRecord(std::string& out, uint32_t ino, const Entry& e) {
  char header[kHeaderBytes + 1];
  const uint32_t nlink = S_ISDIR(e.mode) ? 2 : 1;
  (void)std::snprintf(header, sizeof(header),
                      "%s%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", kMagic, ino, e.mode,
                      0u /*uid*/, 0u /*gid*/, nlink, 0u /*mtime: reproducible*/,
                      static_cast<uint32_t>(e.data.size()), 0u, 0u, e.rdev_major, e.rdev_minor,
                      static_cast<uint32_t>(e.name.size() + 1), 0u /*check*/);
  out.append(header, kHeaderBytes);
  out.append(e.name);
  out.push_back('\0');
  Pad4(out);
  out.append(e.data);
  Pad4(out);
}

absl::StatusOr<uint32_t> Hex8(const std::string& s, size_t pos) {
  uint32_t v = 0;
  for (size_t i = 0; i < 8; ++i) {
    const char c = s[pos + i];
    uint32_t d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else {
      return absl::DataLossError(absl::StrCat("bad hex digit at offset ", pos + i));
    }
    v = (v << 4) | d;
  }
  return v;
}

size_t Align4(size_t n) { return (n + 3) & ~size_t{3}; }

}  // namespace

Entry Directory(std::string name, uint32_t perm) {
  return Entry{.name = std::move(name), .mode = S_IFDIR | perm};
}
Entry File(std::string name, std::string data, uint32_t perm) {
  return Entry{.name = std::move(name), .mode = S_IFREG | perm, .data = std::move(data)};
}
Entry Symlink(std::string name, std::string target) {
  return Entry{.name = std::move(name), .mode = S_IFLNK | 0777, .data = std::move(target)};
}
Entry CharDevice(std::string name, uint32_t major, uint32_t minor, uint32_t perm) {
  return Entry{
      .name = std::move(name), .mode = S_IFCHR | perm, .rdev_major = major, .rdev_minor = minor};
}

std::string WriteNewc(const std::vector<Entry>& entries) {
  std::string out;
  uint32_t ino = 1;
  for (const Entry& e : entries) AppendRecord(out, ino++, e);
  AppendRecord(out, 0, Entry{.name = kTrailer});
  return out;
}

absl::StatusOr<std::vector<Entry>> ReadNewc(const std::string& a) {
  std::vector<Entry> entries;
  size_t pos = 0;
  for (;;) {
    if (pos + kHeaderBytes > a.size()) return absl::DataLossError("archive ends inside a header");
    if (a.compare(pos, 6, kMagic) != 0) {
      return absl::DataLossError(absl::StrCat("no newc magic at offset ", pos));
    }
    uint32_t f[13];
    for (int i = 0; i < 13; ++i) {
      auto v = Hex8(a, pos + 6 + 8 * i);
      if (!v.ok()) return v.status();
      f[i] = *v;
    }
    const uint32_t mode = f[1], filesize = f[6], rmajor = f[9], rminor = f[10], namesize = f[11];
    const size_t name_at = pos + kHeaderBytes;
    if (namesize == 0 || name_at + namesize > a.size()) {
      return absl::DataLossError("archive ends inside a name");
    }
    std::string name = a.substr(name_at, namesize - 1);
    const size_t data_at = Align4(name_at + namesize);
    if (data_at + filesize > a.size()) return absl::DataLossError("archive ends inside data");
    if (name == kTrailer) return entries;
    entries.push_back(Entry{.name = std::move(name),
                            .mode = mode,
                            .data = a.substr(data_at, filesize),
                            .rdev_major = rmajor,
                            .rdev_minor = rminor});
    pos = Align4(data_at + filesize);
  }
}

}  // namespace forkd::agent::initramfs

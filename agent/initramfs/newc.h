// Writes (and, for tests, reads) the cpio "newc" format the kernel unpacks as
// an initramfs. Written by hand rather than with cpio(1) so that the archive is
// deterministic (fixed mtimes, uid 0) and can hold /dev/console without running
// mknod as root: the kernel opens /dev/console for init's stdio before /init
// runs, so it must already exist in the archive.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace forkd::agent::initramfs {

struct Entry {
  std::string name;   // no leading '/': "bin/sh"
  uint32_t mode = 0;  // S_IFMT type bits | permissions
  std::string data;   // file contents, or a symlink's target
  uint32_t rdev_major = 0;
  uint32_t rdev_minor = 0;
};

Entry Directory(std::string name, uint32_t perm = 0755);
Entry File(std::string name, std::string data, uint32_t perm);
Entry Symlink(std::string name, std::string target);
Entry CharDevice(std::string name, uint32_t major, uint32_t minor, uint32_t perm);

// The archive bytes: each entry, then the TRAILER!!! record.
std::string WriteNewc(const std::vector<Entry>& entries);

// Parses an archive written by WriteNewc (or cpio -H newc).
absl::StatusOr<std::vector<Entry>> ReadNewc(const std::string& archive);

}  // namespace forkd::agent::initramfs

// SHA-256 for the whole project: the one hasher (OpenSSL's SHA-256 code, SHA-NI/AVX where the CPU
// has them), the streaming file hash, and the one hex spelling of a digest. forkd/snapshot's
// manifest, the guest pin (pinned_file.h, guest_pin.h) and kernel-stage all hash through here.
//
//   #include "kernel-stage/digest.h"          // links forkd_kernel_stage
//   namespace ks = forkd::kernel_stage;
//   FORKD_ASSIGN_OR_RETURN(ks::Sha256Digest want, ks::ParseSha256Hex(flag_value));
//   FORKD_ASSIGN_OR_RETURN(ks::Sha256Digest got, ks::HashFile("/var/lib/forkd/vmlinux"));
//   if (got != want) ... ks::HexDigest(want) ... ks::HexDigest(got) ...
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <openssl/sha.h>

#include "absl/status/statusor.h"

namespace forkd::kernel_stage {

using Sha256Digest = std::array<uint8_t, 32>;

// Incremental SHA-256 through OpenSSL's direct SHA256_* functions, not EVP. OpenSSL 3's EVP
// initialises its provider machinery on first use: measured at 134 KiB of heap that stays live,
// plus ~3 MiB more code, in every process. forkd-vmm hashes on every restore and each fork is its
// own process, so that would be paid per fork. The direct functions are deprecated in OpenSSL 3
// but run the same SHA-NI/AVX code (bench/kernel_stage_bench compares against sha256sum).
class Sha256Hasher {
 public:
  Sha256Hasher();
  ~Sha256Hasher() = default;
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;

  void Update(std::span<const uint8_t> bytes);
  // The digest of everything given to Update. The hasher must not be used afterwards.
  Sha256Digest Final();

 private:
  SHA256_CTX ctx_;
};

// SHA-256 of a buffer.
Sha256Digest Sha256(std::span<const uint8_t> bytes);

// SHA-256 of the empty input: the digest stamped for "no initramfs" (guest_pin.h).
Sha256Digest EmptySha256();

// Streams the file at `path` (regular files only) through the hasher in 1 MiB reads; never holds
// the whole file. Errors carry errno and the path ("open /x: ENOENT (No such file or directory)").
absl::StatusOr<Sha256Digest> HashFile(const std::string& path);
// The same for an open fd, from its current offset to EOF. `name` is used in messages.
absl::StatusOr<Sha256Digest> HashFd(int fd, std::string_view name);

// Lowercase hex, 64 characters (what sha256sum prints).
std::string HexDigest(const Sha256Digest& d);

// Strict parse of a digest given by an operator or a file: exactly 64 hex digits (either case),
// nothing else (no whitespace, no "sha256:" prefix). INVALID_ARGUMENT saying what is wrong.
absl::StatusOr<Sha256Digest> ParseSha256Hex(std::string_view hex);

}  // namespace forkd::kernel_stage

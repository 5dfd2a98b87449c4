// See Sha256Hasher for why the direct (deprecated) SHA-256 API; defined before digest.h pulls in
// <openssl/sha.h>.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "kernel-stage/digest.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"

namespace forkd::kernel_stage {
namespace {

constexpr size_t kReadChunk = 1 << 20;

absl::string_view AV(std::string_view s) { return {s.data(), s.size()}; }

}  // namespace

static_assert(std::tuple_size_v<Sha256Digest> == SHA256_DIGEST_LENGTH);

// The SHA256_* calls only fail on a null context; abort rather than carry on with a wrong digest.
Sha256Hasher::Sha256Hasher() : ctx_{} {
  if (SHA256_Init(&ctx_) != 1) std::abort();
}

void Sha256Hasher::Update(std::span<const uint8_t> bytes) {
  if (SHA256_Update(&ctx_, bytes.data(), bytes.size()) != 1) std::abort();
}

Sha256Digest Sha256Hasher::Final() {
  Sha256Digest d{};
  if (SHA256_Final(d.data(), &ctx_) != 1) std::abort();
  return d;
}

Sha256Digest Sha256(std::span<const uint8_t> bytes) {
  Sha256Hasher h;
  h.Update(bytes);
  return h.Final();
}

Sha256Digest EmptySha256() { return Sha256({}); }

absl::StatusOr<Sha256Digest> HashFd(int fd, std::string_view name) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, absl::StrCat("stat ", AV(name)));
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(AV(name), ": not a regular file"));
  }
  // Readahead in large windows; the hash is the only consumer and reads each byte once.
  (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  // Heap, not stack: 1 MiB reads keep syscalls off the profile (measured by kernel_stage_bench).
  std::unique_ptr<uint8_t[]> buf(new uint8_t[kReadChunk]);
  Sha256Hasher h;
  while (true) {
    const ssize_t n = ::read(fd, buf.get(), kReadChunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, absl::StrCat("read ", AV(name)));
    if (n == 0) break;
    h.Update({buf.get(), static_cast<size_t>(n)});
  }
  return h.Final();
}

absl::StatusOr<Sha256Digest> HashFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd) return ErrnoStatus(errno, "open " + path);
  return HashFd(fd.get(), path);
}

std::string HexDigest(const Sha256Digest& d) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(d.size() * 2, '0');
  for (size_t i = 0; i < d.size(); ++i) {
    s[2 * i] = kHex[d[i] >> 4];
    s[2 * i + 1] = kHex[d[i] & 0xf];
  }
  return s;
}

absl::StatusOr<Sha256Digest> ParseSha256Hex(std::string_view hex) {
  if (hex.size() != 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("SHA-256 must be 64 hex characters, got ", hex.size(), " characters"));
  }
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  Sha256Digest d{};
  for (size_t i = 0; i < d.size(); ++i) {
    const int hi = nibble(hex[2 * i]);
    const int lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      const size_t at = hi < 0 ? 2 * i : 2 * i + 1;
      return absl::InvalidArgumentError(absl::StrCat(
          "SHA-256 must be 64 hex characters: character ", at + 1, " is not a hex digit"));
    }
    d[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return d;
}

}  // namespace forkd::kernel_stage

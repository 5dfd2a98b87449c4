#include "forkd/snapshot/manifest.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <optional>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"
#include "forkd/snapshot/absl_bridge.h"
#include "forkd/snapshot/file_io.h"
#include "forkd/snapshot/manifest_internal.h"
#include "forkd/snapshot/snapshot_dir.h"
#include "forkd/snapshot/state_format.h"
#include "kernel-stage/digest.h"

namespace forkd::snapshot {
namespace {

constexpr std::string_view kMagicLine = "forkd-snapshot-manifest";

// The project's one SHA-256 (OpenSSL direct API; kernel-stage/digest.h says why not EVP).
using kernel_stage::Sha256Hasher;

absl::Status Malformed(size_t line_no, std::string_view why) {
  return absl::DataLossError(absl::StrCat("manifest: line ", line_no, ": ", AV(why)));
}

// Strict decimal: digits only, no sign, no leading zeros, fits in 64 bits.
std::optional<uint64_t> ParseDecimal(std::string_view s) {
  if (s.empty() || s.size() > 20 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

std::optional<Sha256Digest> ParseHexDigest(std::string_view s) {
  // One spelling per digest: the manifest is written in lowercase and uppercase is refused.
  if (std::any_of(s.begin(), s.end(), [](char c) { return c >= 'A' && c <= 'F'; })) {
    return std::nullopt;
  }
  auto d = kernel_stage::ParseSha256Hex(s);
  if (!d.ok()) return std::nullopt;
  return *d;
}

// Splits "key value..." lines; the manifest has no other syntax.
class LineReader {
 public:
  explicit LineReader(std::string_view text) : text_(text) {}
  // The next line without its '\n'; nullopt at the end or when the last line lacks '\n'.
  std::optional<std::string_view> Next() {
    if (pos_ >= text_.size()) return std::nullopt;
    size_t nl = text_.find('\n', pos_);
    if (nl == std::string_view::npos) return std::nullopt;
    std::string_view line = text_.substr(pos_, nl - pos_);
    pos_ = nl + 1;
    ++line_no_;
    return line;
  }
  bool AtEnd() const { return pos_ == text_.size(); }
  size_t line_no() const { return line_no_; }

 private:
  std::string_view text_;
  size_t pos_ = 0;
  size_t line_no_ = 0;
};

// Reads "<key> <decimal>".
absl::StatusOr<uint64_t> KeyNumber(LineReader& lr, std::string_view key) {
  auto line = lr.Next();
  if (!line) return Malformed(lr.line_no() + 1, absl::StrCat("missing \"", AV(key), "\" line"));
  if (line->substr(0, key.size()) != key || line->size() <= key.size() ||
      (*line)[key.size()] != ' ') {
    return Malformed(lr.line_no(), absl::StrCat("expected \"", AV(key), " <number>\""));
  }
  auto v = ParseDecimal(line->substr(key.size() + 1));
  if (!v) return Malformed(lr.line_no(), absl::StrCat("bad number for ", AV(key)));
  return *v;
}

absl::StatusOr<Sha256Digest> KeyDigest(LineReader& lr, std::string_view key) {
  auto line = lr.Next();
  if (!line) return Malformed(lr.line_no() + 1, absl::StrCat("missing \"", AV(key), "\" line"));
  if (line->substr(0, key.size()) != key || line->size() <= key.size() ||
      (*line)[key.size()] != ' ') {
    return Malformed(lr.line_no(), absl::StrCat("expected \"", AV(key), " <sha256>\""));
  }
  auto d = ParseHexDigest(line->substr(key.size() + 1));
  if (!d) return Malformed(lr.line_no(), absl::StrCat("bad SHA-256 for ", AV(key)));
  return *d;
}

}  // namespace

std::string HexDigest(const Sha256Digest& d) { return kernel_stage::HexDigest(d); }

Sha256Digest Sha256(std::span<const uint8_t> bytes) { return kernel_stage::Sha256(bytes); }

std::string SerializeManifest(const Manifest& m) {
  std::string out = absl::StrCat(
      AV(kMagicLine), "\n", "format_version ", m.format_version, "\n", "chunk_size ", m.chunk_size,
      "\n", "state_size ", m.state_size, "\n", "state_sha256 ", HexDigest(m.state_sha256), "\n",
      "memory_size ", m.memory_size, "\n", "memory_chunks ", m.memory_chunks.size(), "\n");
  for (size_t i = 0; i < m.memory_chunks.size(); ++i) {
    absl::StrAppend(&out, "chunk ", i, " ", HexDigest(m.memory_chunks[i]), "\n");
  }
  return out;
}

absl::StatusOr<Manifest> ParseManifest(std::string_view text) {
  LineReader lr(text);
  auto first = lr.Next();
  if (!first || *first != kMagicLine) {
    return absl::InvalidArgumentError("manifest: bad magic: not a forkd snapshot manifest");
  }
  Manifest m;
  FORKD_ASSIGN_OR_RETURN(uint64_t version, KeyNumber(lr, "format_version"));
  if (version != kFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat("manifest: format_version ", version,
                                                      " is not supported (this build reads ",
                                                      kFormatVersion, ")"));
  }
  m.format_version = static_cast<uint32_t>(version);
  FORKD_ASSIGN_OR_RETURN(m.chunk_size, KeyNumber(lr, "chunk_size"));
  if (m.chunk_size < kMinChunkSize || m.chunk_size > kMaxChunkSize ||
      (m.chunk_size & (m.chunk_size - 1)) != 0) {
    return Malformed(lr.line_no(),
                     absl::StrCat("chunk_size ", m.chunk_size, " is not a power of two in ",
                                  kMinChunkSize, "..", kMaxChunkSize));
  }
  FORKD_ASSIGN_OR_RETURN(m.state_size, KeyNumber(lr, "state_size"));
  if (m.state_size > kMaxStateFileBytes) {
    return Malformed(lr.line_no(), absl::StrCat("state_size ", m.state_size, " exceeds the limit"));
  }
  FORKD_ASSIGN_OR_RETURN(m.state_sha256, KeyDigest(lr, "state_sha256"));
  FORKD_ASSIGN_OR_RETURN(m.memory_size, KeyNumber(lr, "memory_size"));
  if (m.memory_size > kMaxMemoryFileBytes) {
    return Malformed(lr.line_no(),
                     absl::StrCat("memory_size ", m.memory_size, " exceeds the limit"));
  }
  FORKD_ASSIGN_OR_RETURN(uint64_t chunks, KeyNumber(lr, "memory_chunks"));
  const uint64_t want = (m.memory_size + m.chunk_size - 1) / m.chunk_size;
  if (chunks != want) {
    return Malformed(lr.line_no(), absl::StrCat("memory_chunks ", chunks, ", expected ", want,
                                                " for memory_size ", m.memory_size));
  }
  // No reserve(chunks): each chunk costs a real line of input, so the vector grows only as far
  // as the text actually goes.
  for (uint64_t i = 0; i < chunks; ++i) {
    auto line = lr.Next();
    if (!line) return Malformed(lr.line_no() + 1, absl::StrCat("missing line for chunk ", i));
    const std::string prefix = absl::StrCat("chunk ", i, " ");
    if (line->substr(0, prefix.size()) != prefix) {
      return Malformed(lr.line_no(), absl::StrCat("expected \"", prefix, "<sha256>\""));
    }
    auto d = ParseHexDigest(line->substr(prefix.size()));
    if (!d) return Malformed(lr.line_no(), absl::StrCat("bad SHA-256 for chunk ", i));
    m.memory_chunks.push_back(*d);
  }
  if (!lr.AtEnd()) return Malformed(lr.line_no() + 1, "trailing data after the last chunk");
  return m;
}

namespace {

// Reads [off, off + n) with pread and feeds it to `h`, `buf.size()` bytes at a time.
absl::Status HashRange(int fd, uint64_t off, uint64_t n, std::vector<uint8_t>& buf, Sha256Hasher& h,
                       const std::string& name) {
  while (n > 0) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(n, buf.size()));
    ssize_t r = ::pread(fd, buf.data(), want, static_cast<off_t>(off));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, absl::StrCat("read ", name, " at ", off));
    }
    if (r == 0) {
      return absl::DataLossError(absl::StrCat(name, ": file shrank while hashing (at ", off, ")"));
    }
    h.Update({buf.data(), static_cast<size_t>(r)});
    off += static_cast<uint64_t>(r);
    n -= static_cast<uint64_t>(r);
  }
  return absl::OkStatus();
}

// Feeds `n` zero bytes to `h` without touching the file: a hole reads as zeros, and reading it
// costs the kernel a zero-fill and a copy per page (measured: sparse files hashed ~45% slower
// than dense ones when holes were read).
void HashZeros(uint64_t n, Sha256Hasher& h) {
  static const std::vector<uint8_t> zeros(64 * 1024, 0);
  while (n > 0) {
    const size_t k = static_cast<size_t>(std::min<uint64_t>(n, zeros.size()));
    h.Update({zeros.data(), k});
    n -= k;
  }
}

}  // namespace

absl::StatusOr<std::vector<Sha256Digest>> HashMemoryFile(int fd, uint64_t size, uint64_t chunk_size,
                                                         const std::string& name) {
  std::vector<Sha256Digest> out;
  std::vector<uint8_t> buf(static_cast<size_t>(std::min<uint64_t>(chunk_size, 1 << 20)));
  std::optional<Sha256Digest> zero_chunk;  // digest of a full chunk of zeros, computed once
  bool seek_works = true;                  // SEEK_DATA/SEEK_HOLE; without them every byte is read
  for (uint64_t off = 0; off < size; off += chunk_size) {
    const uint64_t end = off + std::min(chunk_size, size - off);
    Sha256Hasher h;
    uint64_t pos = off;
    bool whole_hole = false;
    while (pos < end) {
      if (!seek_works) {
        FORKD_RETURN_IF_ERROR(HashRange(fd, pos, end - pos, buf, h, name));
        break;
      }
      off_t data = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
      if (data < 0 && errno != ENXIO) {
        seek_works = false;
        continue;
      }
      // ENXIO: no data at or after pos.
      const uint64_t data_at =
          data < 0 ? end : std::min<uint64_t>(static_cast<uint64_t>(data), end);
      if (pos == off && data_at == end && end - off == chunk_size) {
        whole_hole = true;  // use the cached digest below
        break;
      }
      HashZeros(data_at - pos, h);
      pos = data_at;
      if (pos == end) break;
      off_t hole = ::lseek(fd, static_cast<off_t>(pos), SEEK_HOLE);
      const uint64_t hole_at =
          hole < 0 ? end : std::min<uint64_t>(static_cast<uint64_t>(hole), end);
      FORKD_RETURN_IF_ERROR(HashRange(fd, pos, hole_at - pos, buf, h, name));
      pos = hole_at;
    }
    if (whole_hole) {
      if (!zero_chunk) {
        Sha256Hasher z;
        HashZeros(chunk_size, z);
        zero_chunk = z.Final();
      }
      out.push_back(*zero_chunk);
    } else {
      out.push_back(h.Final());
    }
  }
  return out;
}

absl::Status WriteManifest(const std::filesystem::path& dir, uint64_t chunk_size) {
  if (chunk_size < kMinChunkSize || chunk_size > kMaxChunkSize ||
      (chunk_size & (chunk_size - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("manifest: chunk_size ", chunk_size, " is not a power of two in range"));
  }
  Manifest m;
  m.format_version = kFormatVersion;
  m.chunk_size = chunk_size;
  FORKD_ASSIGN_OR_RETURN(std::vector<uint8_t> state,
                         ReadFileBounded(StatePath(dir), kMaxStateFileBytes));
  m.state_size = state.size();
  m.state_sha256 = Sha256(state);

  const std::string mem_name = MemoryPath(dir).string();
  UniqueFd fd(::open(mem_name.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open " + mem_name);
  // The manifest must never vouch for memory that is still only in the page cache.
  if (::fsync(fd.get()) != 0) return ErrnoStatus(errno, "fsync " + mem_name);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "stat " + mem_name);
  if (static_cast<uint64_t>(st.st_size) > kMaxMemoryFileBytes) {
    return absl::OutOfRangeError(absl::StrCat(mem_name, ": ", st.st_size, " bytes is too large"));
  }
  m.memory_size = static_cast<uint64_t>(st.st_size);
  FORKD_ASSIGN_OR_RETURN(m.memory_chunks,
                         HashMemoryFile(fd.get(), m.memory_size, chunk_size, mem_name));
  const std::string text = SerializeManifest(m);
  return WriteFileAtomically(ManifestPath(dir),
                             {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

absl::StatusOr<std::vector<uint8_t>> VerifyAndReadState(const std::filesystem::path& dir,
                                                        VerifyMode mode, uint64_t* memory_size) {
  auto text = ReadFileBounded(ManifestPath(dir), kMaxManifestBytes);
  if (!text.ok()) {
    return Annotate(text.status(), "snapshot " + dir.string() +
                                       ": no readable manifest (incomplete or not a snapshot)");
  }
  auto manifest = ParseManifest({reinterpret_cast<const char*>(text->data()), text->size()});
  if (!manifest.ok()) return Annotate(manifest.status(), ManifestPath(dir).string());
  const Manifest& m = *manifest;

  FORKD_ASSIGN_OR_RETURN(std::vector<uint8_t> state,
                         ReadFileBounded(StatePath(dir), kMaxStateFileBytes));
  if (state.size() != m.state_size) {
    return absl::DataLossError(absl::StrCat("snapshot ", dir.string(), ": state is ", state.size(),
                                            " bytes, manifest says ", m.state_size));
  }
  if (Sha256(state) != m.state_sha256) {
    return absl::DataLossError(
        absl::StrCat("snapshot ", dir.string(), ": state SHA-256 mismatch (manifest ",
                     HexDigest(m.state_sha256), ", file ", HexDigest(Sha256(state)), ")"));
  }

  const std::string mem_name = MemoryPath(dir).string();
  UniqueFd fd(::open(mem_name.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open " + mem_name);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "stat " + mem_name);
  if (static_cast<uint64_t>(st.st_size) != m.memory_size) {
    return absl::DataLossError(absl::StrCat("snapshot ", dir.string(), ": memory is ", st.st_size,
                                            " bytes, manifest says ", m.memory_size));
  }
  if (mode == VerifyMode::kFull) {
    FORKD_ASSIGN_OR_RETURN(std::vector<Sha256Digest> got,
                           HashMemoryFile(fd.get(), m.memory_size, m.chunk_size, mem_name));
    size_t bad = 0;
    std::string first;
    for (size_t i = 0; i < got.size(); ++i) {
      if (got[i] == m.memory_chunks[i]) continue;
      if (bad++ == 0) {
        const uint64_t begin = i * m.chunk_size;
        const uint64_t end = std::min(begin + m.chunk_size, m.memory_size);
        first = absl::StrCat("memory chunk ", i, " (bytes ", begin, "..", end,
                             "): SHA-256 mismatch (manifest ", HexDigest(m.memory_chunks[i]),
                             ", file ", HexDigest(got[i]), ")");
      }
    }
    if (bad > 0) {
      return absl::DataLossError(
          absl::StrCat("snapshot ", dir.string(), ": ", first,
                       bad > 1 ? absl::StrCat("; ", bad - 1, " more chunks differ") : ""));
    }
  }
  if (memory_size) *memory_size = m.memory_size;
  return state;
}

absl::Status VerifyManifest(const std::filesystem::path& dir, VerifyMode mode) {
  auto state = VerifyAndReadState(dir, mode, nullptr);
  return state.ok() ? absl::OkStatus() : state.status();
}

}  // namespace forkd::snapshot

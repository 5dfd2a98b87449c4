#include "kernel-stage/stage.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"
#include "kernel-stage/pinned_file.h"

namespace forkd::kernel_stage {
namespace {

namespace fs = std::filesystem;

constexpr char kFailurePayload[] = "type.forkd.dev/kernel-stage.Failure";
constexpr size_t kCopyChunk = 1 << 20;

absl::Status Fail(Failure f, absl::StatusCode code, absl::string_view message) {
  absl::Status s(code, message);
  s.SetPayload(kFailurePayload, absl::Cord(absl::StrCat(static_cast<int>(f))));
  return s;
}

// An errno from writing the temp file: a full disk is its own failure.
absl::Status WriteFailure(int err, std::string_view context) {
  absl::Status s = ErrnoStatus(err, context);
  const Failure f = (err == ENOSPC || err == EDQUOT) ? Failure::kDiskFull : Failure::kLocalIo;
  return Fail(f, s.code(), s.message());
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// The temp file beside dest: removed unless committed.
class TempFile {
 public:
  static absl::StatusOr<TempFile> Create(const fs::path& dest) {
    const fs::path dir = dest.has_parent_path() ? dest.parent_path() : fs::path(".");
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) {
      const int err = errno;
      if (err == ENOENT) {
        return Fail(Failure::kLocalIo, absl::StatusCode::kNotFound,
                    absl::StrCat("destination directory ", dir.string(), " does not exist"));
      }
      return WriteFailure(err, "stat destination directory " + dir.string());
    }
    if (!S_ISDIR(st.st_mode)) {
      return Fail(Failure::kLocalIo, absl::StatusCode::kFailedPrecondition,
                  absl::StrCat("destination directory ", dir.string(), " is not a directory"));
    }
    std::string tmpl = (dir / ("." + dest.filename().string() + ".stage.XXXXXX")).string();
    UniqueFd fd(::mkostemp(tmpl.data(), O_CLOEXEC));
    if (!fd) return WriteFailure(errno, "create temp file in " + dir.string());
    return TempFile(std::move(tmpl), std::move(fd));
  }
  TempFile(TempFile&& o) noexcept : path_(std::move(o.path_)), fd_(std::move(o.fd_)) {
    o.path_.clear();
  }
  TempFile& operator=(TempFile&&) = delete;
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (!path_.empty()) (void)::unlink(path_.c_str());
  }
  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  // The file is no longer ours to remove (renamed into place or into quarantine).
  void Release() { path_.clear(); }

 private:
  TempFile(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  std::string path_;
  UniqueFd fd_;
};

// Receives the body: writes it to the temp file and hashes it on the way (one pass, no copy).
class Sink {
 public:
  Sink(int fd, std::string name, uint64_t max_bytes,
       std::function<void(uint64_t, uint64_t)> progress)
      : fd_(fd), name_(std::move(name)), max_bytes_(max_bytes), progress_(std::move(progress)) {}

  absl::Status Write(std::span<const uint8_t> bytes) {
    if (bytes.size() > max_bytes_ - size_) {
      return Fail(Failure::kTooLarge, absl::StatusCode::kOutOfRange,
                  absl::StrCat("source is larger than the limit of ", max_bytes_, " bytes"));
    }
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return WriteFailure(errno, "write " + name_);
      done += static_cast<size_t>(n);
    }
    hasher_.Update(bytes);
    size_ += bytes.size();
    if (progress_) progress_(size_, total_);
    return absl::OkStatus();
  }
  void set_total(uint64_t total) { total_ = total; }
  uint64_t size() const { return size_; }
  Sha256Digest Final() { return hasher_.Final(); }

 private:
  int fd_;
  std::string name_;
  uint64_t max_bytes_;
  std::function<void(uint64_t, uint64_t)> progress_;
  Sha256Hasher hasher_;
  uint64_t size_ = 0;
  uint64_t total_ = 0;
};

absl::Status CopyLocal(const std::string& path, Sink& sink) {
  UniqueFd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!in) {
    absl::Status s = ErrnoStatus(errno, "source " + path);
    return Fail(Failure::kSourceMissing, s.code(), s.message());
  }
  struct stat st {};
  if (::fstat(in.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return Fail(Failure::kSourceMissing, absl::StatusCode::kInvalidArgument,
                absl::StrCat("source ", path, ": not a regular file"));
  }
  sink.set_total(static_cast<uint64_t>(st.st_size));
  (void)::posix_fadvise(in.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  std::unique_ptr<uint8_t[]> buf(new uint8_t[kCopyChunk]);
  while (true) {
    const ssize_t n = ::read(in.get(), buf.get(), kCopyChunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status s = ErrnoStatus(errno, "read source " + path);
      return Fail(Failure::kSourceMissing, s.code(), s.message());
    }
    if (n == 0) return absl::OkStatus();
    FORKD_RETURN_IF_ERROR(sink.Write({buf.get(), static_cast<size_t>(n)}));
  }
}

// ---- libcurl ----

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
using CurlHandle = std::unique_ptr<CURL, CurlDeleter>;

struct Transfer {
  Sink* sink;
  CURL* curl;
  absl::Status sink_error;  // why the write callback stopped the transfer
  bool total_known = false;
};

size_t OnBody(char* data, size_t size, size_t nmemb, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * nmemb;
  if (!t->total_known) {
    curl_off_t len = -1;
    if (curl_easy_getinfo(t->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len) == CURLE_OK &&
        len >= 0) {
      t->sink->set_total(static_cast<uint64_t>(len));
    }
    t->total_known = true;
  }
  t->sink_error = t->sink->Write({reinterpret_cast<const uint8_t*>(data), n});
  return t->sink_error.ok() ? n : 0;  // 0 makes curl stop with CURLE_WRITE_ERROR
}

Failure ClassifyCurl(CURLcode rc) {
  switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
      return Failure::kUnreachable;
    case CURLE_OPERATION_TIMEDOUT:
      return Failure::kTimeout;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_USE_SSL_FAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
      return Failure::kTls;
    case CURLE_HTTP_RETURNED_ERROR:
      return Failure::kHttpStatus;
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP2:
      return Failure::kTruncated;
    case CURLE_FILESIZE_EXCEEDED:
      return Failure::kTooLarge;
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_UNSUPPORTED_PROTOCOL:  // only reachable through a redirect: the scheme is checked
      return Failure::kRedirect;
    case CURLE_FILE_COULDNT_READ_FILE:
    case CURLE_REMOTE_FILE_NOT_FOUND:
    case CURLE_READ_ERROR:
      return Failure::kSourceMissing;
    default:
      return Failure::kInternal;
  }
}

// Sets a curl option, turning a refusal into a status (a libcurl built without a feature).
template <typename T>
absl::Status Set(CURL* c, CURLoption opt, T value, const char* name) {
  const CURLcode rc = curl_easy_setopt(c, opt, value);
  if (rc == CURLE_OK) return absl::OkStatus();
  return Fail(Failure::kInternal, absl::StatusCode::kInternal,
              absl::StrCat("libcurl refused ", name, ": ", curl_easy_strerror(rc)));
}

absl::Status Download(const StageOptions& o, Sink& sink) {
  static const CURLcode init = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (init != CURLE_OK) {
    return Fail(Failure::kInternal, absl::StatusCode::kInternal,
                absl::StrCat("curl_global_init: ", curl_easy_strerror(init)));
  }
  CurlHandle curl(curl_easy_init());
  if (!curl) {
    return Fail(Failure::kInternal, absl::StatusCode::kInternal, "curl_easy_init failed");
  }
  CURL* c = curl.get();
  Transfer t{.sink = &sink, .curl = c, .sink_error = absl::OkStatus()};
  char errbuf[CURL_ERROR_SIZE] = {};
  const std::string protocols = o.allow_http ? "https,http,file" : "https,file";
  // A redirect may never lead to a local file, nor from https down to http unless allowed.
  const std::string redirect_protocols = o.allow_http ? "https,http" : "https";
  FORKD_RETURN_IF_ERROR(Set(c, CURLOPT_URL, o.source.c_str(), "URL"));
  FORKD_RETURN_IF_ERROR(Set(c, CURLOPT_PROTOCOLS_STR, protocols.c_str(), "PROTOCOLS_STR"));
  FORKD_RETURN_IF_ERROR(
      Set(c, CURLOPT_REDIR_PROTOCOLS_STR, redirect_protocols.c_str(), "REDIR_PROTOCOLS_STR"));
  FORKD_RETURN_IF_ERROR(Set(c, CURLOPT_FOLLOWLOCATION, 1L, "FOLLOWLOCATION"));
  FORKD_RETURN_IF_ERROR(Set(c, CURLOPT_MAXREDIRS, o.max_redirects, "MAXREDIRS"));
  FORKD_RETURN_IF_ERROR(Set(c, CURLOPT_FAILONERROR, 1L, "FAILONERROR"));
  FORKD_RETURN_IF_ERROR(Set(c, CURLOPT_NOSIGNAL, 1L, "NOSIGNAL"));
  FORKD_RETURN_IF_ERROR(Set(c, CURLOPT_ERRORBUFFER, errbuf, "ERRORBUFFER"));
  FORKD_RETURN_IF_ERROR(Set(c, CURLOPT_SSL_VERIFYPEER, 1L, "SSL_VERIFYPEER"));
  FORKD_RETURN_IF_ERROR(Set(c, CURLOPT_SSL_VERIFYHOST, 2L, "SSL_VERIFYHOST"));
  if (!o.ca_file.empty()) {
    FORKD_RETURN_IF_ERROR(Set(c, CURLOPT_CAINFO, o.ca_file.c_str(), "CAINFO"));
    FORKD_RETURN_IF_ERROR(Set(c, CURLOPT_CAPATH, static_cast<char*>(nullptr), "CAPATH"));
  }
  FORKD_RETURN_IF_ERROR(Set(c, CURLOPT_CONNECTTIMEOUT, static_cast<long>(o.connect_timeout.count()),
                            "CONNECTTIMEOUT"));
  FORKD_RETURN_IF_ERROR(
      Set(c, CURLOPT_TIMEOUT, static_cast<long>(o.total_timeout.count()), "TIMEOUT"));
  FORKD_RETURN_IF_ERROR(Set(c, CURLOPT_LOW_SPEED_LIMIT, 1L, "LOW_SPEED_LIMIT"));
  FORKD_RETURN_IF_ERROR(
      Set(c, CURLOPT_LOW_SPEED_TIME, static_cast<long>(o.stall_timeout.count()), "LOW_SPEED_TIME"));
  FORKD_RETURN_IF_ERROR(
      Set(c, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(o.max_bytes), "MAXFILESIZE_LARGE"));
  FORKD_RETURN_IF_ERROR(Set(c, CURLOPT_WRITEFUNCTION, &OnBody, "WRITEFUNCTION"));
  FORKD_RETURN_IF_ERROR(Set(c, CURLOPT_WRITEDATA, &t, "WRITEDATA"));

  const CURLcode rc = curl_easy_perform(c);
  if (rc == CURLE_OK) return absl::OkStatus();
  if (rc == CURLE_WRITE_ERROR && !t.sink_error.ok()) return t.sink_error;
  const std::string detail = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
  const Failure f = ClassifyCurl(rc);
  std::string message = absl::StrCat("fetch ", o.source, ": ", detail);
  if (f == Failure::kHttpStatus) {
    long status = 0;
    (void)curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    message = absl::StrCat("fetch ", o.source, ": HTTP status ", status);
  } else if (f == Failure::kTruncated) {
    message = absl::StrCat("fetch ", o.source, ": truncated body after ", sink.size(), " bytes (",
                           detail, ")");
  }
  return Fail(
      f, f == Failure::kInternal ? absl::StatusCode::kInternal : absl::StatusCode::kUnavailable,
      message);
}

// ---- placing files ----

absl::Status FsyncPath(const std::string& path, int flags) {
  UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC));
  if (!fd) return WriteFailure(errno, "open " + path);
  if (::fsync(fd.get()) != 0) return WriteFailure(errno, "fsync " + path);
  return absl::OkStatus();
}

std::string DirOf(const std::string& path) {
  const fs::path p(path);
  return p.has_parent_path() ? p.parent_path().string() : std::string(".");
}

// Renames `from` to a free quarantine name for `dest`; returns that name.
absl::StatusOr<std::string> MoveToQuarantine(const std::string& from, const std::string& dest,
                                             const Sha256Digest& actual) {
  const std::string base = QuarantinePath(dest, actual);
  for (int i = 0; i < 1000; ++i) {
    const std::string to = i == 0 ? base : absl::StrCat(base, ".", i);
    if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) {
      (void)FsyncPath(DirOf(dest), O_RDONLY | O_DIRECTORY);
      return to;
    }
    if (errno != EEXIST) return WriteFailure(errno, absl::StrCat("quarantine ", from, " as ", to));
  }
  return Fail(Failure::kLocalIo, absl::StatusCode::kResourceExhausted,
              "quarantine " + from + ": 1000 quarantined copies already exist");
}

absl::Status WriteSidecar(const std::string& dest, const Sha256Digest& d) {
  const std::string path = SidecarPath(dest);
  FORKD_ASSIGN_OR_RETURN(TempFile tmp, TempFile::Create(path));
  const std::string line =
      absl::StrCat(HexDigest(d), "  ", fs::path(dest).filename().string(), "\n");
  Sink sink(tmp.fd(), tmp.path(), line.size(), {});
  FORKD_RETURN_IF_ERROR(sink.Write({reinterpret_cast<const uint8_t*>(line.data()), line.size()}));
  if (::fchmod(tmp.fd(), 0644) != 0) return WriteFailure(errno, "chmod " + tmp.path());
  if (::fsync(tmp.fd()) != 0) return WriteFailure(errno, "fsync " + tmp.path());
  if (::rename(tmp.path().c_str(), path.c_str()) != 0) {
    return WriteFailure(errno, "rename " + tmp.path() + " to " + path);
  }
  tmp.Release();
  return FsyncPath(DirOf(dest), O_RDONLY | O_DIRECTORY);
}

// A digest mismatch: quarantine `file` (the temp file or dest) and say so in one line.
absl::Status Quarantine(Failure f, const std::string& file, const std::string& dest,
                        const std::string& what, const Sha256Digest& expected,
                        const Sha256Digest& actual) {
  (void)::unlink(SidecarPath(dest).c_str());  // it described a file that is no longer there
  auto moved = MoveToQuarantine(file, dest, actual);
  const absl::Status mismatch = DigestMismatch(what, expected, actual);
  if (!moved.ok()) {
    return Fail(f, absl::StatusCode::kFailedPrecondition,
                absl::StrCat(mismatch.message(),
                             "; and could not quarantine it: ", moved.status().message()));
  }
  return Fail(f, absl::StatusCode::kFailedPrecondition,
              absl::StrCat(mismatch.message(), "; moved to ", *moved));
}

// dest exists: verify it instead of trusting it.
absl::StatusOr<StageResult> VerifyExisting(const StageOptions& o) {
  UniqueFd fd(::open(o.dest.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd) return WriteFailure(errno, "open existing " + o.dest);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return WriteFailure(errno, "stat " + o.dest);
  auto digest = HashFd(fd.get(), o.dest);
  if (!digest.ok())
    return Fail(Failure::kLocalIo, digest.status().code(), digest.status().message());
  if (*digest != o.sha256) {
    return Quarantine(Failure::kCachedMismatch, o.dest, o.dest, "cached " + o.dest, o.sha256,
                      *digest);
  }
  FORKD_RETURN_IF_ERROR(WriteSidecar(o.dest, *digest));
  return StageResult{
      .sha256 = *digest, .size = static_cast<uint64_t>(st.st_size), .was_cached = true};
}

}  // namespace

int ExitCode(Failure f) { return static_cast<int>(f); }

Failure FailureOf(const absl::Status& status) {
  auto p = status.GetPayload(kFailurePayload);
  if (!p) return Failure::kInternal;
  const std::string s(*p);
  const int v = std::atoi(s.c_str());
  if (v < static_cast<int>(Failure::kInternal) || v > static_cast<int>(Failure::kDiskFull)) {
    return Failure::kInternal;
  }
  return static_cast<Failure>(v);
}

int ExitCodeFor(const absl::Status& status) {
  return status.ok() ? 0 : ExitCode(FailureOf(status));
}

const char* FailureName(Failure f) {
  switch (f) {
    case Failure::kInternal:
      return "internal";
    case Failure::kUsage:
      return "usage";
    case Failure::kDigestMismatch:
      return "digest-mismatch";
    case Failure::kCachedMismatch:
      return "cached-mismatch";
    case Failure::kUnreachable:
      return "unreachable";
    case Failure::kTls:
      return "tls";
    case Failure::kHttpStatus:
      return "http-status";
    case Failure::kTruncated:
      return "truncated";
    case Failure::kTooLarge:
      return "too-large";
    case Failure::kTimeout:
      return "timeout";
    case Failure::kRedirect:
      return "redirect";
    case Failure::kSourceMissing:
      return "source-missing";
    case Failure::kLocalIo:
      return "local-io";
    case Failure::kDiskFull:
      return "disk-full";
  }
  return "internal";
}

std::string SidecarPath(const std::string& dest) { return dest + ".sha256"; }

std::string QuarantinePath(const std::string& dest, const Sha256Digest& actual) {
  return dest + ".quarantine." + HexDigest(actual);
}

absl::StatusOr<StageResult> Stage(const StageOptions& o) {
  if (o.dest.empty() || o.source.empty()) {
    return Fail(Failure::kUsage, absl::StatusCode::kInvalidArgument,
                "--source and --dest are required");
  }
  const bool is_url = o.source.find("://") != std::string::npos;
  if (is_url && !StartsWith(o.source, "https://") && !StartsWith(o.source, "file://") &&
      !(o.allow_http && StartsWith(o.source, "http://"))) {
    return Fail(
        Failure::kUsage, absl::StatusCode::kInvalidArgument,
        StartsWith(o.source, "http://")
            ? absl::StrCat("refusing plain http source ", o.source, " (use https, or --allow-http)")
            : absl::StrCat("unsupported source scheme in ", o.source,
                           " (https://, file://, a path, or http:// with --allow-http)"));
  }
  struct stat st {};
  if (::lstat(o.dest.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode)) {
      return Fail(Failure::kLocalIo, absl::StatusCode::kFailedPrecondition,
                  absl::StrCat("destination ", o.dest, " exists and is not a regular file"));
    }
    return VerifyExisting(o);
  }
  if (errno != ENOENT) return WriteFailure(errno, "stat " + o.dest);

  FORKD_ASSIGN_OR_RETURN(TempFile tmp, TempFile::Create(o.dest));
  Sink sink(tmp.fd(), tmp.path(), o.max_bytes, o.progress);
  FORKD_RETURN_IF_ERROR(is_url ? Download(o, sink) : CopyLocal(o.source, sink));
  const Sha256Digest got = sink.Final();
  if (got != o.sha256) {
    absl::Status s =
        Quarantine(Failure::kDigestMismatch, tmp.path(), o.dest, o.source, o.sha256, got);
    // Renamed into quarantine; if even that failed, the destructor removes the temp file.
    if (::access(tmp.path().c_str(), F_OK) != 0) tmp.Release();
    return s;
  }
  if (::fchmod(tmp.fd(), 0644) != 0) return WriteFailure(errno, "chmod " + tmp.path());
  if (::fsync(tmp.fd()) != 0) return WriteFailure(errno, "fsync " + tmp.path());
  // RENAME_NOREPLACE: a dest that appeared meanwhile is somebody else's; verify it on the next run
  // rather than overwrite it.
  if (::renameat2(AT_FDCWD, tmp.path().c_str(), AT_FDCWD, o.dest.c_str(), RENAME_NOREPLACE) != 0) {
    return WriteFailure(errno, "rename " + tmp.path() + " to " + o.dest);
  }
  tmp.Release();
  FORKD_RETURN_IF_ERROR(FsyncPath(DirOf(o.dest), O_RDONLY | O_DIRECTORY));
  FORKD_RETURN_IF_ERROR(WriteSidecar(o.dest, got));
  return StageResult{.sha256 = got, .size = sink.size(), .was_cached = false};
}

}  // namespace forkd::kernel_stage

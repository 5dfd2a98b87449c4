#include "forkd/vmm/vstate/memory.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"
#include "forkd/vmm/arch/x86_64/layout.h"

namespace forkd::vmm {
namespace {

absl::Status CheckSize(uint64_t size) {
  if (size == 0 || size % layout::kPageSize != 0 || size > layout::kMaxGuestMemory) {
    return absl::InvalidArgumentError(absl::StrCat("guest memory size ", size,
                                                   " must be a non-zero multiple of 4 KiB up to ",
                                                   layout::kMaxGuestMemory));
  }
  return absl::OkStatus();
}

bool AllZero(const uint8_t* p, size_t n) {
  const auto* w = reinterpret_cast<const uint64_t*>(p);
  for (size_t i = 0; i < n / 8; ++i) {
    if (w[i] != 0) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<GuestMemory> GuestMemory::Anonymous(uint64_t size) {
  FORKD_RETURN_IF_ERROR(CheckSize(size));
  FORKD_ASSIGN_OR_RETURN(Mapping m, Mapping::Map(size, PROT_READ | PROT_WRITE,
                                                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0,
                                                 "anonymous guest memory"));
  return GuestMemory(std::move(m));
}

absl::StatusOr<GuestMemory> GuestMemory::FileShared(const std::string& path, uint64_t size) {
  FORKD_RETURN_IF_ERROR(CheckSize(size));
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return ErrnoStatus(errno, "open " + path);
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return ErrnoStatus(errno, "ftruncate " + path);
  }
  FORKD_ASSIGN_OR_RETURN(Mapping m, Mapping::Map(size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(),
                                                 0, "shared guest memory file"));
  return GuestMemory(std::move(m));
}

absl::StatusOr<GuestMemory> GuestMemory::FilePrivate(const std::string& path, uint64_t size) {
  FORKD_RETURN_IF_ERROR(CheckSize(size));
  // Read-only open: a fork can never write back into the snapshot.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open " + path);
  // Held while mapped: a snapshot is never written over a file in use.
  if (::flock(fd.get(), LOCK_SH | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("memory file ", path, " is being replaced by a snapshot write"));
    }
    return ErrnoStatus(errno, "flock " + path);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "fstat " + path);
  if (static_cast<uint64_t>(st.st_size) != size) {
    return absl::DataLossError(
        absl::StrCat("memory file ", path, " has ", st.st_size, " bytes, snapshot says ", size));
  }
  FORKD_ASSIGN_OR_RETURN(
      Mapping m, Mapping::Map(size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd.get(),
                              0, "private guest memory file"));
  return GuestMemory(std::move(m), std::move(fd));
}

absl::StatusOr<std::span<uint8_t>> GuestMemory::Slice(uint64_t gpa, uint64_t len) const {
  if (gpa > size() || len > size() - gpa) {
    return absl::OutOfRangeError(absl::StrCat("guest range [", absl::Hex(gpa), ", +",
                                              absl::Hex(len), ") is outside guest memory of ",
                                              size(), " bytes"));
  }
  return std::span<uint8_t>(host_base() + gpa, len);
}

absl::Status GuestMemory::Write(uint64_t gpa, std::span<const uint8_t> data) const {
  FORKD_ASSIGN_OR_RETURN(auto dst, Slice(gpa, data.size()));
  // An empty span may have a null data(): memcpy of it is undefined.
  if (!data.empty()) std::memcpy(dst.data(), data.data(), data.size());
  return absl::OkStatus();
}

absl::Status GuestMemory::SaveToFile(const std::string& path) const {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return ErrnoStatus(errno, "open " + path);
  if (::ftruncate(fd.get(), static_cast<off_t>(size())) != 0) {
    return ErrnoStatus(errno, "ftruncate " + path);
  }
  // Write runs of non-zero pages; zero pages stay holes.
  constexpr size_t kPage = layout::kPageSize;
  size_t off = 0;
  while (off < size()) {
    if (AllZero(host_base() + off, kPage)) {
      off += kPage;
      continue;
    }
    size_t end = off + kPage;
    while (end < size() && !AllZero(host_base() + end, kPage)) end += kPage;
    size_t done = off;
    while (done < end) {
      ssize_t n = ::pwrite(fd.get(), host_base() + done, end - done, static_cast<off_t>(done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, "write " + path);
      }
      done += static_cast<size_t>(n);
    }
    off = end;
  }
  return absl::OkStatus();
}

}  // namespace forkd::vmm

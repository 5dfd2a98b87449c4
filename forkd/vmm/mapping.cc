#include "forkd/vmm/mapping.h"

#include <cerrno>
#include <string>

#include "common/errno_status.h"

namespace forkd::vmm {

absl::StatusOr<Mapping> Mapping::Map(size_t size, int prot, int flags, int fd, off_t offset,
                                     const char* what) {
  void* addr = ::mmap(nullptr, size, prot, flags, fd, offset);
  if (addr == MAP_FAILED) return ErrnoStatus(errno, std::string("mmap ") + what);
  return Mapping(addr, size);
}

}  // namespace forkd::vmm

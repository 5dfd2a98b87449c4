#include "forkd/vmm/acpi/vmgenid.h"

#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include "common/errno_status.h"

namespace forkd::vmm::acpi {

absl::StatusOr<GenerationId> WriteNewGenerationId(const GuestMemory& mem, uint64_t gpa) {
  GenerationId id{};
  size_t got = 0;
  while (got < id.size()) {
    const ssize_t r = ::getrandom(id.data() + got, id.size() - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "getrandom for the VM generation ID");
    }
    got += static_cast<size_t>(r);
  }
  FORKD_RETURN_IF_ERROR(mem.Write(gpa, id));
  return id;
}

absl::StatusOr<GenerationId> ReadGenerationId(const GuestMemory& mem, uint64_t gpa) {
  FORKD_ASSIGN_OR_RETURN(auto slice, mem.Slice(gpa, sizeof(GenerationId)));
  GenerationId id{};
  std::memcpy(id.data(), slice.data(), id.size());
  return id;
}

}  // namespace forkd::vmm::acpi

#include "forkd/vmm/devices/virtio/rng.h"

#include <sys/random.h>

#include <cerrno>

#include "common/errno_status.h"

namespace forkd::vmm::virtio {
namespace {

absl::Status FillRandom(std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "getrandom");
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<bool> Rng::ProcessQueue(size_t index, std::span<Queue> queues,
                                       const GuestMemory& mem) {
  Queue& queue = queues[index];
  bool used = false;
  while (true) {
    FORKD_ASSIGN_OR_RETURN(auto chain, queue.Pop(mem));
    if (!chain) break;
    uint32_t written = 0;
    for (const Descriptor& d : chain->descriptors) {
      // Device-readable buffers carry nothing for an rng: skipped.
      if (!d.device_writable || written >= kMaxBytesPerRequest) continue;
      const uint32_t n = std::min(d.len, kMaxBytesPerRequest - written);
      FORKD_ASSIGN_OR_RETURN(auto buf, mem.Slice(d.addr, n));  // checked again: cheap
      FORKD_RETURN_IF_ERROR(FillRandom(buf));
      written += n;
    }
    FORKD_RETURN_IF_ERROR(queue.PushUsed(mem, chain->head, written));
    used = true;
  }
  return used;
}

}  // namespace forkd::vmm::virtio

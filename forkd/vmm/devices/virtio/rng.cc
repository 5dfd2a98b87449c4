#include "forkd/vmm/devices/virtio/rng.h"

#include <sys/random.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "forkd/snapshot/byte_io.h"

namespace forkd::vmm::virtio {
namespace {

constexpr uint8_t kStateVersion = 1;

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

Rng::Rng(std::optional<RateLimiterConfig> limit, RateLimiter::Clock clock, EntropyFn entropy)
    : limiter_(limit.value_or(RateLimiterConfig{}), std::move(clock)),
      limit_pinned_(limit.has_value()),
      entropy_(entropy ? std::move(entropy) : EntropyFn(&FillRandom)) {}

absl::StatusOr<bool> Rng::ProcessQueue(size_t index, std::span<Queue> queues,
                                       const GuestMemory& mem) {
  Queue& queue = queues[index];
  bool used = false;
  while (true) {
    FORKD_ASSIGN_OR_RETURN(auto chain, queue.Pop(mem));
    if (!chain) break;
    uint64_t want = 0;
    for (const Descriptor& d : chain->descriptors) want += d.device_writable ? d.len : 0;
    want = std::min<uint64_t>(want, kMaxBytesPerRequest);
    if (!limiter_.TryConsume(want)) {
      // Over the limit: the request waits (the driver's buffer stays
      // available) and the queue is run again when tokens are there.
      queue.UndoPop();
      ScheduleRetry(index, limiter_.TimeUntilReady(want));
      break;
    }
    uint32_t written = 0;
    for (const Descriptor& d : chain->descriptors) {
      // Device-readable buffers carry nothing for an rng: skipped.
      if (!d.device_writable || written >= kMaxBytesPerRequest) continue;
      const uint32_t n = std::min(d.len, kMaxBytesPerRequest - written);
      FORKD_ASSIGN_OR_RETURN(auto buf, mem.Slice(d.addr, n));  // checked again: cheap
      // A host failure, not the guest's: the transport stops the VM.
      FORKD_RETURN_IF_ERROR(
          HostFailure(Annotate(entropy_(buf), absl::StrCat("virtio-rng request ", chain->head))));
      written += n;
    }
    FORKD_RETURN_IF_ERROR(queue.PushUsed(mem, chain->head, written));
    used = true;
  }
  return used;
}

std::vector<uint8_t> Rng::SaveSpecific() const {
  if (limiter_.unlimited()) return {};  // what an rng without a limit always saved
  snapshot::ByteWriter w;
  w.U8(kStateVersion);
  WriteRateLimiterConfig(w, limiter_.config());
  return w.Take();
}

absl::Status Rng::RestoreSpecific(std::span<const uint8_t> bytes) {
  RateLimiterConfig saved;
  if (!bytes.empty()) {
    snapshot::ByteReader r(bytes, kName);
    FORKD_ASSIGN_OR_RETURN(uint8_t version, r.U8("version"));
    if (version != kStateVersion) {
      return absl::DataLossError(absl::StrCat("virtio-rng state version ", version));
    }
    FORKD_ASSIGN_OR_RETURN(saved, ReadRateLimiterConfig(r));
    FORKD_RETURN_IF_ERROR(r.Finish());
  }
  if (!limit_pinned_) limiter_.Reconfigure(saved);
  return absl::OkStatus();
}

}  // namespace forkd::vmm::virtio

#include "agent/reseed.h"

#include <fcntl.h>
#include <linux/random.h>
#include <string.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/protocol.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"

namespace forkd::agent {

absl::Status ReseedCrng(const std::string& random_device, std::string_view entropy,
                        const RandomIoctl& ioctl_fn) {
  if (entropy.size() < kMinEntropyBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "entropy is ", entropy.size(), " bytes; at least ", kMinEntropyBytes, " are required"));
  }
  if (entropy.size() > kMaxEntropyBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "entropy is ", entropy.size(), " bytes; at most ", kMaxEntropyBytes, " are accepted"));
  }
  UniqueFd dev(::open(random_device.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY));
  if (!dev) return ErrnoStatus(errno, absl::StrCat("open ", random_device));
  auto call = [&ioctl_fn](int fd, unsigned long request, void* arg) {
    return ioctl_fn ? ioctl_fn(fd, request, arg) : ::ioctl(fd, request, arg);
  };

  // struct rand_pool_info ends in a flexible array: lay it out in one buffer.
  std::vector<unsigned char> buf(sizeof(rand_pool_info) + entropy.size());
  auto* info = reinterpret_cast<rand_pool_info*>(buf.data());
  info->entropy_count = static_cast<int>(entropy.size() * 8);
  info->buf_size = static_cast<int>(entropy.size());
  memcpy(buf.data() + sizeof(rand_pool_info), entropy.data(), entropy.size());

  const int rc = call(dev.get(), RNDADDENTROPY, info);
  const int err = errno;
  // The bytes are secret key material for this fork: do not leave a copy behind.
  explicit_bzero(buf.data(), buf.size());
  if (rc != 0) return ErrnoStatus(err, absl::StrCat("ioctl RNDADDENTROPY on ", random_device));
  // The bytes are in the input pool; the CRNG's key is not yet derived from them.
  if (call(dev.get(), RNDRESEEDCRNG, nullptr) != 0) {
    return ErrnoStatus(errno, absl::StrCat("ioctl RNDRESEEDCRNG on ", random_device));
  }
  return absl::OkStatus();
}

}  // namespace forkd::agent

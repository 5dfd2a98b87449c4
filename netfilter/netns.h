// Network namespaces: handles, creation, and an RAII guard that moves the
// calling thread into a namespace and always moves it back.
//
// A netlink socket stays bound to the namespace it was created in, and a tap
// belongs to the namespace of the thread that opened /dev/net/tun; so forkd
// enters a pod's namespace only for the moment it creates such a handle.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace forkd::netfilter {

// Opens a namespace handle ("/proc/<pid>/ns/net", "/run/netns/<name>").
absl::StatusOr<UniqueFd> OpenNetns(const std::string& path);

// The calling thread's current network namespace.
absl::StatusOr<UniqueFd> CurrentNetns();

// Creates a fresh, anonymous network namespace and returns its handle; the
// calling thread stays where it was. The namespace (and every link in it)
// disappears when the last handle to it is closed.
absl::StatusOr<UniqueFd> CreateNetns();

class NetnsGuard {
 public:
  // Moves the calling thread into `target` (a namespace fd). A negative fd
  // means "stay": the guard then does nothing.
  static absl::StatusOr<NetnsGuard> Enter(int target);

  NetnsGuard(NetnsGuard&&) noexcept = default;
  NetnsGuard& operator=(NetnsGuard&&) = delete;
  NetnsGuard(const NetnsGuard&) = delete;
  NetnsGuard& operator=(const NetnsGuard&) = delete;
  // Returns the thread to its original namespace. If the kernel refuses, the
  // process aborts: a thread left in a sandbox's namespace would act on the
  // wrong network for everything it does next.
  ~NetnsGuard();

 private:
  explicit NetnsGuard(UniqueFd original) : original_(std::move(original)) {}
  UniqueFd original_;
};

}  // namespace forkd::netfilter

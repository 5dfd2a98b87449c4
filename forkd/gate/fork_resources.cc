#include "forkd/gate/fork_resources.h"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/errno_status.h"
#include "netfilter/links.h"
#include "netfilter/nftables.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace forkd::gate {
namespace {

// How long a killed VMM may take to disappear before the reap reports it.
constexpr int kExitWaitMs = 5000;

// Waits for the process behind `pidfd` to exit, reaping it when it is our
// child. `grace_ms` > 0: first give it that long to exit by itself.
absl::Status KillAndWait(int pidfd, const std::string& who, const char* what, int grace_ms = 0) {
  pollfd p{pidfd, POLLIN, 0};
  int n = 0;
  if (grace_ms > 0) {
    while ((n = ::poll(&p, 1, grace_ms)) < 0 && errno == EINTR) {
    }
  }
  if (n <= 0 && ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0) != 0 &&
      errno != ESRCH) {
    return ErrnoStatus(errno, who + ": kill " + what);
  }
  siginfo_t info{};
  while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED) != 0) {
    if (errno == EINTR) continue;
    if (errno != ECHILD) return ErrnoStatus(errno, who + ": wait for " + what);
    // Not our child (a VMM is its keeper's; a keeper after a restart is
    // init's): the pidfd turns readable on exit.
    while ((n = ::poll(&p, 1, kExitWaitMs)) < 0 && errno == EINTR) {
    }
    if (n < 0) return ErrnoStatus(errno, who + ": wait for " + what + " exit");
    if (n == 0)
      return absl::DeadlineExceededError(who + ": " + what + " still alive after SIGKILL");
    break;
  }
  return absl::OkStatus();
}

void Keep(absl::Status& first, absl::Status next) {
  if (first.ok() && !next.ok()) first = std::move(next);
}

absl::Status RemoveNetwork(const ForkResources& fork, const std::string& who) {
  absl::Status first;
  auto nft = netfilter::Nftables::Open(fork.netns.get(), fork.nft_shards);
  if (!nft.ok()) {
    Keep(first, Annotate(nft.status(), who));
  } else if (absl::Status s = nft->RemoveTap(fork.tap); s.code() == absl::StatusCode::kNotFound) {
    // Not in the table nft_shards selects: gone, unless a skeleton with
    // another shard count put it elsewhere, where this reap cannot see it.
    auto taps = nft->ListTaps();
    if (!taps.ok()) {
      Keep(first, Annotate(taps.status(), who));
    } else if (std::find(taps->begin(), taps->end(), fork.tap) != taps->end()) {
      Keep(first, absl::FailedPreconditionError(
                      who + ": tap " + fork.tap + " is installed in another filter table than " +
                      std::to_string(fork.nft_shards) + " shard(s) select"));
    }
  } else if (!s.ok()) {
    Keep(first, Annotate(s, who));
  }
  auto rt = netfilter::RtNetlink::Open(fork.netns.get());
  if (!rt.ok()) {
    Keep(first, Annotate(rt.status(), who));
  } else if (rt->LinkExists(fork.tap)) {
    Keep(first, Annotate(rt->DeleteLink(fork.tap), who));
  }
  return first;
}

}  // namespace

absl::StatusOr<UniqueFd> OpenPidfd(pid_t pid) {
  UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!fd) return ErrnoStatus(errno, "pidfd_open " + std::to_string(pid));
  return fd;
}

absl::Status Reap(ForkResources& fork) {
  const std::string who = "reap fork " + fork.fork_id;
  absl::Status first;
  const bool had_vmm = static_cast<bool>(fork.vmm_pidfd);
  if (fork.vmm_pidfd) {
    absl::Status s = KillAndWait(fork.vmm_pidfd.get(), who, "VMM");
    if (s.ok()) fork.vmm_pidfd.reset();
    Keep(first, s);
  }
  if (fork.keeper_pidfd) {
    // A keeper exits right after reaping its VMM; one whose VMM is gone
    // already (an orphan found by recovery) has nothing left to wait for.
    absl::Status s = KillAndWait(fork.keeper_pidfd.get(), who, "VMM keeper",
                                 had_vmm && !fork.vmm_pidfd ? kExitWaitMs : 0);
    if (s.ok()) fork.keeper_pidfd.reset();
    Keep(first, s);
  }
  if (!fork.tap.empty()) {
    absl::Status s = RemoveNetwork(fork, who);
    if (s.ok()) fork.tap.clear();
    Keep(first, s);
  }
  std::vector<std::filesystem::path> left;
  for (const auto& path : fork.paths) {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
    if (ec) {
      left.push_back(path);
      Keep(first, absl::InternalError(who + ": remove " + path.string() + ": " + ec.message()));
    }
  }
  fork.paths = std::move(left);
  return first;
}

}  // namespace forkd::gate

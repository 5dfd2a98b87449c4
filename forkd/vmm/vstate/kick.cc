#include "forkd/vmm/vstate/kick.h"

#include <signal.h>

#include <mutex>

namespace forkd::vmm {
namespace {

// Written only by the handler running on this thread and by ClearKick on the
// same thread: a lock-free per-thread flag is async-signal-safe.
thread_local volatile sig_atomic_t kicked = 0;

void KickHandler(int) { kicked = 1; }

}  // namespace

int KickSignal() { return SIGRTMIN + 1; }

void InstallKickSignalHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = KickHandler;
    sigemptyset(&sa.sa_mask);
    // No SA_RESTART: KVM_RUN and the serial port's poll must return EINTR.
    sa.sa_flags = 0;
    sigaction(KickSignal(), &sa, nullptr);
  });
}

bool KickedSinceRun() { return kicked != 0; }

void ClearKick() { kicked = 0; }

}  // namespace forkd::vmm

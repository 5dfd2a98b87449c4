// The signal that kicks a vCPU thread out of KVM_RUN (pause, stop), and a
// per-thread record that it arrived. A kick can land while the vCPU thread is
// outside KVM_RUN, handling an exit; anything that blocks on that thread (the
// serial port's write to a full pipe) checks KickedSinceRun() so a kick that
// came before it started blocking is not lost.
#pragma once

namespace forkd::vmm {

// The real-time signal used for kicks.
int KickSignal();

// Installs the handler of KickSignal() (records the kick on the receiving
// thread; no SA_RESTART, so KVM_RUN and poll return EINTR). Idempotent.
void InstallKickSignalHandler();

// Whether this thread was kicked since it last called ClearKick().
bool KickedSinceRun();

// Called by the vCPU loop right before each KVM_RUN. A kick after this point
// finds immediate_exit set (pause and stop set it before kicking), so KVM_RUN
// returns at once.
void ClearKick();

}  // namespace forkd::vmm

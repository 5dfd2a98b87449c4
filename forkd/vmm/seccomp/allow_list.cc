#include "forkd/vmm/seccomp/allow_list.h"

#include <linux/kvm.h>
#include <signal.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "forkd/vmm/vstate/kvm_abi.h"

namespace forkd::vmm::seccomp {
namespace {

// What every thread of the process needs from glibc and libstdc++: memory,
// futexes (mutexes, condition variables, joins), signal return, thread and
// process exit, the clock when the vDSO is not used, and stderr for errors.
// Nothing here creates a thread or a process, opens a file or maps
// executable memory.
std::vector<Syscall> Runtime() {
  return {
      {"brk", ArgRule::kAny, "malloc"},
      {"mmap", ArgRule::kNoExec, "malloc arenas and large blocks; never executable"},
      {"mprotect", ArgRule::kNoExec, "malloc arena growth; never executable"},
      {"munmap", ArgRule::kAny, "free"},
      {"mremap", ArgRule::kAny, "realloc of large blocks"},
      {"madvise", ArgRule::kAny, "free, thread stack release"},
      {"futex", ArgRule::kAny, "mutexes, condition variables, thread join"},
      {"rt_sigreturn", ArgRule::kAny, "return from the vCPU kick handler"},
      {"rt_sigprocmask", ArgRule::kAny, "glibc around thread exit and abort()"},
      {"restart_syscall", ArgRule::kAny, "kernel restart after a signal"},
      {"clock_gettime", ArgRule::kAny, "when the vDSO falls back"},
      {"gettimeofday", ArgRule::kAny, "when the vDSO falls back"},
      {"nanosleep", ArgRule::kAny, "std::this_thread::sleep_for"},
      {"clock_nanosleep", ArgRule::kAny, "std::this_thread::sleep_for"},
      {"sched_yield", ArgRule::kAny, "spin waits in libstdc++"},
      {"getpid", ArgRule::kAny, "pthread_kill, abort()"},
      {"gettid", ArgRule::kAny, "abort()"},
      {"tgkill", ArgRule::kKillSignals, "vCPU kicks, waking the signal waiter, abort()"},
      {"write", ArgRule::kAny, "serial output, eventfds, control lines, stderr"},
      {"fstat", ArgRule::kAny, "stdio on an error path"},
      {"newfstatat", ArgRule::kAny, "stdio on an error path; std::filesystem"},
      {"exit", ArgRule::kAny, "thread exit"},
      {"exit_group", ArgRule::kAny, "process exit"},
  };
}

std::vector<Syscall> Join(std::vector<Syscall> a, const std::vector<Syscall>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

AllowList MakeVcpu() {
  // A vCPU thread runs KVM_RUN and handles each exit on the spot: port I/O
  // and MMIO to the serial port, the i8042, virtio-mmio registers. With
  // --no-ioeventfd a QueueNotify is processed here too, so the devices'
  // data-path calls (rng, net tx/rx, vsock wake-ups) are listed.
  return {ThreadKind::kVcpu,
          Join(Runtime(),
               {
                   {"ioctl", ArgRule::kIoctlList, "KVM_RUN and interrupt lines"},
                   {"read", ArgRule::kAny, "tap rx and eventfds (MMIO notify path)"},
                   {"readv", ArgRule::kAny, "tap rx (MMIO notify path)"},
                   {"writev", ArgRule::kAny, "tap tx (MMIO notify path)"},
                   {"getrandom", ArgRule::kAny, "virtio-rng (MMIO notify path), random MAC"},
                   {"timerfd_settime", ArgRule::kAny, "rate-limit retry timers (MMIO notify path)"},
               }),
          {
              {KVM_RUN, "KVM_RUN"},
              {KVM_IRQ_LINE, "KVM_IRQ_LINE"},
          }};
}

AllowList MakeDevice() {
  // The queue notifier (epoll over ioeventfds), the vsock muxer (unix
  // sockets to host processes), the net pump (tap rx) and the serial input
  // pump. They process guest queues and talk to host sockets; they never
  // touch the vCPUs or the file system (the muxer's listener already exists).
  return {ThreadKind::kDevice,
          Join(Runtime(),
               {
                   {"ioctl", ArgRule::kIoctlList, "interrupt lines (serial input)"},
                   {"read", ArgRule::kAny, "eventfds, tap, host sockets, serial input"},
                   {"readv", ArgRule::kAny, "tap rx"},
                   {"writev", ArgRule::kAny, "tap tx"},
                   {"epoll_wait", ArgRule::kAny, "queue notifier"},
                   {"epoll_pwait", ArgRule::kAny, "queue notifier (glibc's epoll_wait)"},
                   {"poll", ArgRule::kAny, "muxer, net pump, serial input"},
                   {"ppoll", ArgRule::kAny, "glibc's poll"},
                   {"getrandom", ArgRule::kAny, "virtio-rng"},
                   {"timerfd_settime", ArgRule::kAny, "rate-limit retry timers"},
                   {"accept4", ArgRule::kAny, "vsock muxer: host connections"},
                   {"socket", ArgRule::kUnixSocket, "vsock muxer: guest connections to PATH_P"},
                   {"connect", ArgRule::kAny, "vsock muxer: guest connections to PATH_P"},
                   {"getsockopt", ArgRule::kAny, "vsock muxer: non-blocking connect result"},
                   {"sendto", ArgRule::kAny, "vsock muxer: send()"},
                   {"recvfrom", ArgRule::kAny, "vsock muxer: recv()"},
                   {"shutdown", ArgRule::kAny, "vsock muxer: half-close"},
                   {"close", ArgRule::kAny, "vsock muxer: closed connections"},
                   {"fcntl", ArgRule::kFcntlFlags, "non-blocking sockets"},
               }),
          {
              {KVM_IRQ_LINE, "KVM_IRQ_LINE"},
          }};
}

AllowList MakeControl() {
  // The main thread (waits for the VM to end, then stops it), the control
  // protocol reader (PAUSE, RESUME, STOP, SNAPSHOT) and the signal waiter.
  // SNAPSHOT reads every vCPU's and the VM's state and writes the snapshot
  // directory, hence the file calls and the KVM_GET_* ioctls; no KVM_SET_*,
  // no KVM_RUN, no sockets, no new threads or processes.
  return {ThreadKind::kControl,
          Join(Runtime(),
               {
                   {"ioctl", ArgRule::kIoctlList, "KVM_GET_* for SNAPSHOT"},
                   {"read", ArgRule::kAny, "control fd, snapshot files"},
                   {"pread64", ArgRule::kAny, "snapshot memory hashing"},
                   {"pwrite64", ArgRule::kAny, "snapshot memory"},
                   {"lseek", ArgRule::kAny, "snapshot files"},
                   {"rt_sigtimedwait", ArgRule::kAny, "sigwait for SIGTERM/SIGINT"},
                   {"openat", ArgRule::kAny, "snapshot files"},
                   {"close", ArgRule::kAny, "snapshot files"},
                   {"statx", ArgRule::kAny, "snapshot directory (std::filesystem)"},
                   {"mkdir", ArgRule::kAny, "snapshot directory"},
                   {"mkdirat", ArgRule::kAny, "snapshot directory"},
                   {"ftruncate", ArgRule::kAny, "sparse memory file"},
                   {"fsync", ArgRule::kAny, "snapshot durability"},
                   {"fdatasync", ArgRule::kAny, "snapshot durability"},
                   {"getrandom", ArgRule::kAny, "mkostemp's random names"},
                   {"fchmod", ArgRule::kAny, "snapshot file mode"},
                   {"flock", ArgRule::kAny, "refuse a snapshot over memory a fork maps"},
                   {"rename", ArgRule::kAny, "atomic snapshot files"},
                   {"renameat", ArgRule::kAny, "atomic snapshot files"},
                   {"renameat2", ArgRule::kAny, "atomic snapshot files"},
                   {"unlink", ArgRule::kAny, "temporary files, the vsock socket at exit"},
                   {"unlinkat", ArgRule::kAny, "temporary files"},
                   {"uname", ArgRule::kAny, "snapshot CPU identity"},
                   {"fcntl", ArgRule::kFcntlFlags, "fd checks"},
               }),
          {
              {KVM_CHECK_EXTENSION, "KVM_CHECK_EXTENSION"},
              {KVM_GET_MP_STATE, "KVM_GET_MP_STATE"},
              {KVM_GET_REGS, "KVM_GET_REGS"},
              {KVM_GET_SREGS, "KVM_GET_SREGS"},
              {kvm_abi::kGetXsave, "KVM_GET_XSAVE"},
              {kvm_abi::kGetXsave2, "KVM_GET_XSAVE2"},
              {KVM_GET_FPU, "KVM_GET_FPU"},
              {KVM_GET_XCRS, "KVM_GET_XCRS"},
              {KVM_GET_LAPIC, "KVM_GET_LAPIC"},
              {KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS"},
              {KVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS"},
              {KVM_GET_TSC_KHZ, "KVM_GET_TSC_KHZ"},
              {kvm_abi::kGetMsrs, "KVM_GET_MSRS"},
              {KVM_GET_IRQCHIP, "KVM_GET_IRQCHIP"},
              {KVM_GET_PIT2, "KVM_GET_PIT2"},
              {KVM_GET_CLOCK, "KVM_GET_CLOCK"},
          }};
}

const char* RuleText(ArgRule rule) {
  switch (rule) {
    case ArgRule::kAny:
      return "";
    case ArgRule::kIoctlList:
      return "request in the list below";
    case ArgRule::kNoExec:
      return "prot without PROT_EXEC";
    case ArgRule::kKillSignals:
      return "signal is the vCPU kick, SIGTERM or SIGABRT";
    case ArgRule::kUnixSocket:
      return "domain AF_UNIX";
    case ArgRule::kFcntlFlags:
      return "F_GETFD, F_SETFD, F_GETFL, F_SETFL";
  }
  return "";
}

}  // namespace

const AllowList& AllowListFor(ThreadKind kind) {
  static const AllowList vcpu = MakeVcpu();
  static const AllowList device = MakeDevice();
  static const AllowList control = MakeControl();
  switch (kind) {
    case ThreadKind::kVcpu:
      return vcpu;
    case ThreadKind::kDevice:
      return device;
    case ThreadKind::kControl:
      break;
  }
  return control;
}

// SIGRTMIN + 1 is the vCPU kick (vstate/kick.cc); SIGRTMIN is a glibc
// runtime value, hence a function.
std::vector<int> AllowedKillSignals() { return {SIGRTMIN + 1, SIGTERM, SIGABRT}; }

std::string RenderMarkdown() {
  std::string out =
      "# forkd-vmm seccomp allow-lists (generated)\n\n"
      "Generated by `forkd-vmm --print-seccomp` from `forkd/vmm/seccomp/allow_list.cc`;\n"
      "`vmm_seccomp_test` fails when this file differs from the code. Each thread installs\n"
      "the filter of its kind before the guest runs (see the threat model); any call not\n"
      "listed, or listed with other arguments, kills the whole process with SIGSYS.\n";
  for (ThreadKind kind : kThreadKinds) {
    const AllowList& list = AllowListFor(kind);
    absl::StrAppend(&out, "\n## ", ThreadKindName(kind), " threads\n\n",
                    "| syscall | arguments | why |\n|---|---|---|\n");
    for (const Syscall& s : list.syscalls) {
      absl::StrAppend(&out, "| `", s.name, "` | ", RuleText(s.rule), " | ", s.why, " |\n");
    }
    if (!list.ioctls.empty()) {
      absl::StrAppend(&out, "\nioctl requests:\n\n");
      for (const Ioctl& i : list.ioctls) {
        absl::StrAppend(&out, "- `", i.name, "` (", absl::StrFormat("0x%x", i.request), ")\n");
      }
    }
  }
  return out;
}

}  // namespace forkd::vmm::seccomp

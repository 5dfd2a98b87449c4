// seccomp_bench: what compiling forkd-vmm's seccomp programs at build time
// (forkd/vmm/seccomp/precompiled.h) saves every forkd-vmm start.
//
// Each round forks a child, as a forkd-vmm start is a fresh process, that
// makes every thread kind's filter ready and installs the vCPU one on
// itself: (a) compiled at run time with libseccomp from the allow-lists, as
// forkd-vmm did before; (b) from the precompiled programs. Alternating in
// one run; timed from fork to the child's exit being reaped. No KVM needed.
//
// Last line: RESULT seccomp_arm runtime_p50_us=<n> precompiled_p50_us=<n> speedup=<x>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "forkd/vmm/seccomp/allow_list.h"
#include "forkd/vmm/seccomp/filter.h"
#include "forkd/vmm/seccomp/precompiled.h"

namespace forkd::vmm::seccomp {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kRounds = 200;

// The child's work; exits 0 when the filter is installed.
[[noreturn]] void Child(bool precompiled) {
  if (precompiled) {
    for (ThreadKind kind : kThreadKinds) {
      if (PrecompiledProgram(kind).empty()) _exit(2);
    }
    _exit(InstallOnThisThread(PrecompiledProgram(ThreadKind::kVcpu)).ok() ? 0 : 3);
  }
  std::vector<BpfProgram> programs;
  for (ThreadKind kind : kThreadKinds) {
    auto prog = Compile(AllowListFor(kind));
    if (!prog.ok()) _exit(2);
    programs.push_back(*std::move(prog));
  }
  _exit(InstallOnThisThread(programs[0].insns).ok() ? 0 : 3);
}

double Round(bool precompiled) {
  const auto t0 = Clock::now();
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("fork");
    std::exit(1);
  }
  if (pid == 0) Child(precompiled);
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "seccomp_bench: child failed (status %d)\n", status);
    std::exit(1);
  }
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

double P50(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Main() {
  std::vector<double> runtime_us, pre_us;
  Round(false);  // warm both paths
  Round(true);
  for (int i = 0; i < kRounds; ++i) {
    runtime_us.push_back(Round(false));
    pre_us.push_back(Round(true));
  }
  const double rt = P50(runtime_us), pre = P50(pre_us);
  std::printf(
      "seccomp: %d alternating forked children, every kind's program made ready and the vCPU "
      "one installed\n  compiled at run time p50 %.0f us; precompiled p50 %.0f us\n",
      kRounds, rt, pre);
  std::printf("RESULT seccomp_arm runtime_p50_us=%.0f precompiled_p50_us=%.0f speedup=%.2f\n", rt,
              pre, rt / pre);
  return 0;
}

}  // namespace
}  // namespace forkd::vmm::seccomp

int main() { return forkd::vmm::seccomp::Main(); }

// guest_boot_bench: cold boot to the agent's first Ping answer, forkd's
// minimal guest kernel (agent/kernel/build-minimal-kernel: every driver built
// in, the plain agent initramfs) against the stock template kernel (Debian's
// cloud kernel, its virtio/vsock modules loaded by the agent), in the same run.
//
// Kernels from the environment, as the emulated-SVM tier sets them
// (docs/guest-kernel.md, "The minimal kernel"): FORKD_LINUX_KERNEL and
// FORKD_LINUX_INITRD (baseline), FORKD_LINUX_KERNEL_MINIMAL and
// FORKD_LINUX_INITRD_MINIMAL. The two alternate, kRoundsPerKind boots each;
// every VM is stopped before the next starts. Times spawn of forkd-vmm ->
// READY -> an answered Ping over vsock.
//
// Last line: RESULT guest_boot stock_p50_ms=<n> minimal_p50_ms=<n> speedup=<x>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/svm/linux_guest.h"
#include "tests/vmm/vmm_process.h"

namespace forkd::vmm::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr int kRoundsPerKind = 5;
// Hang guard only: the stock kernel answers in ~12 s in the emulated tier, and a
// kernel that never answers (its console is printed) must not eat the session.
constexpr auto kBootGuard = 150s;

[[noreturn]] void Die(const std::string& why) {
  (void)std::fprintf(stderr, "guest_boot_bench: %s\n", why.c_str());
  std::exit(1);
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') Die(std::string(name) + " is not set");
  return v;
}

double P50(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double BootToPing(const std::string& kernel, const std::string& initrd, const fs::path& dir,
                  int n) {
  const std::string uds = (dir / ("vm" + std::to_string(n) + ".sock")).string();
  const auto t0 = Clock::now();
  auto vm = testing::BootLinuxImage(kernel, initrd, uds);
  if (!vm.ok()) Die(kernel + ": " + vm.status().ToString());
  auto client = testing::ConnectAgent(uds, kBootGuard);
  if (!client.ok()) {
    Die(kernel + ": " + client.status().ToString() + "\nserial:\n" + (*vm)->serial().text());
  }
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  (*vm)->Send("STOP");
  (*vm)->ReadLine();
  if ((*vm)->Wait() != 0) Die(kernel + ": forkd-vmm did not stop cleanly");
  std::printf("boot %d %s %.0f ms\n", n, kernel.c_str(), ms);
  (void)std::fflush(stdout);
  return ms;
}

int Main() {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) Die("needs read-write /dev/kvm");
  const std::string stock = Env("FORKD_LINUX_KERNEL");
  const std::string stock_initrd = Env("FORKD_LINUX_INITRD");
  const std::string minimal = Env("FORKD_LINUX_KERNEL_MINIMAL");
  const std::string minimal_initrd = Env("FORKD_LINUX_INITRD_MINIMAL");
  const fs::path dir = fs::temp_directory_path() / ("forkd_boot_bench." + std::to_string(getpid()));
  fs::create_directories(dir);
  std::vector<double> stock_ms, minimal_ms;
  for (int i = 0; i < 2 * kRoundsPerKind; ++i) {
    if (i % 2 == 0) {
      stock_ms.push_back(BootToPing(stock, stock_initrd, dir, i));
    } else {
      minimal_ms.push_back(BootToPing(minimal, minimal_initrd, dir, i));
    }
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  const double s = P50(stock_ms), m = P50(minimal_ms);
  std::printf("RESULT guest_boot stock_p50_ms=%.0f minimal_p50_ms=%.0f speedup=%.2f\n", s, m,
              s / m);
  return 0;
}

}  // namespace
}  // namespace forkd::vmm::bench

int main() { return forkd::vmm::bench::Main(); }

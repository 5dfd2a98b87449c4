// kernel_stage_bench: verifying a pinned file with forkd's hasher (kernel-stage/digest.h:
// HashFile, OpenSSL's SHA-256 with whatever SHA-NI/AVX the CPU has) against `sha256sum` of the
// same file, alternating in one run.
//
// A 64 MiB file of random bytes is written to $TMPDIR and read once so both sides hash from the
// page cache. Each round times HashFile in this process and a `sha256sum` process (its exec
// included: that is what a shell pipeline verifying a kernel pays), and checks both digests agree.
//
// Last line: RESULT kernel_verify mib_per_s=<p50> sha256sum_mib_per_s=<p50> ratio=<ours / theirs>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "kernel-stage/digest.h"

namespace forkd::kernel_stage::bench {
namespace {

constexpr size_t kFileBytes = 64u << 20;
constexpr int kRounds = 9;
constexpr double kMiB = 1024.0 * 1024.0;

[[noreturn]] void Die(const std::string& what) {
  (void)std::fprintf(stderr, "kernel_stage_bench: %s\n", what.c_str());
  std::exit(1);
}

double P50(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Runs `sha256sum path`; returns its hex digest.
std::string Sha256sum(const std::string& path) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) Die("pipe");
  const pid_t pid = ::fork();
  if (pid < 0) Die("fork");
  if (pid == 0) {
    if (::dup2(p[1], STDOUT_FILENO) < 0) _exit(127);
    ::execlp("sha256sum", "sha256sum", path.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  ::close(p[1]);
  std::string out;
  char buf[256];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    Die("sha256sum failed");
  }
  return out.substr(0, 64);
}

int Main() {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("kernel_stage_bench." + std::to_string(getpid()));
  {
    std::vector<uint8_t> data(kFileBytes);
    std::mt19937_64 rng(1);
    for (size_t i = 0; i < data.size(); i += 8) {
      const uint64_t v = rng();
      std::copy_n(reinterpret_cast<const uint8_t*>(&v), 8, data.data() + i);
    }
    FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr || std::fwrite(data.data(), 1, data.size(), f) != data.size() ||
        std::fclose(f) != 0) {
      Die("write " + path.string());
    }
  }
  auto warm = HashFile(path.string());  // page cache
  if (!warm.ok()) Die(std::string(warm.status().message()));
  const std::string want = HexDigest(*warm);

  std::vector<double> ours, theirs;
  for (int round = 0; round < kRounds; ++round) {
    auto t0 = std::chrono::steady_clock::now();
    auto d = HashFile(path.string());
    const double a = Seconds(std::chrono::steady_clock::now() - t0);
    if (!d.ok() || HexDigest(*d) != want) Die("HashFile gave another digest");
    t0 = std::chrono::steady_clock::now();
    const std::string s = Sha256sum(path.string());
    const double b = Seconds(std::chrono::steady_clock::now() - t0);
    if (s != want) Die("sha256sum disagrees: " + s + " vs " + want);
    ours.push_back(static_cast<double>(kFileBytes) / kMiB / a);
    theirs.push_back(static_cast<double>(kFileBytes) / kMiB / b);
    (void)std::printf("round %d: HashFile %.0f MiB/s, sha256sum %.0f MiB/s\n", round, ours.back(),
                      theirs.back());
  }
  std::filesystem::remove(path);
  const double o = P50(ours), t = P50(theirs);
  (void)std::printf("RESULT kernel_verify mib_per_s=%.0f sha256sum_mib_per_s=%.0f ratio=%.2f\n", o,
                    t, o / t);
  return 0;
}

}  // namespace
}  // namespace forkd::kernel_stage::bench

int main() { return forkd::kernel_stage::bench::Main(); }

// Times SaveSnapshot's hashing and OpenSnapshot in both VerifyModes on a 256 MiB memory file
// laid out three ways, so the VerifyMode trade-off in manifest.h is backed by numbers from this
// machine:
//   dense      every page written
//   scattered  8 of every 64 pages written, the rest holes (no 2 MiB chunk is all hole)
//   front      the first 40 MiB written, the rest one hole (a guest that touched 40 MiB,
//              like the snapshots in kvm-feasibility.md)
//
//   verify_bench [DIR]     (default: a fresh directory under /tmp)
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "forkd/snapshot/snapshot_dir.h"
#include "forkd/snapshot/test_states.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace snap = forkd::snapshot;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

enum class Layout { kDense, kScattered, kFront };

const char* Name(Layout l) {
  switch (l) {
    case Layout::kDense:
      return "dense    ";
    case Layout::kScattered:
      return "scattered";
    case Layout::kFront:
      return "front    ";
  }
  return "?";
}

bool WriteMemory(const std::filesystem::path& path, uint64_t size, Layout layout) {
  forkd::UniqueFd fd(::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644));
  if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return false;
  std::mt19937_64 rng(1);
  std::vector<uint64_t> page(4096 / 8);
  for (uint64_t off = 0; off < size; off += 4096) {
    if (layout == Layout::kScattered && (off / 4096) % 64 >= 8) continue;
    if (layout == Layout::kFront && off >= (40ull << 20)) break;
    for (auto& w : page) w = rng();
    if (::pwrite(fd.get(), page.data(), 4096, static_cast<off_t>(off)) != 4096) return false;
  }
  return true;
}

int Run(const std::filesystem::path& dir, Layout layout) {
  constexpr uint64_t kSize = 256ull << 20;
  std::filesystem::create_directories(dir);
  if (!WriteMemory(snap::MemoryPath(dir), kSize, layout)) {
    std::perror("write memory");
    return 1;
  }
  snap::SnapshotState s = snap::testing::RandomState(1, 1, 3);
  s.header.memory = {{.guest_phys_addr = 0, .size = kSize, .file_offset = 0}};
  s.header.cpu = snap::HostCpuIdentity();
  auto t0 = Clock::now();
  absl::Status saved = snap::SaveSnapshot(dir, s);
  auto t1 = Clock::now();
  if (!saved.ok()) {
    (void)std::fprintf(stderr, "%s\n", std::string(saved.message()).c_str());
    return 1;
  }
  (void)std::printf("%s 256 MiB: SaveSnapshot (fsync + hash) %.1f ms\n", Name(layout), Ms(t1 - t0));
  for (snap::VerifyMode mode : {snap::VerifyMode::kStateOnly, snap::VerifyMode::kFull}) {
    double best = 1e18;
    for (int i = 0; i < 5; ++i) {
      auto a = Clock::now();
      auto o = snap::OpenSnapshot(dir, mode, s.header.cpu);
      auto b = Clock::now();
      if (!o.ok()) {
        (void)std::fprintf(stderr, "%s\n", std::string(o.status().message()).c_str());
        return 1;
      }
      best = std::min(best, Ms(b - a));
    }
    (void)std::printf("%s 256 MiB: OpenSnapshot %-10s best of 5: %.3f ms\n", Name(layout),
                      mode == snap::VerifyMode::kFull ? "kFull" : "kStateOnly", best);
  }
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::filesystem::path base = argc > 1
                                         ? std::filesystem::path(argv[1])
                                         : std::filesystem::temp_directory_path() /
                                               ("forkd-verify-bench-" + std::to_string(::getpid()));
  for (Layout l : {Layout::kDense, Layout::kScattered, Layout::kFront}) {
    if (int rc = Run(base / "snap", l); rc != 0) return rc;
  }
  std::filesystem::remove_all(base);
  return 0;
}

// Tier 2: pause/resume, snapshot -> restore continuity, N concurrent CoW
// forks of one snapshot, and no fd/mapping leaks across create/destroy.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>
#include <future>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/errno_status.h"
#include "forkd/snapshot/cpu_identity.h"
#include "forkd/snapshot/manifest.h"
#include "forkd/snapshot/snapshot_dir.h"
#include "forkd/vmm/acpi/vmgenid.h"
#include "forkd/vmm/arch/x86_64/layout.h"
#include "forkd/vmm/persist.h"
#include "gtest/gtest.h"
#include "tests/support/requirements.h"
#include "tests/support/temp_dir.h"
#include "tests/vmm/probe_harness.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kKvm);

namespace forkd::vmm::testing {
namespace {

namespace fs = std::filesystem;

// One directory per test, named after this suite.
class TempDir : public forkd::testing::TempDir {
 public:
  TempDir() : forkd::testing::TempDir("vmm_snapshot_test") {}
};

std::string FileDigest(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string bytes = ss.str();
  return snapshot::HexDigest(
      snapshot::Sha256({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}));
}

// Counts must form one run n, n+1, n+2, ... (a snapshot loses or repeats nothing).
void ExpectConsecutive(const std::vector<uint64_t>& counts) {
  for (size_t i = 1; i < counts.size(); ++i) {
    ASSERT_EQ(counts[i], counts[i - 1] + 1) << "at index " << i;
  }
}

std::vector<uint64_t> CountsIn(const std::string& text) {
  std::vector<uint64_t> out;
  // Complete lines only: a pause can land mid-line ("PROBE count " with its
  // digits still to come), which is not a count yet.
  std::istringstream in(text.substr(0, text.rfind('\n') + 1));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("PROBE count ", 0) == 0) out.push_back(std::stoull(line.substr(12)));
  }
  return out;
}

// Boots a probe guest, lets it count, pauses it and writes a snapshot.
// Returns the source's complete output at the pause.
std::string MakeSnapshot(const fs::path& dir, uint64_t mem = 64 << 20, int vcpus = 1) {
  auto vm = BootProbe("probe.report=32", mem, vcpus);
  EXPECT_TRUE(vm.ok()) << vm.status();
  if (!vm.ok()) return "";
  EXPECT_TRUE(vm->out->WaitFor("PROBE count 3").has_value()) << vm->out->text();
  vm->machine->Pause();
  absl::Status st = SaveSnapshot(*vm->machine, dir);
  EXPECT_TRUE(st.ok()) << st;
  vm->machine->Stop();
  return vm->out->DrainedText();
}

struct Fork {
  ProbeVm vm;
  RestoreReport report;
};

absl::StatusOr<Fork> RestoreFork(const fs::path& dir) {
  Fork f;
  auto m = RestoreSnapshot(SharedKvm(), dir, {f.vm.out->write_fd(), f.vm.in.read.get()}, &f.report);
  if (!m.ok()) return m.status();
  f.vm.machine = *std::move(m);
  absl::Status st = f.vm.machine->Start();
  if (!st.ok()) return st;
  return f;
}

TEST(VmmLifecycle, PauseStopsGuestAndResumeContinues) {
  auto vm = BootProbe("probe.report=32");
  ASSERT_TRUE(vm.ok()) << vm.status();
  ASSERT_TRUE(vm->out->WaitFor("PROBE count 2").has_value()) << vm->out->text();
  vm->machine->Pause();
  ASSERT_TRUE(vm->machine->paused());
  std::string at_pause = vm->out->DrainedText();
  // Not a timing assertion: a paused guest must produce nothing, however
  // long we look; 200 ms is just how long we look.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(vm->out->DrainedText(), at_pause);
  uint64_t last = CountsIn(at_pause).back();
  vm->machine->Resume();
  ASSERT_TRUE(vm->out->WaitFor("PROBE count " + std::to_string(last + 2)).has_value());
  ExpectConsecutive(Counts(*vm->out));
  EXPECT_EQ(vm->machine->Stop().kind, ExitKind::kStopped);
}

TEST(VmmLifecycle, StalledSerialReaderCannotWedgePauseOrStop) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  UniqueFd r(fds[0]), w(fds[1]);
  // Smallest pipe (one page), so the guest fills it quickly.
  const int capacity = ::fcntl(w.get(), F_SETPIPE_SZ, 4096);
  ASSERT_GT(capacity, 0);
  BootConfig cfg;
  cfg.kernel_path = ProbeGuestPath();
  cfg.cmdline = "probe.report=1";  // a line per poll: fills the pipe quickly
  cfg.mem_size = 64 << 20;
  cfg.serial = {w.get(), -1};
  auto m = BuildForBoot(SharedKvm(), cfg);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE((*m)->Start().ok());
  // Wait until the pipe is full (nobody reads it), i.e. the vCPU blocks.
  int queued = 0;
  for (int i = 0; i < 6000 && queued < capacity; ++i) {
    ::ioctl(r.get(), FIONREAD, &queued);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GE(queued, capacity) << "guest never filled the serial pipe";
  auto done = std::async(std::launch::async, [&] {
    (*m)->Pause();
    (*m)->Resume();
    return (*m)->Stop();
  });
  if (done.wait_for(kHangGuard) != std::future_status::ready) {
    ADD_FAILURE() << "pause/stop wedged behind a full serial pipe";
    std::_Exit(1);  // the wedged threads would block the test's exit forever
  }
  EXPECT_EQ(done.get().kind, ExitKind::kStopped);
}

TEST(VmmSnapshot, RestoredGuestContinuesItsCounter) {
  TempDir tmp;
  std::string before = MakeSnapshot(tmp.path());
  ASSERT_FALSE(before.empty());
  uint64_t last = CountsIn(before).back();

  auto fork = RestoreFork(tmp.path());
  ASSERT_TRUE(fork.ok()) << fork.status();
  auto& out = *fork->vm.out;
  ASSERT_TRUE(out.WaitFor("PROBE count " + std::to_string(last + 3)).has_value()) << out.text();
  // Source output up to the pause followed by the fork's output is one
  // uninterrupted stream (a line cut by the pause is completed by the fork).
  std::vector<uint64_t> all = CountsIn(before + out.text());
  ExpectConsecutive(all);
  EXPECT_GE(all.size(), CountsIn(before).size() + 3);
  EXPECT_EQ(out.text().find("PROBE fail"), std::string::npos) << out.text();
  EXPECT_EQ(fork->vm.machine->Stop().kind, ExitKind::kStopped);
}

TEST(VmmSnapshot, LiveForkSourceAndChildBothContinue) {
  TempDir tmp;
  auto src = BootProbe("probe.report=32");
  ASSERT_TRUE(src.ok()) << src.status();
  ASSERT_TRUE(src->out->WaitFor("PROBE count 2").has_value());
  src->machine->Pause();
  const std::string at_pause = src->out->DrainedText();
  ASSERT_TRUE(SaveSnapshot(*src->machine, tmp.path()).ok());
  src->machine->Resume();  // live fork: the source goes on
  const uint64_t last = CountsIn(at_pause).back();

  auto child = RestoreFork(tmp.path());
  ASSERT_TRUE(child.ok()) << child.status();
  src->in.Send("S");
  child->vm.in.Send("C");
  ASSERT_TRUE(src->out->WaitFor("PROBE input 0x53").has_value()) << src->out->text();
  ASSERT_TRUE(child->vm.out->WaitFor("PROBE input 0x43").has_value()) << child->vm.out->text();
  const std::string next = "PROBE count " + std::to_string(last + 2);
  ASSERT_TRUE(src->out->WaitFor(next).has_value());
  ASSERT_TRUE(child->vm.out->WaitFor(next).has_value());
  ExpectConsecutive(CountsIn(src->out->text()));
  ExpectConsecutive(CountsIn(at_pause + child->vm.out->text()));
  // Each saw only its own input.
  EXPECT_EQ(src->out->text().find("PROBE input 0x43"), std::string::npos);
  EXPECT_EQ(child->vm.out->text().find("PROBE input 0x53"), std::string::npos);
  EXPECT_EQ(src->machine->Stop().kind, ExitKind::kStopped);
  EXPECT_EQ(child->vm.machine->Stop().kind, ExitKind::kStopped);
}

TEST(VmmSnapshot, RestoreOfMultiVcpuSnapshot) {
  TempDir tmp;
  std::string before = MakeSnapshot(tmp.path(), 64 << 20, 2);
  ASSERT_FALSE(before.empty());
  uint64_t last = CountsIn(before).back();
  auto fork = RestoreFork(tmp.path());
  ASSERT_TRUE(fork.ok()) << fork.status();
  ASSERT_TRUE(fork->vm.out->WaitFor("PROBE count " + std::to_string(last + 2)).has_value());
  EXPECT_EQ(fork->vm.machine->Stop().kind, ExitKind::kStopped);
}

TEST(VmmSnapshot, EightConcurrentForksDivergeAndLeaveSnapshotUnchanged) {
  TempDir tmp;
  std::string before = MakeSnapshot(tmp.path());
  ASSERT_FALSE(before.empty());
  const fs::path dir = tmp.path();
  const std::string digests_before = FileDigest(snapshot::MemoryPath(dir)) +
                                     FileDigest(snapshot::StatePath(dir)) +
                                     FileDigest(snapshot::ManifestPath(dir));

  constexpr int kForks = 8;
  std::vector<Fork> forks;
  for (int i = 0; i < kForks; ++i) {
    auto f = RestoreFork(dir);
    ASSERT_TRUE(f.ok()) << "fork " << i << ": " << f.status();
    forks.push_back(*std::move(f));
  }
  // Each fork gets its own input byte; its state must fold it in.
  for (int i = 0; i < kForks; ++i) forks[i].vm.in.Send(std::string(1, static_cast<char>('A' + i)));
  std::set<std::string> states;
  for (int i = 0; i < kForks; ++i) {
    auto& out = *forks[i].vm.out;
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%x", 'A' + i);
    auto end = out.WaitFor(std::string("PROBE input ") + hex);
    ASSERT_TRUE(end.has_value()) << "fork " << i << ": " << out.text();
    auto lines = out.Lines("PROBE input ");
    ASSERT_EQ(lines.size(), 1u) << out.text();
    states.insert(lines[0].substr(lines[0].find("state=")));
    // Every fork continues the snapshot's count, independently.
    uint64_t last = CountsIn(before).back();
    ASSERT_TRUE(out.WaitFor("PROBE count " + std::to_string(last + 2)).has_value());
    ExpectConsecutive(CountsIn(before + out.text()));
  }
  EXPECT_EQ(states.size(), static_cast<size_t>(kForks)) << "forks did not diverge";
  for (auto& f : forks) EXPECT_EQ(f.vm.machine->Stop().kind, ExitKind::kStopped);
  forks.clear();

  const std::string digests_after = FileDigest(snapshot::MemoryPath(dir)) +
                                    FileDigest(snapshot::StatePath(dir)) +
                                    FileDigest(snapshot::ManifestPath(dir));
  EXPECT_EQ(digests_before, digests_after);
  EXPECT_TRUE(snapshot::VerifyManifest(dir, snapshot::VerifyMode::kFull).ok());
}

TEST(VmmSnapshot, RestoreRefusesTamperedState) {
  TempDir tmp;
  ASSERT_FALSE(MakeSnapshot(tmp.path()).empty());
  {
    std::fstream f(snapshot::StatePath(tmp.path()),
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
  }
  auto fork = RestoreFork(tmp.path());
  EXPECT_FALSE(fork.ok());
}

// Regression: a snapshot written into the directory forks were restored
// from used to truncate and rewrite the memory file every sibling maps
// MAP_PRIVATE, changing their clean pages under them.
TEST(VmmSnapshot, SnapshotIntoADirectoryInUseIsRefusedAndSiblingsKeepTheirPages) {
  TempDir tmp;
  ASSERT_FALSE(MakeSnapshot(tmp.path()).empty());
  const fs::path memory = snapshot::MemoryPath(tmp.path());
  const std::string digest = FileDigest(memory);
  auto a = RestoreFork(tmp.path());
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = RestoreFork(tmp.path());
  ASSERT_TRUE(b.ok()) << b.status();
  // A runs on (dirtying its memory), then tries to snapshot over the
  // snapshot both forks map.
  const size_t a_from = a->vm.out->text().size();
  ASSERT_TRUE(a->vm.out->WaitFor("PROBE count", a_from).has_value());
  a->vm.machine->Pause();
  absl::Status over = SaveSnapshot(*a->vm.machine, tmp.path());
  EXPECT_EQ(over.code(), absl::StatusCode::kFailedPrecondition) << over;
  EXPECT_EQ(FileDigest(memory), digest) << "the memory file siblings map was rewritten";
  // Positive control: the same machine snapshots into a new directory.
  TempDir fresh;
  EXPECT_TRUE(SaveSnapshot(*a->vm.machine, fresh.path()).ok());
  // B still runs from intact pages.
  const size_t b_from = b->vm.out->text().size();
  ASSERT_TRUE(b->vm.out->WaitFor("PROBE count", b_from).has_value());
  ASSERT_TRUE(b->vm.out->WaitFor("PROBE count", b->vm.out->text().size()).has_value());
  EXPECT_EQ(b->vm.out->text().find("PROBE fail"), std::string::npos) << b->vm.out->text();
  EXPECT_EQ(b->vm.machine->Stop().kind, ExitKind::kStopped);
  EXPECT_EQ(a->vm.machine->Stop().kind, ExitKind::kStopped);
  // With every fork gone (a and b still own their memory until destroyed)
  // the directory may be overwritten: the new file is renamed into place.
  a->vm.machine.reset();
  b->vm.machine.reset();
  auto c = RestoreFork(tmp.path());
  ASSERT_TRUE(c.ok()) << c.status();
  c->vm.machine->Pause();
  auto d = RestoreFork(fresh.path());  // holds `fresh`, not `tmp`
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(SaveSnapshot(*c->vm.machine, fresh.path()).code(),
            absl::StatusCode::kFailedPrecondition);
  d->vm.machine.reset();
  EXPECT_TRUE(SaveSnapshot(*c->vm.machine, fresh.path()).ok());
  c->vm.machine->Stop();
}

// Regression: MSRs KVM refused during a restore used to be counted and
// discarded, so a guest could run on with state it never had.
TEST(VmmSnapshot, RestoreFailsOnARefusedMsrThatIsNotHostSpecific) {
  auto vm = BootProbe("probe.report=32");
  ASSERT_TRUE(vm.ok()) << vm.status();
  ASSERT_TRUE(vm->out->WaitFor("PROBE count 2").has_value()) << vm->out->text();
  vm->machine->Pause();
  auto saved = vm->machine->SaveState();
  ASSERT_TRUE(saved.ok()) << saved.status();
  vm->machine->Stop();
  auto restore_into_fresh_vm = [](const MachineState& state) -> absl::StatusOr<int> {
    auto mem = GuestMemory::Anonymous(64 << 20);
    if (!mem.ok()) return mem.status();
    FORKD_ASSIGN_OR_RETURN(auto m, Machine::Create(SharedKvm(), *std::move(mem), 1, {}));
    return m->RestoreState(state);
  };
  // Positive control: the state as saved restores (refusing, at most, the
  // allow-listed host-specific MSRs).
  auto ok = restore_into_fresh_vm(*saved);
  ASSERT_TRUE(ok.ok()) << ok.status();
  // An MSR KVM does not know (no such index) is refused: the restore fails
  // and names it.
  MachineState bad = *saved;
  bad.vcpus[0].msrs.push_back({0x12345678u, 1});
  auto refused = restore_into_fresh_vm(bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("12345678"), std::string::npos) << refused.status();
}

// The VM generation ID (ACPI, booted by default) is new on every restore, and
// the restored vCPUs run with the snapshot's CPUID, not this host's.
TEST(VmmSnapshot, EveryRestoreHasANewGenerationIdAndTheSnapshotsCpuid) {
  TempDir tmp;
  ASSERT_FALSE(MakeSnapshot(tmp.path(), 64 << 20, 2).empty());
  auto opened = snapshot::OpenSnapshot(tmp.path(), snapshot::VerifyMode::kStateOnly,
                                       snapshot::HostCpuIdentity());
  ASSERT_TRUE(opened.ok()) << opened.status();
  acpi::GenerationId saved{};
  {
    std::ifstream mem(snapshot::MemoryPath(tmp.path()), std::ios::binary);
    mem.seekg(static_cast<std::streamoff>(layout::kVmGenIdAddr));
    mem.read(reinterpret_cast<char*>(saved.data()), saved.size());
    ASSERT_TRUE(mem.good());
  }
  EXPECT_NE(saved, acpi::GenerationId{}) << "boot wrote no generation ID";
  std::set<acpi::GenerationId> ids{saved};
  for (int i = 0; i < 2; ++i) {
    auto fork = RestoreFork(tmp.path());
    ASSERT_TRUE(fork.ok()) << fork.status();
    auto id = fork->vm.machine->generation_id();
    ASSERT_TRUE(id.has_value());
    EXPECT_TRUE(ids.insert(*id).second) << "fork " << i << " reused a generation ID";
    fork->vm.machine->Pause();
    for (size_t v = 0; v < 2; ++v) {
      auto state = fork->vm.machine->vcpus()[v]->Save(fork->vm.machine->kvm());
      ASSERT_TRUE(state.ok()) << state.status();
      const auto& want = opened->state.vcpus[v].cpuid;
      ASSERT_FALSE(want.empty());
      ASSERT_EQ(state->cpuid.size(), want.size());
      EXPECT_EQ(std::memcmp(state->cpuid.data(), want.data(), want.size() * sizeof(want[0])), 0);
    }
    EXPECT_EQ(fork->vm.machine->Stop().kind, ExitKind::kStopped);
  }
}

// forkd-vmm-test-hook's "VMGenID off" restore (RestoreOptions::new_vm_generation
// = false, the control of tests/svm/linux_vmgenid_test.cc) keeps the snapshot's
// generation ID; the test above is the positive control (a new one each time).
TEST(VmmSnapshot, RestoreKeepingTheGenerationKeepsTheSnapshotsId) {
  TempDir tmp;
  ASSERT_FALSE(MakeSnapshot(tmp.path()).empty());
  acpi::GenerationId saved{};
  {
    std::ifstream mem(snapshot::MemoryPath(tmp.path()), std::ios::binary);
    mem.seekg(static_cast<std::streamoff>(layout::kVmGenIdAddr));
    mem.read(reinterpret_cast<char*>(saved.data()), saved.size());
    ASSERT_TRUE(mem.good());
  }
  ASSERT_NE(saved, acpi::GenerationId{}) << "boot wrote no generation ID";
  Fork f;
  auto m = RestoreSnapshot(SharedKvm(), tmp.path(), {f.vm.out->write_fd(), f.vm.in.read.get()},
                           &f.report, {.new_vm_generation = false});
  ASSERT_TRUE(m.ok()) << m.status();
  f.vm.machine = *std::move(m);
  ASSERT_TRUE(f.vm.machine->Start().ok());
  auto id = f.vm.machine->generation_id();
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(*id, saved);
  // The guest runs on (the probe keeps counting) without the notify.
  EXPECT_TRUE(f.vm.out->WaitFor("PROBE count 6").has_value()) << f.vm.out->text();
  EXPECT_EQ(f.vm.machine->Stop().kind, ExitKind::kStopped);
}

// A snapshot whose guest saw a CPUID feature this host's KVM cannot provide is
// refused, naming the register (the test above is the positive control).
TEST(VmmSnapshot, RestoreRefusesACpuidTheHostCannotProvide) {
  TempDir tmp;
  ASSERT_FALSE(MakeSnapshot(tmp.path()).empty());
  auto opened = snapshot::OpenSnapshot(tmp.path(), snapshot::VerifyMode::kStateOnly,
                                       snapshot::HostCpuIdentity());
  ASSERT_TRUE(opened.ok()) << opened.status();
  snapshot::SnapshotState state = opened->state;
  bool found = false;
  for (auto& e : state.vcpus[0].cpuid) {
    if (e.function == 7 && e.index == 0) {
      e.ebx = 0xffffffff;  // every leaf-7 EBX feature, which no CPU has
      found = true;
    }
  }
  ASSERT_TRUE(found);
  ASSERT_TRUE(snapshot::SaveSnapshot(tmp.path(), state).ok());
  auto fork = RestoreFork(tmp.path());
  ASSERT_FALSE(fork.ok());
  EXPECT_NE(fork.status().message().find("cpuid 0x7.0 ebx"), absl::string_view::npos)
      << fork.status();
}

size_t CountEntries(const char* dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

struct MapsCount {
  size_t total = 0;
  size_t vmm = 0;  // kvm_run mappings, snapshot memory files, guest-RAM-sized ranges
};

MapsCount CountMaps(uint64_t guest_bytes) {
  std::ifstream f("/proc/self/maps");
  MapsCount c;
  std::string line;
  while (std::getline(f, line)) {
    ++c.total;
    uint64_t lo = std::stoull(line.substr(0, line.find('-')), nullptr, 16);
    uint64_t hi = std::stoull(line.substr(line.find('-') + 1), nullptr, 16);
    if (line.find("kvm") != std::string::npos || line.find("/memory") != std::string::npos ||
        hi - lo == guest_bytes) {
      ++c.vmm;
    }
  }
  return c;
}

TEST(VmmResources, NoFdOrMappingLeakAcross100Cycles) {
  TempDir tmp;
  ASSERT_FALSE(MakeSnapshot(tmp.path()).empty());
  auto cycle = [&](int i) {
    if (i % 2 == 0) {
      // With virtio-rng: its irqfd, per-queue ioeventfd and the notifier's
      // epoll/eventfds must all go with the machine.
      VirtioConfig virtio;
      virtio.rng = true;
      auto vm = BootProbe("probe.report=1000000", 64 << 20, 1, virtio);
      ASSERT_TRUE(vm.ok()) << vm.status();
      ASSERT_TRUE(vm->out->WaitFor("PROBE ready").has_value());
    } else {
      auto f = RestoreFork(tmp.path());
      ASSERT_TRUE(f.ok()) << f.status();
      f->vm.in.Send("p");
      ASSERT_TRUE(f->vm.out->WaitFor("PROBE count").has_value());
    }
  };
  cycle(0);  // warm up lazily created process state (KVM handle, signal handler)
  cycle(1);
  const size_t fds = CountEntries("/proc/self/fd");
  const MapsCount maps = CountMaps(64 << 20);
  for (int i = 0; i < 100; ++i) {
    cycle(i);
    if (HasFatalFailure()) return;
  }
  EXPECT_EQ(CountEntries("/proc/self/fd"), fds);
  const MapsCount after = CountMaps(64 << 20);
  EXPECT_EQ(after.vmm, maps.vmm);
#if !defined(__SANITIZE_ADDRESS__)
  // A sanitizer's allocator maps memory lazily; elsewhere every line counts.
  EXPECT_EQ(after.total, maps.total);
#endif
}

}  // namespace
}  // namespace forkd::vmm::testing

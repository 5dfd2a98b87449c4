// Tier 2: virtio-mmio devices driven by the probe guest's polling driver on
// real /dev/kvm — virtio-rng delivers host entropy, and after a snapshot each
// restored fork draws its own fresh bytes through the restored queue state.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include <chrono>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "forkd/vmm/devices/rate_limiter.h"
#include "forkd/vmm/devices/virtio/rng.h"
#include "forkd/vmm/persist.h"
#include "gtest/gtest.h"
#include "tests/support/requirements.h"
#include "tests/support/temp_dir.h"
#include "tests/vmm/probe_harness.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kKvm);

namespace forkd::vmm::testing {
namespace {

namespace fs = std::filesystem;

constexpr char kRngLine[] = "PROBE ok rng ";

// One directory per test, named after this suite.
class TempDir : public forkd::testing::TempDir {
 public:
  TempDir() : forkd::testing::TempDir("vmm_virtio_test") {}
};

// The hex payloads of every "PROBE ok rng" line, each checked to be 64 bytes.
std::vector<std::string> RngValues(const OutputCollector& out) {
  std::vector<std::string> v;
  for (const auto& line : out.Lines(kRngLine)) {
    std::string hex = line.substr(sizeof kRngLine - 1);
    EXPECT_EQ(hex.size(), 128u) << line;
    EXPECT_EQ(hex.find_first_not_of("0123456789abcdef"), std::string::npos) << line;
    EXPECT_NE(hex, std::string(128, '0')) << line;
    v.push_back(hex);
  }
  return v;
}

VirtioConfig WithRng() {
  VirtioConfig c;
  c.rng = true;
  return c;
}

TEST(VirtioRng, DeclaredOnTheCommandLine) {
  auto vm = BootProbe("probe.scenario=rng", 64 << 20, 1, WithRng());
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_EQ(vm->machine->VirtioCmdline(), "virtio_mmio.device=4K@0xd0000000:5");
  // What the guest was actually given, read back from its memory.
  auto cmd = vm->machine->memory().Slice(0x20000, 256);  // layout::kCmdlineAddr
  ASSERT_TRUE(cmd.ok());
  std::string text(reinterpret_cast<const char*>(cmd->data()));
  EXPECT_EQ(text, "probe.scenario=rng virtio_mmio.device=4K@0xd0000000:5");
}

TEST(VirtioRng, ProbeReadsDifferentEntropyOnEachBootAndRead) {
  std::vector<std::string> seen;
  for (int boot = 0; boot < 2; ++boot) {
    auto vm = BootProbe("probe.scenario=rng", 64 << 20, 1, WithRng());
    ASSERT_TRUE(vm.ok()) << vm.status();
    auto after = vm->out->WaitFor(kRngLine);
    ASSERT_TRUE(after.has_value()) << vm->out->text();
    vm->in.Send("r");  // a second read through the same queue
    ASSERT_TRUE(vm->out->WaitFor(kRngLine, *after).has_value()) << vm->out->text();
    EXPECT_EQ(vm->machine->Stop().kind, ExitKind::kStopped);
    EXPECT_TRUE(vm->out->Lines("PROBE fail").empty()) << vm->out->text();
    auto values = RngValues(*vm->out);
    ASSERT_EQ(values.size(), 2u) << vm->out->text();
    seen.insert(seen.end(), values.begin(), values.end());
    // The device's view agrees: two requests consumed and returned.
    auto st = vm->machine->virtio_devices().at(0)->save();
    ASSERT_EQ(st.queues.size(), 1u);
    EXPECT_EQ(st.queues[0].next_avail, 2);
    EXPECT_EQ(st.queues[0].next_used, 2);
  }
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), seen.size())
      << "entropy repeated across reads or boots";
}

TEST(VirtioRng, UsedBufferInterruptReachesTheIrqchipThroughIrqfd) {
  // The probe polls with interrupts off, so nobody acknowledges the edge:
  // after a completed request the in-kernel PIC must come to hold IRQ 5 in
  // its IRR. irqfd injection is asynchronous (a kernel worker), hence the
  // wait; its deadline is only a hang guard.
  VirtioConfig cfg;
  cfg.rng = true;
  auto vm = BootProbe("probe.scenario=rng", 64 << 20, 1, cfg);
  ASSERT_TRUE(vm.ok()) << vm.status();
  ASSERT_TRUE(vm->out->WaitFor(kRngLine).has_value()) << vm->out->text();
  vm->machine->Pause();
  bool latched = false;
  uint8_t irr = 0;
  const auto deadline = std::chrono::steady_clock::now() + kHangGuard;
  while (!latched && std::chrono::steady_clock::now() < deadline) {
    auto chips = vm->machine->vm().Save();
    ASSERT_TRUE(chips.ok()) << chips.status();
    irr = chips->pic_master.chip.pic.irr;
    latched = (irr >> 5) & 1;
    if (!latched) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(latched) << "PIC IRR " << int{irr};
  vm->machine->Stop();
}

// With ioeventfd the guest's QueueNotify never reaches the MMIO handler: the
// notifier thread processes it. Without, every notify is an MMIO exit.
TEST(VirtioRng, NotifiesGoThroughIoeventfdOrTheMmioExit) {
  for (bool ioeventfd : {true, false}) {
    SCOPED_TRACE(ioeventfd ? "ioeventfd" : "MMIO exit");
    VirtioConfig cfg = WithRng();
    cfg.ioeventfd = ioeventfd;
    auto vm = BootProbe("probe.scenario=rng", 64 << 20, 1, cfg);
    ASSERT_TRUE(vm.ok()) << vm.status();
    auto first = vm->out->WaitFor(kRngLine);
    ASSERT_TRUE(first.has_value()) << vm->out->text();
    vm->in.Send("r");
    ASSERT_TRUE(vm->out->WaitFor(kRngLine, *first).has_value()) << vm->out->text();
    vm->machine->Pause();
    const auto& rng = *vm->machine->virtio_devices().at(0);
    EXPECT_EQ(rng.save().queues.at(0).next_used, 2);
    if (ioeventfd) {
      EXPECT_EQ(vm->machine->ioeventfd_queues(), 1);
      EXPECT_EQ(rng.mmio_notifies(), 0u);
      EXPECT_EQ(vm->machine->notifier_kicks(), 2u);
    } else {
      EXPECT_EQ(vm->machine->ioeventfd_queues(), 0);
      EXPECT_EQ(rng.mmio_notifies(), 2u);
      EXPECT_EQ(vm->machine->notifier_kicks(), 0u);
    }
    EXPECT_EQ(vm->machine->Stop().kind, ExitKind::kStopped);
    EXPECT_TRUE(vm->out->Lines("PROBE fail").empty()) << vm->out->text();
  }
}

TEST(VirtioRng, ProbeDriverReportsAMissingDevice) {
  // Without the device the window reads as zeros: the driver must say so
  // rather than report bytes (proves the success line is not unconditional).
  auto vm = BootProbe("probe.scenario=rng");
  ASSERT_TRUE(vm.ok()) << vm.status();
  ASSERT_TRUE(vm->out->WaitFor("PROBE fail rng").has_value()) << vm->out->text();
  EXPECT_NE(vm->out->text().find("PROBE fail rng: no virtio-mmio v2 device"), std::string::npos)
      << vm->out->text();
  EXPECT_TRUE(vm->out->Lines(kRngLine).empty());
}

TEST(VirtioRng, RestoredForksDrawFreshEntropy) {
  TempDir dir;
  std::string parent_value;
  {
    auto vm = BootProbe("probe.scenario=rng", 64 << 20, 1, WithRng());
    ASSERT_TRUE(vm.ok()) << vm.status();
    ASSERT_TRUE(vm->out->WaitFor(kRngLine).has_value()) << vm->out->text();
    vm->machine->Pause();
    absl::Status st = SaveSnapshot(*vm->machine, dir.path());
    ASSERT_TRUE(st.ok()) << st;
    vm->machine->Stop();
    vm->out->DrainedText();
    auto values = RngValues(*vm->out);
    ASSERT_EQ(values.size(), 1u);
    parent_value = values[0];
  }
  std::vector<std::string> fork_values;
  for (int i = 0; i < 2; ++i) {
    ProbeVm f;
    auto m = RestoreSnapshot(SharedKvm(), dir.path(), {f.out->write_fd(), f.in.read.get()});
    ASSERT_TRUE(m.ok()) << m.status();
    f.machine = *std::move(m);
    ASSERT_EQ(f.machine->virtio_devices().size(), 1u) << "restore did not recreate virtio-rng";
    // Restored queue state: the parent's one request is already accounted for.
    auto before = f.machine->virtio_devices()[0]->save();
    EXPECT_EQ(before.queues.at(0).next_used, 1);
    EXPECT_TRUE(before.queues.at(0).ready);
    ASSERT_TRUE(f.machine->Start().ok());
    f.in.Send("r");
    ASSERT_TRUE(f.out->WaitFor(kRngLine).has_value()) << f.out->text();
    EXPECT_EQ(f.machine->Stop().kind, ExitKind::kStopped);
    EXPECT_TRUE(f.out->Lines("PROBE fail").empty()) << f.out->text();
    auto values = RngValues(*f.out);
    ASSERT_EQ(values.size(), 1u) << f.out->text();
    fork_values.push_back(values[0]);
    EXPECT_EQ(f.machine->virtio_devices()[0]->save().queues.at(0).next_used, 2);
    EXPECT_EQ(f.machine->virtio_devices()[0]->mmio_notifies(), 0u);
    // The restore's kick of every queue, and the read (the two may merge).
    EXPECT_GE(f.machine->notifier_kicks(), 1u);
  }
  EXPECT_NE(fork_values[0], fork_values[1]) << "two forks read the same entropy";
  EXPECT_NE(fork_values[0], parent_value);
  EXPECT_NE(fork_values[1], parent_value);
}

// The probe floods the rng ('b': kFloodReads back-to-back 64-byte reads) and
// the host times the flood from sending 'b' to reading its result line: an
// upper bound on how long the guest took, so the rate it got is at most
// bytes / elapsed. A limited rng must stay within burst + rate * elapsed
// (with a 5% margin and one request of slack); an unlimited one, the
// positive control, must beat that bound on the same flood.
constexpr uint64_t kFloodReads = 256;
constexpr uint64_t kFloodBytes = kFloodReads * 64;
constexpr RateLimiterConfig kRngLimit{.bytes = {.rate = 4096, .burst = 1024}};

struct Flood {
  double seconds = 0;
  // What a guest held to kRngLimit can have read in that time.
  double allowed_bytes() const {
    return static_cast<double>(kRngLimit.bytes.size()) +
           static_cast<double>(kRngLimit.bytes.rate) * seconds * 1.05 + 64;
  }
};

std::optional<Flood> TimeFlood(ProbeVm& vm) {
  const size_t from = vm.out->text().size();
  const auto start = std::chrono::steady_clock::now();
  vm.in.Send("b");
  if (!vm.out->WaitFor("PROBE rng-bench n=", from).has_value()) return std::nullopt;
  Flood f;
  f.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return f;
}

TEST(VirtioRng, RateLimitHoldsAFloodingGuestAndSurvivesRestore) {
  // Positive control: unlimited, the flood beats the limit's bound.
  {
    auto vm = BootProbe("probe.scenario=rng", 64 << 20, 1, WithRng());
    ASSERT_TRUE(vm.ok()) << vm.status();
    ASSERT_TRUE(vm->out->WaitFor(kRngLine).has_value()) << vm->out->text();
    auto flood = TimeFlood(*vm);
    ASSERT_TRUE(flood.has_value()) << vm->out->text();
    EXPECT_GT(static_cast<double>(kFloodBytes), flood->allowed_bytes())
        << "an unlimited flood took " << flood->seconds << " s: the test cannot tell";
    vm->machine->Stop();
  }
  TempDir dir;
  {
    VirtioConfig cfg = WithRng();
    cfg.limits.rng = kRngLimit;
    auto vm = BootProbe("probe.scenario=rng", 64 << 20, 1, cfg);
    ASSERT_TRUE(vm.ok()) << vm.status();
    ASSERT_TRUE(vm->out->WaitFor(kRngLine).has_value()) << vm->out->text();
    auto flood = TimeFlood(*vm);
    ASSERT_TRUE(flood.has_value()) << vm->out->text();
    EXPECT_LE(static_cast<double>(kFloodBytes), flood->allowed_bytes())
        << kFloodBytes << " bytes in " << flood->seconds << " s";
    EXPECT_TRUE(vm->out->Lines("PROBE fail").empty()) << vm->out->text();
    vm->machine->Pause();
    ASSERT_TRUE(SaveSnapshot(*vm->machine, dir.path()).ok());
    vm->machine->Stop();
  }
  // A fork restored without limits of its own keeps the snapshot's.
  ProbeVm f;
  auto m = RestoreSnapshot(SharedKvm(), dir.path(), {f.out->write_fd(), f.in.read.get()});
  ASSERT_TRUE(m.ok()) << m.status();
  f.machine = *std::move(m);
  EXPECT_EQ(f.machine->virtio_devices().at(0)->device<virtio::Rng>().limit(), kRngLimit);
  ASSERT_TRUE(f.machine->Start().ok());
  auto flood = TimeFlood(f);
  ASSERT_TRUE(flood.has_value()) << f.out->text();
  EXPECT_LE(static_cast<double>(kFloodBytes), flood->allowed_bytes())
      << kFloodBytes << " bytes in " << flood->seconds << " s";
  EXPECT_EQ(f.machine->Stop().kind, ExitKind::kStopped);
  EXPECT_TRUE(f.out->Lines("PROBE fail").empty()) << f.out->text();
}

// A buffer the driver made available right before the snapshot, whose
// notify was still in an eventfd counter (not in the snapshot): the restored
// machine processes it without the guest notifying again. Staged by writing
// the avail ring of the paused parent directly (the probe reuses descriptor 0).
TEST(VirtioRng, RestoreProcessesBuffersMadeAvailableBeforeTheSnapshot) {
  TempDir dir;
  {
    auto vm = BootProbe("probe.scenario=rng", 64 << 20, 1, WithRng());
    ASSERT_TRUE(vm.ok()) << vm.status();
    ASSERT_TRUE(vm->out->WaitFor(kRngLine).has_value()) << vm->out->text();
    vm->machine->Pause();
    const auto q = vm->machine->virtio_devices().at(0)->save().queues.at(0);
    ASSERT_EQ(q.next_used, 1);
    ASSERT_GT(q.size, 0);
    const GuestMemory& mem = vm->machine->memory();
    uint16_t idx;
    std::memcpy(&idx, mem.host_base() + q.avail_addr + 2, 2);
    ASSERT_EQ(idx, 1);
    ASSERT_TRUE(mem.WriteObj<uint16_t>(q.avail_addr + 4 + 2ULL * (idx % q.size), 0).ok());
    ASSERT_TRUE(mem.WriteObj<uint16_t>(q.avail_addr + 2, static_cast<uint16_t>(idx + 1)).ok());
    absl::Status st = SaveSnapshot(*vm->machine, dir.path());
    ASSERT_TRUE(st.ok()) << st;
    // Paused: the parent has not processed it either.
    EXPECT_EQ(vm->machine->virtio_devices().at(0)->save().queues.at(0).next_used, 1);
    vm->machine->Stop();
  }
  ProbeVm f;
  auto m = RestoreSnapshot(SharedKvm(), dir.path(), {f.out->write_fd(), f.in.read.get()});
  ASSERT_TRUE(m.ok()) << m.status();
  f.machine = *std::move(m);
  ASSERT_TRUE(f.machine->Start().ok());
  const auto deadline = std::chrono::steady_clock::now() + kHangGuard;
  while (f.machine->virtio_devices().at(0)->save().queues.at(0).next_used != 2 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(f.machine->virtio_devices().at(0)->save().queues.at(0).next_used, 2);
  EXPECT_EQ(f.machine->virtio_devices().at(0)->mmio_notifies(), 0u);
  f.machine->Stop();
}

// A host-side client of the VM's vsock unix socket, every read bounded by
// the hang guard.
class VsockClient {
 public:
  explicit VsockClient(const fs::path& path) {
    fd_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    timeval tv{static_cast<time_t>(kHangGuard.count()), 0};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    connected_ = ::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  bool connected() const { return connected_; }
  bool Write(const std::string& s) {
    return ::send(fd_.get(), s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size());
  }
  // Up to and including '\n' (or what came before EOF/timeout).
  std::string ReadLine() {
    std::string line;
    char c;
    while (::read(fd_.get(), &c, 1) == 1) {
      line.push_back(c);
      if (c == '\n') break;
    }
    return line;
  }
  std::string ReadExactly(size_t n) {
    std::string out(n, '\0');
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::read(fd_.get(), out.data() + done, n - done);
      if (r <= 0) break;
      done += static_cast<size_t>(r);
    }
    out.resize(done);
    return out;
  }

 private:
  UniqueFd fd_;
  bool connected_ = false;
};

TEST(VirtioVsock, HostConnectsAndGuestEchoes) {
  TempDir dir;
  VirtioConfig cfg;
  cfg.vsock_cid = 3;
  cfg.vsock_uds_path = (dir.path() / "v.sock").string();
  auto vm = BootProbe("probe.scenario=vsock probe.vsock_port=5000", 64 << 20, 1, cfg);
  ASSERT_TRUE(vm.ok()) << vm.status();
  ASSERT_TRUE(vm->out->WaitFor("PROBE ok vsock cid=3").has_value()) << vm->out->text();

  for (int round = 0; round < 2; ++round) {  // two connections, one after the other
    VsockClient c(cfg.vsock_uds_path);
    ASSERT_TRUE(c.connected());
    ASSERT_TRUE(c.Write("CONNECT 5000\n"));
    std::string ok = c.ReadLine();
    ASSERT_EQ(ok.rfind("OK ", 0), 0u) << "got '" << ok << "'\n" << vm->out->text();
    ASSERT_EQ(ok.back(), '\n');
    const std::string msg = "hello vsock " + std::to_string(round);
    ASSERT_TRUE(c.Write(msg));
    EXPECT_EQ(c.ReadExactly(msg.size()), msg);
    // More than one guest rx buffer's worth, so the device splits it and the
    // echo crosses several packets in both directions.
    std::string big(10000, 'x');
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
    ASSERT_TRUE(c.Write(big));
    EXPECT_EQ(c.ReadExactly(big.size()), big);
  }
  EXPECT_EQ(vm->machine->Stop().kind, ExitKind::kStopped);
  // Every guest notify (rx buffers, tx packets, event buffers) went through
  // ioeventfd to the notifier thread.
  EXPECT_EQ(vm->machine->ioeventfd_queues(), 3);
  EXPECT_EQ(vm->machine->virtio_devices().at(0)->mmio_notifies(), 0u);
  EXPECT_GT(vm->machine->notifier_kicks(), 10u);
  EXPECT_TRUE(vm->out->Lines("PROBE fail").empty()) << vm->out->text();
}

// Echo over a fresh connection to `path`; true when the bytes came back.
void ExpectEcho(const std::string& path, const std::string& msg, const OutputCollector& out) {
  VsockClient c(path);
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Write("CONNECT 5000\n"));
  std::string ok = c.ReadLine();
  ASSERT_EQ(ok.rfind("OK ", 0), 0u) << "got '" << ok << "'\n" << out.text();
  ASSERT_TRUE(c.Write(msg));
  EXPECT_EQ(c.ReadExactly(msg.size()), msg);
}

TEST(VirtioVsock, RestoredForkGetsTransportResetAndServesItsOwnSocket) {
  TempDir dir;
  const fs::path snap = dir.path() / "snap";
  VirtioConfig cfg;
  cfg.vsock_cid = 7;
  cfg.vsock_uds_path = (dir.path() / "src.sock").string();
  {
    auto vm = BootProbe("probe.scenario=vsock", 64 << 20, 1, cfg);
    ASSERT_TRUE(vm.ok()) << vm.status();
    ASSERT_TRUE(vm->out->WaitFor("PROBE ok vsock cid=7").has_value()) << vm->out->text();
    // A connection that is open at snapshot time.
    VsockClient open_at_snapshot(cfg.vsock_uds_path);
    ASSERT_TRUE(open_at_snapshot.Write("CONNECT 5000\n"));
    ASSERT_EQ(open_at_snapshot.ReadLine().rfind("OK ", 0), 0u);
    vm->machine->Pause();
    absl::Status st = SaveSnapshot(*vm->machine, snap);
    ASSERT_TRUE(st.ok()) << st;
    vm->machine->Stop();
  }
  // Without a socket path of its own a vsock snapshot is not restorable.
  EXPECT_FALSE(RestoreSnapshot(SharedKvm(), snap, {-1, -1}).ok());
  for (int i = 0; i < 2; ++i) {
    ProbeVm f;
    const std::string path = (dir.path() / ("fork" + std::to_string(i) + ".sock")).string();
    auto m = RestoreSnapshot(SharedKvm(), snap, {f.out->write_fd(), f.in.read.get()}, nullptr,
                             {.vsock_uds_path = path});
    ASSERT_TRUE(m.ok()) << m.status();
    f.machine = *std::move(m);
    ASSERT_TRUE(f.machine->Start().ok());
    ASSERT_TRUE(f.out->WaitFor("PROBE ok vsock-reset cid=7").has_value()) << f.out->text();
    ExpectEcho(path, "fork " + std::to_string(i), *f.out);
    EXPECT_EQ(f.machine->Stop().kind, ExitKind::kStopped);
    EXPECT_TRUE(f.out->Lines("PROBE fail").empty()) << f.out->text();
  }
}

TEST(VirtioVsock, HandshakeOtherThanConnectIsRefused) {
  TempDir dir;
  VirtioConfig cfg;
  cfg.vsock_cid = 3;
  cfg.vsock_uds_path = (dir.path() / "v.sock").string();
  auto vm = BootProbe("probe.scenario=vsock", 64 << 20, 1, cfg);
  ASSERT_TRUE(vm.ok()) << vm.status();
  ASSERT_TRUE(vm->out->WaitFor("PROBE ok vsock").has_value()) << vm->out->text();
  VsockClient c(cfg.vsock_uds_path);
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Write("HELLO 5000\n"));
  EXPECT_EQ(c.ReadLine(), "");  // closed without an OK
}

}  // namespace
}  // namespace forkd::vmm::testing

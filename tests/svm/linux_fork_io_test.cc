// Issue 10's device and gate checks with a real Linux guest: Debian's stock
// cloud kernel (its own virtio-net and virtio-vsock drivers, loaded by the
// agent from the initramfs) under forkd-vmm, the real agent as /init. One
// template boots with vsock and virtio-net on a tap in a namespace the test
// creates, its wall clock is set kTemplateSkew behind the host's, and it is
// snapshotted; every test restores its own fork from that snapshot, each on a
// tap of its own, and reaps it:
//  - ConnectRightAfterReadyIsServed: the gate's connection, made the moment a
//    restored fork says READY (no retry, no Ping first), admits it. Before
//    forkd-vmm held host connects until the guest acknowledged the restore's
//    vsock TRANSPORT_RESET (forkd/vmm/devices/virtio/vsock.h), Linux could
//    accept that connection and then reset it with its old ones, and the gate
//    reaped a healthy fork (docs/testing-tiers.md).
//  - NetReachesAnAllowedHostThroughTapAndChains: the gate gives the fork its
//    address (NotifyForked's network: MAC, 10.200.0.2/29, default route), and
//    the guest's busybox `ping` reaches a host in the test's "internet"
//    namespace through the fork's tap and its per-tap nftables chains (the
//    netfilter library); a destination the policy does not allow gets no
//    answer. Positive controls in the same run: the allowed host answers the
//    same guest, and the blocked host answers once the policy allows it.
//  - VsockMoves4MiBBothWays: 4 MiB host -> guest (two 2 MiB WriteFile frames
//    on one connection: the agent's file limit is 3 MiB) verified by the
//    guest's sha256sum against the host's digest, and 4 MiB guest -> host (the
//    guest's own random bytes, two 2 MiB ReadFile answers on one connection)
//    verified against the guest's sha256sum.
//  - WallClockIsSteppedToTheHost: the fork's un-stepped CLOCK_REALTIME is
//    behind the host's (positive control: by about kTemplateSkew), the gate's
//    answer reports a step of that size, and afterwards the guest's clock is
//    within kClockBound of the host's.
// Everything network is inside namespaces this process creates (anonymous,
// gone with the process); nothing is added to the machine's own namespace.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/client.h"
#include "agent/protocol.h"
#include "agent/vsock_connect.h"
#include "common/errno_status.h"
#include "forkd/gate/fork_resources.h"
#include "forkd/gate/reseed_gate.h"
#include "gtest/gtest.h"
#include "kernel-stage/digest.h"
#include "netfilter/links.h"
#include "netfilter/netns.h"
#include "netfilter/nftables.h"
#include "tests/netfilter/netns_sockets.h"
#include "tests/netfilter/topology.h"
#include "tests/support/requirements.h"
#include "tests/svm/linux_guest.h"
#include "tests/vmm/owned_fork.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kHwVirt);
FORKD_TEST_REQUIRES(forkd::testing::Requirement::kLinuxGuestKernel);
FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);

namespace forkd::vmm::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using forkd::testing::kAllowedHost;
using forkd::testing::kOtherHost;

constexpr auto kBootGuard = kLinuxBootGuard;
// Hang guard for one agent call: a 2 MiB frame through the L2 guest's vsock
// under QEMU TCG takes seconds, not minutes.
constexpr auto kBigCallDeadline = 120s;
constexpr char kTemplateTap[] = "lfiosrc";
constexpr char kTemplateMac[] = "02:00:00:00:01:00";
// The fork on the network: its address, the pod side's (its gateway), its MAC.
constexpr char kGuestCidr[] = "10.200.0.2/29";
constexpr char kGuestIp[] = "10.200.0.2";
constexpr char kGateway[] = "10.200.0.1";
// How far the template's CLOCK_REALTIME is set behind the host's before the
// snapshot. A fork's clock is behind by at least this whatever the guest's
// clocksource does with the time since the snapshot (kvm-clock is advanced by
// forkd-vmm on restore, a raw TSC would not be): the positive control does not
// depend on it, and the RESULT line shows which it was.
constexpr auto kTemplateSkew = 120s;
// The correctness bound on a stepped clock: the agent steps only beyond
// 500 ms, and the guest's reading is bracketed by two host readings (so the
// Exec's own latency is not counted); 2 s covers the 500 ms with room.
constexpr auto kClockBound = 2s;
constexpr size_t kHalf = 2u << 20;  // under agent::kMaxFileBytes (3 MiB)

int64_t HostNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::StatusOr<agent::v1::ExecResponse> Exec(agent::AgentClient& client,
                                             const std::vector<std::string>& argv,
                                             std::chrono::seconds deadline = kLinuxCallDeadline) {
  agent::v1::ExecRequest req;
  for (const auto& a : argv) req.add_argv(a);
  req.add_env("PATH=/usr/sbin:/usr/bin:/sbin:/bin");
  req.set_timeout_ms(static_cast<uint32_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline).count()));
  FORKD_ASSIGN_OR_RETURN(auto resp, client.Exec(req, agent::DeadlineIn(deadline + 5s)));
  if (!resp.error().empty()) return absl::InternalError(absl::StrCat(argv[0], ": ", resp.error()));
  return resp;
}

// Runs `script` with sh -c; its stdout when it exits 0.
absl::StatusOr<std::string> Sh(agent::AgentClient& client, const std::string& script,
                               std::chrono::seconds deadline = kLinuxCallDeadline) {
  FORKD_ASSIGN_OR_RETURN(auto resp, Exec(client, {"sh", "-c", script}, deadline));
  if (!resp.has_exit_code() || resp.exit_code() != 0) {
    return absl::InternalError(absl::StrCat("'", script, "': exit ", resp.exit_code(), " signal ",
                                            resp.signal(), " stderr ", resp.stderr()));
  }
  return resp.stdout();
}

// The guest's CLOCK_REALTIME in ns, from busybox adjtimex ("time.tv_sec:"
// and "time.tv_usec:" lines), bracketed by the host's clock read just
// before and just after.
struct ClockReading {
  int64_t host_before_ns = 0;
  int64_t guest_ns = 0;
  int64_t host_after_ns = 0;
  // Host minus guest, taken at the middle of the bracket.
  int64_t behind_ns() const { return (host_before_ns + host_after_ns) / 2 - guest_ns; }
};
absl::StatusOr<ClockReading> ReadGuestClock(agent::AgentClient& client) {
  ClockReading r;
  r.host_before_ns = HostNowNs();
  FORKD_ASSIGN_OR_RETURN(std::string out, Sh(client, "adjtimex"));
  r.host_after_ns = HostNowNs();
  int64_t sec = -1, usec = -1;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    auto value = [&](absl::string_view key, int64_t* v) {
      if (absl::ConsumePrefix(&line, key)) {
        (void)absl::SimpleAtoi(absl::StripAsciiWhitespace(line), v);
      }
    };
    value("time.tv_sec:", &sec);
    value("time.tv_usec:", &usec);
  }
  if (sec < 0 || usec < 0) return absl::InternalError(absl::StrCat("adjtimex said: ", out));
  r.guest_ns = sec * 1'000'000'000 + usec * 1000;
  return r;
}

class LinuxForkIoTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::Status s = SetUpTemplate();
    *setup_error_ = s.ok() ? "" : s.ToString();
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
    nft_.reset();
    topo_.reset();  // the namespaces (and every tap in them) go with it
  }
  void SetUp() override { ASSERT_TRUE(setup_error_->empty()) << *setup_error_; }
  void TearDown() override {
    // A fork a failed assertion left is reaped here.
    if (fork_.vmm_pidfd.valid() || !fork_.tap.empty() || !fork_.paths.empty()) {
      absl::Status s = gate::Reap(fork_);
      EXPECT_TRUE(s.ok()) << s;
    }
  }

  static std::string NetnsPath() {
    return absl::StrCat("/proc/", ::getpid(), "/fd/", topo_->pod.get());
  }

  static absl::Status MakeTap(const std::string& name) {
    netfilter::TapOptions o;
    o.name = name;
    o.persistent = true;
    o.vnet_hdr = true;
    return netfilter::CreateTap(topo_->pod.get(), o).status();
  }

  // The pod namespace (with the test hosts behind its uplink), the template
  // tap, the nftables skeleton; then the template: booted, its clock set
  // behind, snapshotted.
  static absl::Status SetUpTemplate() {
    FORKD_ASSIGN_OR_RETURN(forkd::testing::Topology topo, forkd::testing::Topology::Create(0));
    topo_.emplace(std::move(topo));
    FORKD_ASSIGN_OR_RETURN(netfilter::Nftables nft, netfilter::Nftables::Open(topo_->pod.get()));
    nft_.emplace(std::move(nft));
    FORKD_RETURN_IF_ERROR(nft_->EnsureSkeleton({}));
    FORKD_RETURN_IF_ERROR(MakeTap(kTemplateTap));
    dir_ = fs::temp_directory_path() / ("forkd_linux_fork_io." + std::to_string(::getpid()));
    fs::create_directories(dir_);
    const std::string uds = (dir_ / "template.sock").string();
    FORKD_ASSIGN_OR_RETURN(auto vm, BootLinux(uds, {"--net-tap", kTemplateTap, "--net-netns",
                                                    NetnsPath(), "--net-mac", kTemplateMac}));
    auto client = ConnectAgent(uds, kBootGuard);
    if (!client.ok()) {
      return Annotate(client.status(), absl::StrCat("template; serial:\n", vm->serial().text()));
    }
    // Linux's virtio-net driver found the device (and the agent loaded it).
    FORKD_RETURN_IF_ERROR(
        Annotate(Sh(*client, "cat /sys/class/net/eth0/address").status(), "template eth0"));
    const int64_t behind_s = HostNowNs() / 1'000'000'000 - kTemplateSkew.count();
    FORKD_RETURN_IF_ERROR(
        Annotate(Sh(*client, absl::StrCat("date -s @", behind_s)).status(), "template clock"));
    snap_ = dir_ / "snap";
    FORKD_RETURN_IF_ERROR(vm->SnapshotAndStop(snap_.string()));
    snapshot_at_ = std::chrono::steady_clock::now();
    return absl::OkStatus();
  }

  // Restores a fork onto tap `tap` (made here, owned by the fork with its
  // chains, socket and files from the start) with MAC `mac`; READY.
  void RestoreFork(const std::string& name, const std::string& tap, const std::string& mac) {
    const fs::path fork_dir = dir_ / name;
    fs::create_directories(fork_dir);
    uds_ = (fork_dir / "vsock.sock").string();
    fork_.fork_id = name;
    fork_.paths = {fork_dir};
    auto netns = netfilter::OpenNetns(NetnsPath());
    ASSERT_TRUE(netns.ok()) << netns.status();
    fork_.netns = std::move(*netns);
    absl::Status made = MakeTap(tap);
    ASSERT_TRUE(made.ok()) << made;
    fork_.tap = tap;
    auto vmm = SpawnOwnedFork({"--restore", snap_.string(), "--vsock-uds", uds_, "--net-tap", tap,
                               "--net-netns", NetnsPath(), "--net-mac", mac},
                              fork_);
    ASSERT_TRUE(vmm.ok()) << vmm.status();
    vmm_ = std::move(*vmm);
  }

  absl::Status Admit(uint64_t generation, const std::optional<agent::v1::Network>& network,
                     agent::v1::NotifyForkedResponse* answer = nullptr) {
    return gate::AdmitFork(
        fork_, agent::ConnectVsockMux(uds_, agent::kDefaultVsockPort, agent::DeadlineIn(10s)),
        generation, network, {.deadline = kLinuxCallDeadline}, answer);
  }

  absl::StatusOr<agent::AgentClient> Connect() {
    FORKD_ASSIGN_OR_RETURN(UniqueFd fd, agent::ConnectVsockMux(uds_, agent::kDefaultVsockPort,
                                                               agent::DeadlineIn(10s)));
    return agent::AgentClient(std::move(fd));
  }

  std::string Serial() { return vmm_.vmm ? vmm_.vmm->serial().text() : std::string(); }

  static std::string* setup_error_;
  static std::optional<forkd::testing::Topology> topo_;
  static std::optional<netfilter::Nftables> nft_;
  static fs::path dir_;
  static fs::path snap_;
  static std::chrono::steady_clock::time_point snapshot_at_;

  gate::ForkResources fork_;
  OwnedFork vmm_;
  std::string uds_;
};

std::string* LinuxForkIoTest::setup_error_ = new std::string("template never set up");
std::optional<forkd::testing::Topology> LinuxForkIoTest::topo_;
std::optional<netfilter::Nftables> LinuxForkIoTest::nft_;
fs::path LinuxForkIoTest::dir_;
fs::path LinuxForkIoTest::snap_;
std::chrono::steady_clock::time_point LinuxForkIoTest::snapshot_at_;

// What forkd's pipeline does: the gate connects the moment the fork is READY.
// Two forks, each admitted on that first connection, and their agents still
// answer on a new one.
TEST_F(LinuxForkIoTest, ConnectRightAfterReadyIsServed) {
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE(absl::StrCat("fork ", i));
    ASSERT_NO_FATAL_FAILURE(RestoreFork(absl::StrCat("ready", i), absl::StrCat("lfiordy", i),
                                        absl::StrCat("02:00:00:00:03:0", i)));
    absl::Status admitted = Admit(static_cast<uint64_t>(10 + i), std::nullopt);
    ASSERT_TRUE(admitted.ok()) << admitted << "\nserial:\n" << Serial();
    auto client = Connect();
    ASSERT_TRUE(client.ok()) << client.status();
    auto pong = client->Ping(agent::DeadlineIn(kLinuxCallDeadline));
    EXPECT_TRUE(pong.ok()) << pong.status();
    absl::Status reaped = gate::Reap(fork_);
    EXPECT_TRUE(reaped.ok()) << reaped;
  }
}

TEST_F(LinuxForkIoTest, NetReachesAnAllowedHostThroughTapAndChains) {
  constexpr char kTap[] = "lfionet";
  constexpr char kMac[] = "02:00:00:00:02:01";
  // The pod side of the fork's tap: its gateway.
  auto rt = netfilter::RtNetlink::Open(topo_->pod.get());
  ASSERT_TRUE(rt.ok()) << rt.status();
  ASSERT_NO_FATAL_FAILURE(RestoreFork("net", kTap, kMac));
  absl::Status s =
      rt->AddAddress(kTap, *netfilter::InterfaceAddress::Parse(absl::StrCat(kGateway, "/29")));
  ASSERT_TRUE(s.ok()) << s;
  s = rt->SetUp(kTap);
  ASSERT_TRUE(s.ok()) << s;
  // The fork's chains: deny by default, one allowed host (every protocol).
  netfilter::TapPolicy policy;
  policy.tap = kTap;
  policy.guest_v4 = *netfilter::IpAddress::Parse(kGuestIp);
  policy.allow = {{.destination = *netfilter::Cidr::Parse(absl::StrCat(kAllowedHost, "/32"))}};
  s = nft_->AddTap(policy);
  ASSERT_TRUE(s.ok()) << s;

  auto ready = ConnectAgent(uds_, 60s);
  ASSERT_TRUE(ready.ok()) << ready.status();
  agent::v1::Network network;
  network.set_ipv4_cidr(kGuestCidr);
  network.set_ipv4_gateway(kGateway);
  network.set_mac(kMac);
  agent::v1::NotifyForkedResponse answer;
  s = Admit(20, network, &answer);
  ASSERT_TRUE(s.ok()) << s << "\nserial:\n" << Serial();
  EXPECT_EQ(answer.network_error(), "");

  auto client = Connect();
  ASSERT_TRUE(client.ok()) << client.status();
  auto address = Sh(*client, "ip -4 addr show dev eth0; cat /sys/class/net/eth0/address");
  ASSERT_TRUE(address.ok()) << address.status();
  EXPECT_NE(address->find(kGuestCidr), std::string::npos) << *address;
  EXPECT_NE(address->find(kMac), std::string::npos) << *address;
  // busybox ping: -c 1 one echo request, -W 10 waits up to 10 s for its
  // answer (a hang guard for the slow emulated guest, not a speed claim);
  // exit 0 only when the answer came.
  auto ping = [&](const std::string& host) -> absl::StatusOr<agent::v1::ExecResponse> {
    return Exec(*client, {"ping", "-c", "1", "-W", "10", host}, 30s);
  };
  auto allowed = ping(kAllowedHost);
  ASSERT_TRUE(allowed.ok()) << allowed.status();
  EXPECT_EQ(allowed->exit_code(), 0)
      << "the allowed host did not answer: " << allowed->stdout() << allowed->stderr();
  auto blocked = ping(kOtherHost);
  ASSERT_TRUE(blocked.ok()) << blocked.status();
  EXPECT_TRUE(blocked->has_exit_code() && blocked->exit_code() != 0)
      << "a host the policy does not allow answered: " << blocked->stdout();
  // Positive control for the block: the same guest, the same command, once
  // the policy allows that host too.
  policy.allow.push_back({.destination = *netfilter::Cidr::Parse(absl::StrCat(kOtherHost, "/32"))});
  s = nft_->ReplaceTap(policy);
  ASSERT_TRUE(s.ok()) << s;
  auto unblocked = ping(kOtherHost);
  ASSERT_TRUE(unblocked.ok()) << unblocked.status();
  EXPECT_EQ(unblocked->exit_code(), 0)
      << "the host did not answer once allowed: " << unblocked->stdout() << unblocked->stderr();
  absl::Status reaped = gate::Reap(fork_);
  EXPECT_TRUE(reaped.ok()) << reaped;
}

TEST_F(LinuxForkIoTest, VsockMoves4MiBBothWays) {
  ASSERT_NO_FATAL_FAILURE(RestoreFork("vsock", "lfiovs", "02:00:00:00:02:02"));
  auto ready = ConnectAgent(uds_, 60s);
  ASSERT_TRUE(ready.ok()) << ready.status();
  absl::Status s = Admit(30, std::nullopt);
  ASSERT_TRUE(s.ok()) << s << "\nserial:\n" << Serial();
  auto client = Connect();
  ASSERT_TRUE(client.ok()) << client.status();

  // Host -> guest: 4 MiB on one connection, two frames.
  std::string payload(2 * kHalf, '\0');
  std::mt19937_64 gen(std::random_device{}());
  for (size_t i = 0; i < payload.size(); i += 8) {
    const uint64_t v = gen();
    std::memcpy(payload.data() + i, &v, 8);
  }
  for (int half = 0; half < 2; ++half) {
    agent::v1::WriteFileRequest req;
    req.set_path(absl::StrCat("/tmp/host", half));
    req.set_data(payload.substr(static_cast<size_t>(half) * kHalf, kHalf));
    auto resp = client->WriteFile(req, agent::DeadlineIn(kBigCallDeadline));
    ASSERT_TRUE(resp.ok()) << resp.status() << "\nserial:\n" << Serial();
    ASSERT_EQ(resp->error(), "");
  }
  const std::string want = kernel_stage::HexDigest(
      kernel_stage::Sha256({reinterpret_cast<const uint8_t*>(payload.data()), payload.size()}));
  auto got = Sh(*client, "cat /tmp/host0 /tmp/host1 | sha256sum", 60s);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->substr(0, 64), want) << "host -> guest";

  // Guest -> host: 4 MiB of the guest's own random bytes, on one connection.
  auto guest_sum = Sh(*client,
                      "dd if=/dev/urandom of=/tmp/g bs=1048576 count=4 2>/dev/null && "
                      "dd if=/tmp/g of=/tmp/g0 bs=1048576 count=2 2>/dev/null && "
                      "dd if=/tmp/g of=/tmp/g1 bs=1048576 skip=2 count=2 2>/dev/null && "
                      "sha256sum /tmp/g",
                      60s);
  ASSERT_TRUE(guest_sum.ok()) << guest_sum.status();
  ASSERT_GE(guest_sum->size(), 64U);
  std::string back;
  for (int half = 0; half < 2; ++half) {
    agent::v1::ReadFileRequest req;
    req.set_path(absl::StrCat("/tmp/g", half));
    req.set_max_bytes(kHalf);
    auto resp = client->ReadFile(req, agent::DeadlineIn(kBigCallDeadline));
    ASSERT_TRUE(resp.ok()) << resp.status() << "\nserial:\n" << Serial();
    ASSERT_EQ(resp->error(), "");
    EXPECT_FALSE(resp->truncated());
    back += resp->data();
  }
  ASSERT_EQ(back.size(), 2 * kHalf);
  EXPECT_NE(back, std::string(back.size(), '\0'));
  EXPECT_EQ(kernel_stage::HexDigest(
                kernel_stage::Sha256({reinterpret_cast<const uint8_t*>(back.data()), back.size()})),
            guest_sum->substr(0, 64))
      << "guest -> host";
  absl::Status reaped = gate::Reap(fork_);
  EXPECT_TRUE(reaped.ok()) << reaped;
}

TEST_F(LinuxForkIoTest, WallClockIsSteppedToTheHost) {
  ASSERT_NO_FATAL_FAILURE(RestoreFork("clock", "lfioclk", "02:00:00:00:02:03"));
  const auto since_snapshot = std::chrono::steady_clock::now() - snapshot_at_;
  auto client = ConnectAgent(uds_, 60s);
  ASSERT_TRUE(client.ok()) << client.status();
  // Positive control: the fork's clock, before the gate, is behind.
  auto before = ReadGuestClock(*client);
  ASSERT_TRUE(before.ok()) << before.status();
  const int64_t skew_ns = std::chrono::nanoseconds(kTemplateSkew).count();
  const int64_t bound_ns = std::chrono::nanoseconds(kClockBound).count();
  EXPECT_GE(before->behind_ns(), skew_ns - bound_ns)
      << "the un-stepped clock is not behind: the step below would prove nothing";

  agent::v1::NotifyForkedResponse answer;
  absl::Status s = Admit(40, std::nullopt, &answer);
  ASSERT_TRUE(s.ok()) << s << "\nserial:\n" << Serial();
  EXPECT_EQ(answer.clock_error(), "");
  // The step is host - guest at the agent's reading: what the guest lagged.
  EXPECT_GE(answer.clock_step_ns(), before->behind_ns() - bound_ns);
  EXPECT_LE(answer.clock_step_ns(), before->behind_ns() + bound_ns);

  auto after_client = Connect();
  ASSERT_TRUE(after_client.ok()) << after_client.status();
  auto after = ReadGuestClock(*after_client);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_GE(after->guest_ns, after->host_before_ns - bound_ns);
  EXPECT_LE(after->guest_ns, after->host_after_ns + bound_ns);
  std::printf(
      "RESULT linux_clock skew_ms=%lld since_snapshot_ms=%lld unstepped_behind_ms=%lld "
      "step_ms=%lld after_behind_ms=%lld\n",
      static_cast<long long>(std::chrono::milliseconds(kTemplateSkew).count()),
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(since_snapshot).count()),
      static_cast<long long>(before->behind_ns() / 1'000'000),
      static_cast<long long>(answer.clock_step_ns() / 1'000'000),
      static_cast<long long>(after->behind_ns() / 1'000'000));
  (void)std::fflush(stdout);
  absl::Status reaped = gate::Reap(fork_);
  EXPECT_TRUE(reaped.ok()) << reaped;
}

}  // namespace
}  // namespace forkd::vmm::testing

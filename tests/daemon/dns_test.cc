// forkd's per-sandbox DNS proxy and namespace hardening, end to end through
// the real forkd binary (stand-in VMM), inside namespaces the test creates:
//
//   pod ns (given to forkd as netns_path)              upstream ns
//   sbt<slot> 10.192.x.1/30: forkd's tap, chains,      inet0 198.18.0.2/30:
//     and the sandbox's DNS proxy at 10.192.x.1:53     a scripted ldns DNS server
//   up0 198.18.0.1/30 ────────────── veth ──────────── (tests/dns/fake_upstream.h)
//
// The test queries the resolver from inside the pod namespace, standing in
// for the guest (the stand-in VMM has no guest). Every "blocked" result has a
// positive control in the same test.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/errno_status.h"
#include "forkd/api/forkd.grpc.pb.h"
#include "forkd/dns/test_messages.h"
#include "gtest/gtest.h"
#include "netfilter/links.h"
#include "netfilter/netns.h"
#include "netfilter/nftables.h"
#include "netfilter/sysctl.h"
#include "netfilter/tap_name.h"
#include "tests/daemon/forkd_harness.h"
#include "tests/dns/fake_upstream.h"
#include "tests/netfilter/netns_sockets.h"
#include "tests/support/assert_ok.h"
#include "tests/support/requirements.h"
#include "tests/support/temp_dir.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);

namespace forkd::testing {
namespace {

using namespace std::chrono_literals;
using dns::testing::ResponseSpec;
using netfilter::IpAddress;

constexpr char kUpstream[] = "198.18.0.2";

struct Answer {
  int rcode = -1;  // -1: no answer arrived
  std::vector<std::string> records;
  bool Has(const std::string& address) const {
    for (const auto& r : records) {
      if (r.ends_with(" " + address)) return true;
    }
    return false;
  }
};

ScriptedAnswer Records(std::vector<std::string> rrs) {
  return ScriptedAnswer{.udp = ResponseSpec{.answer = std::move(rrs)}};
}

// Runs `fn` on a thread inside `netns` (the test's own thread never moves).
template <typename F>
auto InNetns(int netns, F fn) -> decltype(fn()) {
  decltype(fn()) out{};
  std::thread t([&] {
    auto guard = netfilter::NetnsGuard::Enter(netns);
    if (!guard.ok()) {
      ADD_FAILURE() << guard.status();
      return;
    }
    out = fn();
  });
  t.join();
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return "<absent>";
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

// True when a UDP socket is bound to local port `port` in the namespace.
bool UdpPortBound(int netns, uint16_t port) {
  char hex[8];
  (void)std::snprintf(hex, sizeof hex, ":%04X ", port);
  return InNetns(netns, [&] {
    const std::string table =
        ReadFile("/proc/thread-self/net/udp") + ReadFile("/proc/thread-self/net/udp6");
    std::istringstream lines(table);
    for (std::string line; std::getline(lines, line);) {
      std::istringstream f(line);
      std::string slot, local;
      if (f >> slot >> local && (local + " ").find(hex) != std::string::npos) return true;
    }
    return false;
  });
}

absl::Status WaitOperUp(netfilter::RtNetlink& rt, const std::string& dev) {
  for (int i = 0; i < 2000; i++) {  // hang guard: a veth comes up within a second
    FORKD_ASSIGN_OR_RETURN(bool up, rt.IsOperUp(dev));
    if (up) return absl::OkStatus();
    std::this_thread::sleep_for(5ms);
  }
  return absl::DeadlineExceededError(dev + " did not come up");
}

// A GET of http://127.0.0.1:port/metrics (loopback of the test's own
// namespace, where forkd serves --metrics-listen).
std::string HttpGetMetrics(uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return "";
  const std::string req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::write(fd.get(), req.data(), req.size()) != static_cast<ssize_t>(req.size())) return "";
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd.get(), buf, sizeof buf)) > 0;) out.append(buf, n);
  return out;
}

uint16_t FreeLoopbackPort() {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    return 0;
  }
  return ntohs(a.sin_port);
}

class DnsDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(tmp_.path().empty());
    auto pod = netfilter::CreateNetns();
    ASSERT_OK(pod.status());
    pod_ = std::move(*pod);
    auto up = netfilter::CreateNetns();
    ASSERT_OK(up.status());
    upstream_ns_ = std::move(*up);
    auto rt = netfilter::RtNetlink::Open(pod_.get());
    ASSERT_OK(rt.status());
    auto rt_up = netfilter::RtNetlink::Open(upstream_ns_.get());
    ASSERT_OK(rt_up.status());
    ASSERT_OK(rt->SetUp("lo"));
    ASSERT_OK(rt_up->SetUp("lo"));
    ASSERT_OK(rt->CreateVethPair("up0", "inet0", upstream_ns_.get()));
    ASSERT_OK(rt->AddAddress("up0", *netfilter::InterfaceAddress::Parse("198.18.0.1/30")));
    ASSERT_OK(rt_up->AddAddress("inet0", *netfilter::InterfaceAddress::Parse("198.18.0.2/30")));
    ASSERT_OK(rt->SetUp("up0"));
    ASSERT_OK(rt_up->SetUp("inet0"));
    ASSERT_OK(WaitOperUp(*rt, "up0"));
    ASSERT_OK(WaitOperUp(*rt_up, "inet0"));

    auto server = FakeUpstream::Start(upstream_ns_.get(), kUpstream);
    ASSERT_OK(server.status());
    upstream_ = std::move(*server);
    upstream_->Set("api.example.com", Records({"api.example.com. 60 IN A 203.0.113.10"}));
    // A rebinding answer: a private address next to a public one.
    upstream_->Set("rebind.example.com", Records({"rebind.example.com. 60 IN A 10.0.0.5",
                                                  "rebind.example.com. 60 IN A 203.0.113.11"}));
    upstream_->Set("blocked.example.org", Records({"blocked.example.org. 60 IN A 203.0.113.12"}));

    metrics_port_ = FreeLoopbackPort();
    ASSERT_NE(metrics_port_, 0);
    StartForkd({});
    ASSERT_TRUE(CreateProbeTemplate(forkd_->api(), "base").ok()) << forkd_->Log();
  }

  // (Re)starts forkd on the same data directory with the fixture's flags
  // and `extra`.
  void StartForkd(const std::vector<std::string>& extra) {
    if (forkd_) forkd_->Stop();
    std::vector<std::string> flags = {"--dns-upstream", std::string(kUpstream) + ":53",
                                      "--metrics-listen",
                                      "127.0.0.1:" + std::to_string(metrics_port_)};
    flags.insert(flags.end(), extra.begin(), extra.end());
    forkd_ = std::make_unique<ForkdProcess>(tmp_.path(), flags);
    ASSERT_TRUE(forkd_->Start());
  }

  void TearDown() override {
    if (forkd_ && forkd_->pid() > 0) {
      grpc::ClientContext ctx;
      v1::ListSandboxesResponse all;
      if (forkd_->api().ListSandboxes(&ctx, {}, &all).ok()) {
        for (const auto& sb : all.sandboxes()) (void)Terminate(sb.sandbox_id());
      }
      forkd_->Stop();
      EXPECT_EQ(Leftovers(forkd_->data()), "") << forkd_->Log();
    }
  }

  std::string PodPath() const {
    return "/proc/" + std::to_string(::getpid()) + "/fd/" + std::to_string(pod_.get());
  }

  v1::ForkRequest DnsFork(std::vector<std::string> names = {"api.example.com",
                                                            "rebind.example.com"}) {
    v1::ForkRequest req;
    req.set_template_id("base");
    auto* s = req.add_sandboxes();
    s->set_sandbox_id("dns1");
    s->set_netns_path(PodPath());
    for (auto& n : names) s->mutable_egress()->add_allow_dns(n);
    return req;
  }

  absl::StatusOr<v1::Sandbox> Fork(const v1::ForkRequest& req) {
    grpc::ClientContext ctx;
    v1::ForkResponse resp;
    grpc::Status s = forkd_->api().Fork(&ctx, req, &resp);
    if (!s.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
    }
    if (resp.sandboxes_size() != 1) return absl::InternalError("expected one sandbox");
    return resp.sandboxes(0);
  }

  grpc::Status Terminate(const std::string& id) {
    grpc::ClientContext ctx;
    v1::TerminateRequest req;
    req.set_sandbox_id(id);
    v1::TerminateResponse resp;
    return forkd_->api().Terminate(&ctx, req, &resp);
  }

  // The resolver the guest was given: the host side of its /30 (guest - 1).
  static std::string ResolverOf(const v1::Sandbox& sb) {
    IpAddress a = *IpAddress::Parse(sb.guest_ipv4());
    a.bytes[3] -= 1;
    return a.ToString();
  }

  // One A query from inside the pod namespace to `resolver`:53.
  Answer Resolve(const std::string& resolver, const std::string& name) {
    auto fd = UdpBind(pod_.get(), "0.0.0.0", 0);
    EXPECT_TRUE(fd.ok()) << fd.status();
    if (!fd.ok()) return {};
    const uint16_t id = next_id_++;
    const std::vector<uint8_t> query = dns::testing::MakeQuery(name, LDNS_RR_TYPE_A, id);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(53);
    std::memcpy(&to.sin_addr, IpAddress::Parse(resolver)->bytes.data(), 4);
    if (::sendto(fd->get(), query.data(), query.size(), 0, reinterpret_cast<sockaddr*>(&to),
                 sizeof to) != static_cast<ssize_t>(query.size())) {
      return {};
    }
    const auto deadline = std::chrono::steady_clock::now() + kDropWait;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd->get(), POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      std::vector<uint8_t> buf(65535);
      const ssize_t n = ::recv(fd->get(), buf.data(), buf.size(), 0);
      if (n <= 0) continue;
      buf.resize(static_cast<size_t>(n));
      auto pkt = dns::FromWire(buf.data(), buf.size());
      if (!pkt.ok() || ldns_pkt_id(pkt->get()) != id) continue;
      return Answer{.rcode = dns::testing::Rcode(buf), .records = dns::testing::AnswerRecords(buf)};
    }
    return {};
  }

  // The tap's IPv4 pin set as nft lists it (assertion only).
  std::string PinSet(const std::string& tap) {
    auto out = NftInNetns(pod_.get(), "list set inet forkd tap_" + tap + "_pin4");
    return out.ok() ? *out : "<" + std::string(out.status().message()) + ">";
  }

  TempDir tmp_{"forkd_dns"};
  UniqueFd pod_, upstream_ns_;
  std::unique_ptr<FakeUpstream> upstream_;
  std::unique_ptr<ForkdProcess> forkd_;
  uint16_t metrics_port_ = 0;
  uint16_t next_id_ = 0x4d00;
};

TEST_F(DnsDaemonTest, AllowlistedNamesArePinnedOthersRefusedRebindingStripped) {
  auto sb = Fork(DnsFork());
  ASSERT_TRUE(sb.ok()) << sb.status() << forkd_->Log();
  const std::string tap = sb->tap();
  EXPECT_TRUE(netfilter::IsForkdTapName(tap)) << tap;
  const std::string resolver = ResolverOf(*sb);

  // Allowlisted: answered, and pinned with each allowed port (default 443, 80).
  const Answer api = Resolve(resolver, "api.example.com");
  EXPECT_EQ(api.rcode, LDNS_RCODE_NOERROR) << forkd_->Log();
  EXPECT_TRUE(api.Has("203.0.113.10")) << ::testing::PrintToString(api.records);
  std::string pins = PinSet(tap);
  EXPECT_NE(pins.find("203.0.113.10 . 443"), std::string::npos) << pins;
  EXPECT_NE(pins.find("203.0.113.10 . 80"), std::string::npos) << pins;
  EXPECT_EQ(pins.find("203.0.113.10 . 8080"), std::string::npos) << pins;

  // Not allowlisted: REFUSED, upstream never asked, nothing pinned.
  const Answer blocked = Resolve(resolver, "blocked.example.org");
  EXPECT_EQ(blocked.rcode, LDNS_RCODE_REFUSED);
  EXPECT_TRUE(blocked.records.empty());
  EXPECT_EQ(upstream_->QueriesFor("blocked.example.org"), 0);
  EXPECT_GE(upstream_->QueriesFor("api.example.com"), 1);  // control: upstream is asked
  pins = PinSet(tap);
  EXPECT_EQ(pins.find("203.0.113.12"), std::string::npos) << pins;

  // Rebinding: the private address is stripped and never pinned; the public
  // one in the same answer is released and pinned (control).
  const Answer rebind = Resolve(resolver, "rebind.example.com");
  EXPECT_EQ(rebind.rcode, LDNS_RCODE_NOERROR);
  EXPECT_FALSE(rebind.Has("10.0.0.5")) << ::testing::PrintToString(rebind.records);
  EXPECT_TRUE(rebind.Has("203.0.113.11")) << ::testing::PrintToString(rebind.records);
  pins = PinSet(tap);
  EXPECT_EQ(pins.find("10.0.0.5"), std::string::npos) << pins;
  EXPECT_NE(pins.find("203.0.113.11 . 443"), std::string::npos) << pins;

  // forkd's metrics carry the proxy's counters (sampled once a second; the
  // loop is a hang guard, the assertion is on the values).
  std::string metrics;
  for (int i = 0; i < 100; i++) {
    metrics = HttpGetMetrics(metrics_port_);
    if (metrics.find("forkd_dns_total{event=\"refused\"} 1") != std::string::npos) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_NE(metrics.find("forkd_dns_total{event=\"refused\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("forkd_dns_total{event=\"answered\"} 2"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("forkd_dns_stripped_total{reason=\"rfc1918\"} 1"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("forkd_dns_proxies 1"), std::string::npos) << metrics;
}

TEST_F(DnsDaemonTest, TerminateStopsTheProxyAndRemovesItsPins) {
  auto sb = Fork(DnsFork());
  ASSERT_TRUE(sb.ok()) << sb.status() << forkd_->Log();
  const std::string resolver = ResolverOf(*sb);
  // Control: serving and pinning while the sandbox lives.
  EXPECT_TRUE(UdpPortBound(pod_.get(), 53));
  ASSERT_EQ(Resolve(resolver, "api.example.com").rcode, LDNS_RCODE_NOERROR) << forkd_->Log();
  ASSERT_NE(PinSet(sb->tap()).find("203.0.113.10"), std::string::npos);

  ASSERT_TRUE(Terminate(sb->sandbox_id()).ok());
  EXPECT_FALSE(UdpPortBound(pod_.get(), 53)) << "the proxy's socket outlived Terminate";
  EXPECT_EQ(Resolve(resolver, "api.example.com").rcode, -1);
  auto nft = netfilter::Nftables::Open(pod_.get(), 1);
  ASSERT_OK(nft.status());
  auto taps = nft->ListTaps();
  ASSERT_OK(taps.status());
  EXPECT_TRUE(taps->empty());  // the pin sets went with the tap's objects
}

TEST_F(DnsDaemonTest, KilledForkdLeavesNoProxyAndItsRestartServesTheAdoptedSandboxAgain) {
  // Jailed: the VMM's parent is its keeper, so it outlives forkd
  // (forkd/daemon/README.md "Crash safety").
  StartForkd({});
  auto sb = Fork(DnsFork());
  ASSERT_TRUE(sb.ok()) << sb.status() << forkd_->Log();
  const std::string resolver = ResolverOf(*sb);
  ASSERT_EQ(Resolve(resolver, "api.example.com").rcode, LDNS_RCODE_NOERROR);

  forkd_->Kill();
  EXPECT_FALSE(UdpPortBound(pod_.get(), 53)) << "a proxy socket outlived forkd";
  // The pins stay with the tap (the adopted VM keeps what it was given until
  // the pins expire).
  EXPECT_NE(PinSet(sb->tap()).find("203.0.113.10"), std::string::npos);

  ASSERT_TRUE(forkd_->Start());
  EXPECT_TRUE(UdpPortBound(pod_.get(), 53));
  const Answer again = Resolve(resolver, "rebind.example.com");
  EXPECT_EQ(again.rcode, LDNS_RCODE_NOERROR) << forkd_->Log();
  EXPECT_TRUE(again.Has("203.0.113.11"));
  EXPECT_EQ(Resolve(resolver, "blocked.example.org").rcode, LDNS_RCODE_REFUSED);
}

TEST_F(DnsDaemonTest, SandboxNamespaceIsHardenedBeforeUse) {
  auto fresh = netfilter::CreateNetns();
  ASSERT_OK(fresh.status());
  v1::ForkRequest req = DnsFork({});  // hardening does not depend on DNS
  auto sb = Fork(req);
  ASSERT_TRUE(sb.ok()) << sb.status() << forkd_->Log();
  int differs = 0;
  for (const auto& [path, want] : netfilter::HardeningSysctls(sb->tap())) {
    const std::string got = InNetns(pod_.get(), [&] { return ReadFile("/proc/sys/" + path); });
    if (got == "<absent>" &&
        (path.find("seg6") != std::string::npos || path.find("rpl_seg") != std::string::npos)) {
      continue;  // this kernel lacks the feature
    }
    EXPECT_EQ(got, want) << path;
    // Control: a namespace nobody hardened has other values for some of them.
    if (path.find("/conf/all/") != std::string::npos) {
      const std::string dflt = InNetns(fresh->get(), [&] { return ReadFile("/proc/sys/" + path); });
      differs += dflt != want ? 1 : 0;
    }
  }
  EXPECT_GT(differs, 0) << "a fresh namespace already has every hardened value: no control";
}

TEST_F(DnsDaemonTest, DnsNamesWithoutAnUpstreamAreAFailedPrecondition) {
  TempDir other{"forkd_dns_noup"};
  ForkdProcess plain(other.path());
  ASSERT_TRUE(plain.Start());
  ASSERT_TRUE(CreateProbeTemplate(plain.api(), "base").ok());
  v1::ForkRequest req = DnsFork();
  req.mutable_sandboxes(0)->clear_netns_path();
  grpc::ClientContext ctx;
  v1::ForkResponse resp;
  grpc::Status s = plain.api().Fork(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_NE(s.error_message().find("--dns-upstream"), std::string::npos) << s.error_message();
  // Control: the same daemon forks the same sandbox without DNS names.
  req.mutable_sandboxes(0)->mutable_egress()->clear_allow_dns();
  grpc::ClientContext ctx2;
  grpc::Status ok = plain.api().Fork(&ctx2, req, &resp);
  EXPECT_TRUE(ok.ok()) << ok.error_message() << plain.Log();
  if (ok.ok()) {
    grpc::ClientContext ctx3;
    v1::TerminateRequest t;
    t.set_sandbox_id("dns1");
    v1::TerminateResponse tr;
    EXPECT_TRUE(plain.api().Terminate(&ctx3, t, &tr).ok());
  }
  plain.Stop();
  EXPECT_EQ(Leftovers(plain.data()), "");
}

}  // namespace
}  // namespace forkd::testing

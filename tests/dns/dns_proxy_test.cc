// Tier 1: the DNS proxy with real packets, real nftables pins and a scripted
// upstream server, all inside namespaces the test creates (topology.h):
//
//   guest ns ──veth── pod ns: tap chains, proxy at 169.254.1.1:53 ──── internet ns:
//                                                                      upstream DNS 198.18.0.2:53,
//                                                                      hosts 203.0.113.10 (443,
//                                                                      8080), 169.254.169.254 ...
//
// The tap's policy allows nothing but the resolver: a destination is reachable
// only through a pin the proxy made. Every "blocked" result has a positive
// control (the pod reaches the same destination, or the same flow passed while
// pinned).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "common/errno_status.h"
#include "forkd/dns/dns_proxy.h"
#include "forkd/dns/ldns_ptr.h"
#include "forkd/dns/test_messages.h"
#include "gtest/gtest.h"
#include "netfilter/netns.h"
#include "netfilter/nftables.h"
#include "tests/dns/fake_upstream.h"
#include "tests/netfilter/netns_sockets.h"
#include "tests/netfilter/topology.h"
#include "tests/support/assert_ok.h"
#include "tests/support/requirements.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);

namespace forkd::testing {
namespace {

using dns::AddressClass;
using dns::DnsProxy;
using dns::ProxyConfig;
using dns::testing::ResponseSpec;
using netfilter::IpAddress;

constexpr char kUpstream[] = "198.18.0.2";  // inet0, reached from the pod through up0
constexpr uint16_t kPinnedPort = 443;

struct Answer {
  int rcode = -1;  // -1: no answer arrived
  std::vector<std::string> addresses;
  std::vector<std::string> records;
};

ScriptedAnswer Records(std::vector<std::string> rrs) {
  return ScriptedAnswer{.udp = ResponseSpec{.answer = std::move(rrs)}};
}

class DnsProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = Topology::Create(1);
    ASSERT_OK(t.status());
    topo_ = std::move(*t);
    const int inet = topo_.internet.get();
    const int pod = topo_.pod.get();
    for (uint16_t port : {80, 8080}) Keep(TcpListen(inet, "0.0.0.0", port));
    auto l443 = TcpListen(inet, "0.0.0.0", 443);
    ASSERT_OK(l443.status());
    inet443_ = std::move(*l443);
    Keep(TcpListen(inet, "::", 443));
    Keep(TcpListen(pod, topo_.guests[0].gateway, 9091));  // stands in for the sandbox API
    Keep(TcpListen(pod, kResolver, 9091));
    Keep(TcpListen(pod, kResolver, 53));

    auto upstream = FakeUpstream::Start(inet, kUpstream);
    ASSERT_OK(upstream.status());
    upstream_ = std::move(*upstream);

    auto nft = netfilter::Nftables::Open(pod);
    ASSERT_OK(nft.status());
    nft_.emplace(std::move(*nft));
    ASSERT_OK(nft_->EnsureSkeleton({.uplink = kUplink,
                                    .guest_subnets = {*netfilter::Cidr::Parse("10.200.0.0/16"),
                                                      *netfilter::Cidr::Parse("fd42::/16")}}));
    netfilter::TapPolicy policy;
    policy.tap = topo_.guests[0].tap;
    policy.guest_v4 = *IpAddress::Parse(topo_.guests[0].guest_ip);
    policy.guest_v6 = *IpAddress::Parse(topo_.guests[0].guest_ip6);
    policy.resolvers = {*IpAddress::Parse(kResolver)};
    ASSERT_OK(nft_->AddTap(policy));
  }

  void TearDown() override {
    if (proxy_) EXPECT_OK_STATUS(proxy_->Stop());
  }

  static void EXPECT_OK_STATUS(const absl::Status& s) { EXPECT_TRUE(s.ok()) << s; }

  ProxyConfig Config() {
    ProxyConfig c;
    c.netns_fd = topo_.pod.get();
    c.listen_address = *IpAddress::Parse(kResolver);
    c.upstream_address = *IpAddress::Parse(kUpstream);
    c.allowlist = {"api.example.com", "*.example.net"};
    return c;
  }

  void StartProxy(const ProxyConfig& config, const std::string& tap = "sbt0") {
    auto pinner = dns::NftPinner::Open(topo_.pod.get(), 1, tap, {kPinnedPort});
    ASSERT_OK(pinner.status());
    auto proxy = DnsProxy::Start(config, std::move(*pinner));
    ASSERT_OK(proxy.status());
    proxy_ = std::move(*proxy);
  }

  int Guest() const { return topo_.guests[0].ns.get(); }

  // A guest socket (ephemeral port) that talks to the resolver.
  UniqueFd GuestSocket() {
    auto fd = UdpBind(Guest(), "0.0.0.0", 0);
    EXPECT_TRUE(fd.ok()) << fd.status();
    return fd.ok() ? std::move(*fd) : UniqueFd();
  }

  static void SendTo(int fd, const std::vector<uint8_t>& bytes) {
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(53);
    std::memcpy(&to.sin_addr, IpAddress::Parse(kResolver)->bytes.data(), 4);
    (void)::sendto(fd, bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to));
  }

  // Waits for the answer with id `id` on `fd`.
  static Answer Receive(int fd, uint16_t id, std::chrono::milliseconds wait = kDropWait) {
    const auto deadline = std::chrono::steady_clock::now() + wait;
    for (;;) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return {};
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return {};
      std::vector<uint8_t> buf(65535);
      const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
      if (n <= 0) continue;
      buf.resize(static_cast<size_t>(n));
      auto pkt = dns::FromWire(buf.data(), buf.size());
      if (!pkt.ok() || ldns_pkt_id(pkt->get()) != id) continue;
      Answer a;
      a.rcode = ldns_pkt_get_rcode(pkt->get());
      a.records = dns::testing::AnswerRecords(buf);
      const ldns_rr_list* rrs = ldns_pkt_answer(pkt->get());
      for (size_t i = 0; i < ldns_rr_list_rr_count(rrs); ++i) {
        const ldns_rr* rr = ldns_rr_list_rr(rrs, i);
        const ldns_rdf* rd = ldns_rr_rdf(rr, 0);
        IpAddress addr;
        if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_A && ldns_rdf_size(rd) == 4) {
          addr.family = netfilter::Family::kV4;
        } else if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_AAAA && ldns_rdf_size(rd) == 16) {
          addr.family = netfilter::Family::kV6;
        } else {
          continue;
        }
        std::memcpy(addr.bytes.data(), ldns_rdf_data(rd), addr.size());
        a.addresses.push_back(addr.ToString());
      }
      return a;
    }
  }

  // One query from the guest; a stub resolver's retries when `attempts` > 1.
  Answer Resolve(const std::string& name, ldns_rr_type type = LDNS_RR_TYPE_A, int attempts = 1) {
    UniqueFd fd = GuestSocket();
    for (int i = 0; i < attempts; ++i) {
      const uint16_t id = static_cast<uint16_t>(next_id_++);
      SendTo(fd.get(), dns::testing::MakeQuery(name, type, id));
      Answer a = Receive(fd.get(), id);
      if (a.rcode >= 0) return a;
    }
    return {};
  }

  Reach FromGuest(const std::string& dst, uint16_t port) { return TcpConnect(Guest(), dst, port); }
  Reach FromPod(const std::string& dst, uint16_t port) {
    return TcpConnect(topo_.pod.get(), dst, port);
  }

  void Keep(absl::StatusOr<UniqueFd> fd) {
    ASSERT_OK(fd.status());
    keep_.push_back(std::move(*fd));
  }

  Topology topo_;
  std::vector<UniqueFd> keep_;
  UniqueFd inet443_;
  std::unique_ptr<FakeUpstream> upstream_;
  std::optional<netfilter::Nftables> nft_;
  std::unique_ptr<DnsProxy> proxy_;
  int next_id_ = 100;
};

TEST_F(DnsProxyTest, AllowlistedNameResolvesAndOnlyItsPinnedPortOpens) {
  StartProxy(Config());
  upstream_->Set("api.example.com", Records({"api.example.com. 60 IN A 203.0.113.10"}));
  // Before the answer: the host is up (pod reaches it) but fenced for the guest.
  ASSERT_EQ(FromPod(kAllowedHost, 443), Reach::kConnected);
  ASSERT_EQ(FromPod(kAllowedHost, 8080), Reach::kConnected);
  ASSERT_EQ(FromGuest(kAllowedHost, 443), Reach::kTimedOut);

  const Answer a = Resolve("API.Example.com.");
  EXPECT_EQ(a.rcode, LDNS_RCODE_NOERROR);
  EXPECT_EQ(a.addresses, std::vector<std::string>{kAllowedHost});
  EXPECT_EQ(FromGuest(kAllowedHost, 443), Reach::kConnected);
  EXPECT_EQ(FromGuest(kAllowedHost, 8080), Reach::kTimedOut);  // not an allowed port
  const dns::ProxyMetrics m = proxy_->Metrics();
  EXPECT_EQ(m.answered, 1u) << ToString(m);
  EXPECT_EQ(m.pins, 1u) << ToString(m);
}

TEST_F(DnsProxyTest, Ipv6AnswerIsPinnedToo) {
  StartProxy(Config());
  upstream_->Set("v6.example.net", Records({"v6.example.net. 60 IN AAAA 2001:db8::10"}));
  ASSERT_EQ(FromPod(kAllowedHost6, 443), Reach::kConnected);
  ASSERT_EQ(FromGuest(kAllowedHost6, 443), Reach::kTimedOut);
  const Answer a = Resolve("v6.example.net", LDNS_RR_TYPE_AAAA);
  EXPECT_EQ(a.addresses, std::vector<std::string>{kAllowedHost6});
  // The first packet waits for neighbour discovery (a 1 s retransmit timer).
  EXPECT_EQ(TcpConnect(Guest(), kAllowedHost6, 443, "", std::chrono::seconds(3)),
            Reach::kConnected);
}

TEST_F(DnsProxyTest, NonAllowlistedNameIsRefusedNeverAskedAndStaysUnreachable) {
  StartProxy(Config());
  // A sibling of an exact entry, and a name that merely ends like one.
  upstream_->Set("www.example.com", Records({"www.example.com. 60 IN A 198.51.100.20"}));
  upstream_->Set("evilapi.example.com", Records({"evilapi.example.com. 60 IN A 198.51.100.20"}));
  ASSERT_EQ(FromPod(kOtherHost, 443), Reach::kConnected);
  for (const char* name : {"www.example.com", "evilapi.example.com", "example.net"}) {
    const Answer a = Resolve(name);
    EXPECT_EQ(a.rcode, LDNS_RCODE_REFUSED) << name;
    EXPECT_TRUE(a.addresses.empty()) << name;
  }
  // Other types for an allowlisted name are refused too.
  EXPECT_EQ(Resolve("api.example.com", LDNS_RR_TYPE_TXT).rcode, LDNS_RCODE_REFUSED);
  EXPECT_EQ(upstream_->QueriesFor("www.example.com"), 0);
  EXPECT_EQ(upstream_->QueriesFor("evilapi.example.com"), 0);
  EXPECT_EQ(FromGuest(kOtherHost, 443), Reach::kTimedOut);
  EXPECT_EQ(proxy_->Metrics().refused, 4u);
}

// Connects from `netns` and keeps the connection.
absl::StatusOr<UniqueFd> OpenFlow(int netns, const std::string& dst, uint16_t port) {
  FORKD_ASSIGN_OR_RETURN(auto guard, netfilter::NetnsGuard::Enter(netns));
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return absl::InternalError("socket");
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  std::memcpy(&to.sin_addr, IpAddress::Parse(dst)->bytes.data(), 4);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
    return absl::UnavailableError("connect " + dst + ": " + std::strerror(errno));
  }
  return fd;
}

// Accepts connections on `listener` until the one from `client` (earlier
// probes may be queued before it) and returns it.
UniqueFd AcceptFrom(int listener, int client) {
  sockaddr_in mine{};
  socklen_t len = sizeof(mine);
  if (::getsockname(client, reinterpret_cast<sockaddr*>(&mine), &len) != 0) return UniqueFd();
  for (;;) {
    pollfd p{listener, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(kDropWait.count())) <= 0) return UniqueFd();
    sockaddr_in peer{};
    len = sizeof(peer);
    UniqueFd conn(::accept4(listener, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC));
    if (!conn) return UniqueFd();
    if (peer.sin_port == mine.sin_port) return conn;
  }
}

bool Arrives(int fd, const std::string& payload) {
  std::string got;
  const auto deadline = std::chrono::steady_clock::now() + kDropWait;
  while (got.size() < payload.size()) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char buf[256];
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return false;
    got.append(buf, static_cast<size_t>(n));
  }
  return got == payload;
}

TEST_F(DnsProxyTest, PinExpiresAndTheAddressIsBlockedAgain) {
  ProxyConfig c = Config();
  c.limits.min_pin = std::chrono::seconds(2);
  StartProxy(c);
  upstream_->Set("api.example.com", Records({"api.example.com. 1 IN A 203.0.113.10"}));

  const Answer a = Resolve("api.example.com");
  const auto answered_at = std::chrono::steady_clock::now();
  ASSERT_EQ(a.addresses, std::vector<std::string>{kAllowedHost});
  ASSERT_EQ(FromGuest(kAllowedHost, 443), Reach::kConnected);
  // A flow opened while pinned (to the pinned port: the listener on 443).
  auto flow = OpenFlow(Guest(), kAllowedHost, 443);
  ASSERT_OK(flow.status());
  UniqueFd server = AcceptFrom(inet443_.get(), flow->get());
  ASSERT_TRUE(server.valid());
  ASSERT_EQ(::send(flow->get(), "before", 6, MSG_NOSIGNAL), 6);
  ASSERT_TRUE(Arrives(server.get(), "before"));  // positive control: the flow works while pinned

  // The pin was set before the answer left, so it is gone 2 s after this point.
  std::this_thread::sleep_until(answered_at + c.limits.min_pin + std::chrono::milliseconds(700));
  ASSERT_EQ(FromPod(kAllowedHost, 443), Reach::kConnected);
  EXPECT_EQ(FromGuest(kAllowedHost, 443), Reach::kTimedOut);

  ASSERT_EQ(::send(flow->get(), "after", 5, MSG_NOSIGNAL), 5);
  // Revocation cuts live flows (docs/datapath.md): the egress chain judges
  // every packet against the pins in force, so the open flow stops too.
  EXPECT_FALSE(Arrives(server.get(), "after"))
      << "a flow opened while pinned still passes after the pin expired";
}

TEST_F(DnsProxyTest, RebindingAnswersAreStripped) {
  StartProxy(Config());
  struct Case {
    std::string name;
    ldns_rr_type type;
    std::vector<std::string> records;
    AddressClass reason;
  };
  const std::vector<Case> cases = {
      {"r1.example.net",
       LDNS_RR_TYPE_A,
       {"r1.example.net. 60 IN A 10.0.0.5"},
       AddressClass::kPrivate},
      {"r2.example.net",
       LDNS_RR_TYPE_AAAA,
       {"r2.example.net. 60 IN AAAA 64:ff9b::a9fe:a9fe"},
       AddressClass::kMetadata},
      {"r3.example.net",
       LDNS_RR_TYPE_AAAA,
       {"r3.example.net. 60 IN AAAA 2002:a9fe:a9fe::1"},
       AddressClass::kMetadata},
      {"r4.example.net",
       LDNS_RR_TYPE_AAAA,
       {"r4.example.net. 60 IN AAAA ::ffff:169.254.169.254"},
       AddressClass::kMetadata},
      {"r5.example.net",
       LDNS_RR_TYPE_A,
       {"r5.example.net. 60 IN CNAME metadata.attacker.test.",
        "metadata.attacker.test. 60 IN A 169.254.169.254"},
       AddressClass::kMetadata},
      {"r6.example.net",
       LDNS_RR_TYPE_A,
       {"r6.example.net. 60 IN A 169.254.169.254"},
       AddressClass::kMetadata},
  };
  // The fake metadata host is up (the pod reaches it) and fenced for the guest.
  ASSERT_EQ(FromPod(kMetadataHost, 80), Reach::kConnected);
  for (const Case& c : cases) {
    upstream_->Set(c.name, Records(c.records));
    const dns::ProxyMetrics before = proxy_->Metrics();
    const Answer a = Resolve(c.name, c.type);
    EXPECT_EQ(a.rcode, LDNS_RCODE_NOERROR) << c.name;
    EXPECT_TRUE(a.addresses.empty()) << c.name << " released " << a.addresses[0];
    const dns::ProxyMetrics after = proxy_->Metrics();
    EXPECT_EQ(after.stripped_by_class[static_cast<int>(c.reason)],
              before.stripped_by_class[static_cast<int>(c.reason)] + 1)
        << c.name << ": " << ToString(after);
    EXPECT_EQ(after.pins, before.pins) << c.name;
  }
  EXPECT_EQ(FromGuest(kMetadataHost, 80), Reach::kTimedOut);
  // Positive control: the same filter releases a public address in a mixed answer.
  upstream_->Set("mixed.example.net", Records({"mixed.example.net. 60 IN A 169.254.169.254",
                                               "mixed.example.net. 60 IN A 203.0.113.10"}));
  EXPECT_EQ(Resolve("mixed.example.net").addresses, std::vector<std::string>{kAllowedHost});
  EXPECT_EQ(FromGuest(kAllowedHost, 443), Reach::kConnected);
  EXPECT_EQ(FromGuest(kMetadataHost, 443), Reach::kTimedOut);
}

TEST_F(DnsProxyTest, CnameTargetNeedNotBeAllowlisted) {
  StartProxy(Config());
  upstream_->Set("www.example.net", Records({"www.example.net. 60 IN CNAME edge.cdn.test.",
                                             "edge.cdn.test. 60 IN A 203.0.113.10"}));
  const Answer a = Resolve("www.example.net");
  EXPECT_EQ(a.addresses, std::vector<std::string>{kAllowedHost});
  EXPECT_EQ(a.records.size(), 2u);
  EXPECT_EQ(FromGuest(kAllowedHost, 443), Reach::kConnected);
}

TEST_F(DnsProxyTest, GuestReachesOnlyTheResolversPort53AmongPodLocalPorts) {
  StartProxy(Config());
  const GuestLink& g = topo_.guests[0];
  ASSERT_EQ(FromPod(g.gateway, 9091), Reach::kConnected);
  ASSERT_EQ(FromPod(kResolver, 9091), Reach::kConnected);
  EXPECT_EQ(FromGuest(g.gateway, 9091), Reach::kTimedOut);
  EXPECT_EQ(FromGuest(kResolver, 9091), Reach::kTimedOut);
  EXPECT_EQ(FromGuest(g.gateway, 53), Reach::kTimedOut);
  upstream_->Set("api.example.com", Records({"api.example.com. 60 IN A 203.0.113.10"}));
  EXPECT_EQ(Resolve("api.example.com").rcode, LDNS_RCODE_NOERROR);  // UDP 53 is served
}

// Wraps the real pinner and, while the proxy is inside Pin(), looks at the
// guest's socket: an answer sent before pinning would already be there.
class WatchingPinner : public dns::Pinner {
 public:
  WatchingPinner(std::unique_ptr<dns::Pinner> real, int guest_socket)
      : real_(std::move(real)), guest_socket_(guest_socket) {}
  absl::Status Pin(const std::vector<dns::AddressPin>& pins) override {
    pollfd p{guest_socket_, POLLIN, 0};
    answer_before_pin_ = ::poll(&p, 1, 300) > 0;
    ++calls_;
    return real_->Pin(pins);
  }
  std::atomic<bool> answer_before_pin_{false};
  std::atomic<int> calls_{0};

 private:
  std::unique_ptr<dns::Pinner> real_;
  int guest_socket_;
};

TEST_F(DnsProxyTest, TheAnswerLeavesOnlyAfterThePin) {
  UniqueFd fd = GuestSocket();
  auto real = dns::NftPinner::Open(topo_.pod.get(), 1, "sbt0", {kPinnedPort});
  ASSERT_OK(real.status());
  auto watching = std::make_unique<WatchingPinner>(std::move(*real), fd.get());
  WatchingPinner* watch = watching.get();
  auto proxy = DnsProxy::Start(Config(), std::move(watching));
  ASSERT_OK(proxy.status());
  proxy_ = std::move(*proxy);
  upstream_->Set("api.example.com", Records({"api.example.com. 60 IN A 203.0.113.10"}));
  SendTo(fd.get(), dns::testing::MakeQuery("api.example.com", LDNS_RR_TYPE_A, 77));
  const Answer a = Receive(fd.get(), 77);
  EXPECT_EQ(a.addresses, std::vector<std::string>{kAllowedHost});
  EXPECT_EQ(watch->calls_.load(), 1);
  EXPECT_FALSE(watch->answer_before_pin_.load());
  // The address is reachable the moment the answer arrived.
  EXPECT_EQ(FromGuest(kAllowedHost, 443), Reach::kConnected);
}

TEST_F(DnsProxyTest, PinFailureAnswersServfailNeverAnUnpinnedAddress) {
  StartProxy(Config(), "sbt9");  // a tap with no pin sets: every pin fails
  upstream_->Set("api.example.com", Records({"api.example.com. 60 IN A 203.0.113.10"}));
  const Answer a = Resolve("api.example.com");
  EXPECT_EQ(a.rcode, LDNS_RCODE_SERVFAIL);
  EXPECT_TRUE(a.addresses.empty());
  const dns::ProxyMetrics m = proxy_->Metrics();
  EXPECT_EQ(m.pin_failures, 1u) << ToString(m);
  EXPECT_EQ(m.answered, 0u);
  ASSERT_EQ(FromPod(kAllowedHost, 443), Reach::kConnected);
  EXPECT_EQ(FromGuest(kAllowedHost, 443), Reach::kTimedOut);
}

TEST_F(DnsProxyTest, TruncatedUpstreamAnswerIsRetriedOverTcp) {
  StartProxy(Config());
  ScriptedAnswer big;
  big.udp.truncated = true;
  big.tcp = ResponseSpec{.answer = {"big.example.net. 60 IN A 203.0.113.10"}};
  upstream_->Set("big.example.net", big);
  const Answer a = Resolve("big.example.net");
  EXPECT_EQ(a.addresses, std::vector<std::string>{kAllowedHost});
  EXPECT_EQ(proxy_->Metrics().tcp_fallbacks, 1u);
  EXPECT_EQ(upstream_->QueriesFor("big.example.net"), 2);
  EXPECT_EQ(FromGuest(kAllowedHost, 443), Reach::kConnected);
}

TEST_F(DnsProxyTest, SilentUpstreamTimesOutAndOutstandingQueriesAreBounded) {
  ProxyConfig c = Config();
  c.upstream_timeout = std::chrono::milliseconds(300);
  c.max_outstanding = 2;
  StartProxy(c);
  for (const char* n : {"s1.example.net", "s2.example.net", "s3.example.net"}) {
    upstream_->Set(n, ScriptedAnswer{.silent = true});
  }
  UniqueFd fd = GuestSocket();
  SendTo(fd.get(), dns::testing::MakeQuery("s1.example.net", LDNS_RR_TYPE_A, 1));
  SendTo(fd.get(), dns::testing::MakeQuery("s2.example.net", LDNS_RR_TYPE_A, 2));
  SendTo(fd.get(), dns::testing::MakeQuery("s3.example.net", LDNS_RR_TYPE_A, 3));
  for (uint16_t id : {3, 1, 2}) EXPECT_EQ(Receive(fd.get(), id).rcode, LDNS_RCODE_SERVFAIL) << id;
  const dns::ProxyMetrics m = proxy_->Metrics();
  EXPECT_EQ(m.overloaded, 1u) << ToString(m);
  EXPECT_EQ(m.upstream_timeouts, 2u) << ToString(m);
  EXPECT_EQ(upstream_->QueriesFor("s3.example.net"), 0);
  // And the proxy still answers afterwards.
  upstream_->Set("api.example.com", Records({"api.example.com. 60 IN A 203.0.113.10"}));
  EXPECT_EQ(Resolve("api.example.com").addresses, std::vector<std::string>{kAllowedHost});
}

TEST_F(DnsProxyTest, MalformedFloodLeavesTheProxyAnswering) {
  StartProxy(Config());
  upstream_->Set("api.example.com", Records({"api.example.com. 60 IN A 203.0.113.10"}));
  UniqueFd fd = GuestSocket();
  std::mt19937 rng(1);
  const std::vector<uint8_t> query = dns::testing::MakeQuery("api.example.com", LDNS_RR_TYPE_A, 9);
  for (int i = 0; i < 3000; ++i) {
    std::vector<uint8_t> m;
    switch (i % 5) {
      case 0:  // random bytes
        m.resize(rng() % 600);
        for (auto& b : m) b = static_cast<uint8_t>(rng());
        break;
      case 1:  // a query cut short
        m.assign(query.begin(), query.begin() + static_cast<std::ptrdiff_t>(rng() % query.size()));
        break;
      case 2:  // a response instead of a query
        m = query;
        m[2] |= 0x80;
        break;
      case 3:  // claims two questions
        m = query;
        m[5] = 2;
        break;
      default:  // a label length pointing past the end
        m = query;
        m[12] = 0x3f;
    }
    SendTo(fd.get(), m);
  }
  const Answer a = Resolve("api.example.com", LDNS_RR_TYPE_A, /*attempts=*/5);
  EXPECT_EQ(a.addresses, std::vector<std::string>{kAllowedHost});
  const dns::ProxyMetrics m = proxy_->Metrics();
  EXPECT_GT(m.malformed_queries, 0u) << ToString(m);
  EXPECT_EQ(m.answered, 1u) << ToString(m);
}

}  // namespace
}  // namespace forkd::testing

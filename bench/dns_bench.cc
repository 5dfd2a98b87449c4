// DNS answer with pinning: one A query through the DnsProxy (allowlist,
// upstream, answer filter, a real nftables pin of the answer's address, then
// release) against the same query sent straight to the same upstream server,
// alternating in one run. Everything runs in a private network namespace on
// loopback: the upstream is a small ldns server on 127.0.0.1:5300, the proxy
// listens on 127.0.0.53:53, the pins go into a tap's sets installed there.
// Every query asks a new name whose answer is a new address, so every proxied
// query inserts new set elements (the realistic, slower case).
//
// Then what a proxy adds to forkd's fork path (forkd starts one per sandbox
// that names DNS names, between the chains and the restore): DnsProxy::Start
// with a fresh NftPinner (thread, setns, bind: serving when it returns)
// against the chains stage's own work, AddTap of a tap's policy, alternating.
//
// Usage (root): build/bench/dns_bench [rounds]
// RESULT dns_proxy_start start_p50_us=<n> addtap_p50_us=<n> ratio=<x>
// Last line: RESULT dns_pin added_p50_us=<n> direct_p50_us=<n>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "forkd/dns/dns_proxy.h"
#include "forkd/dns/ldns_ptr.h"
#include "netfilter/links.h"
#include "netfilter/netns.h"
#include "netfilter/nftables.h"

namespace {

using namespace forkd;
using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& what, const absl::Status& s) {
  (void)std::fprintf(stderr, "dns_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

sockaddr_in Loopback(const char* ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  ::inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

std::vector<uint8_t> Wire(const ldns_pkt* pkt) {
  auto wire = dns::ToWire(pkt);
  if (!wire.ok()) Die("encode a DNS message", wire.status());
  return *wire;
}

// The bench's own messages (ldns; test code is not linked into benches).
std::vector<uint8_t> MakeQuery(const std::string& name, uint16_t id) {
  ldns_rdf* owner = ldns_dname_new_frm_str(name.c_str());
  if (owner == nullptr) Die("query name " + name, absl::InvalidArgumentError("bad name"));
  dns::LdnsPkt pkt(ldns_pkt_query_new(owner, LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN, LDNS_RD));
  ldns_pkt_set_id(pkt.get(), id);
  return Wire(pkt.get());
}

// An answer to `query` (its id and question) carrying the record `rr`.
std::vector<uint8_t> MakeAnswer(const ldns_pkt* query, const std::string& rr) {
  dns::LdnsPkt pkt(ldns_pkt_new());
  ldns_pkt_set_id(pkt.get(), ldns_pkt_id(query));
  ldns_pkt_set_qr(pkt.get(), true);
  ldns_pkt_set_rd(pkt.get(), true);
  ldns_pkt_set_ra(pkt.get(), true);
  const ldns_rr_list* questions = ldns_pkt_question(query);
  for (size_t i = 0; i < ldns_rr_list_rr_count(questions); ++i) {
    ldns_pkt_push_rr(pkt.get(), LDNS_SECTION_QUESTION,
                     ldns_rr_clone(ldns_rr_list_rr(questions, i)));
  }
  ldns_rr* record = nullptr;
  if (ldns_rr_new_frm_str(&record, rr.c_str(), 0, nullptr, nullptr) != LDNS_STATUS_OK) {
    Die("answer record " + rr, absl::InvalidArgumentError("does not parse"));
  }
  ldns_pkt_push_rr(pkt.get(), LDNS_SECTION_ANSWER, record);
  return Wire(pkt.get());
}

// The upstream: answers every query for N.bench.example with the public address 45.<N>.
void ServeUpstream(int sock, int stop) {
  std::vector<uint8_t> buf(65535);
  for (;;) {
    pollfd p[2] = {{stop, POLLIN, 0}, {sock, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) continue;
    if (p[0].revents != 0) return;
    sockaddr_in from{};
    socklen_t len = sizeof(from);
    const ssize_t n =
        ::recvfrom(sock, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &len);
    if (n <= 0) continue;
    std::vector<uint8_t> query(buf.begin(), buf.begin() + n);
    auto pkt = dns::FromWire(query.data(), query.size());
    if (!pkt.ok()) continue;
    const ldns_rdf* owner = ldns_rr_owner(ldns_rr_list_rr(ldns_pkt_question(pkt->get()), 0));
    auto labels = dns::WireNameLabels(ldns_rdf_data(owner), ldns_rdf_size(owner));
    if (!labels.ok() || labels->empty()) continue;
    const int i = std::atoi((*labels)[0].c_str());
    const std::string rr = (*labels)[0] + ".bench.example. 60 IN A 45." +
                           std::to_string((i >> 16) & 255) + "." + std::to_string((i >> 8) & 255) +
                           "." + std::to_string(i & 255);
    const auto answer = MakeAnswer(pkt->get(), rr);
    (void)::sendto(sock, answer.data(), answer.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
  }
}

// One query round trip from `client` to `server`, in microseconds.
double Ask(int client, const sockaddr_in& server, int i, uint16_t id) {
  const auto query = MakeQuery(std::to_string(i) + ".bench.example", id);
  std::vector<uint8_t> buf(4096);
  const auto start = Clock::now();
  if (::sendto(client, query.data(), query.size(), 0, reinterpret_cast<const sockaddr*>(&server),
               sizeof(server)) < 0) {
    Die("sendto", absl::InternalError(std::strerror(errno)));
  }
  for (;;) {
    pollfd p{client, POLLIN, 0};
    if (::poll(&p, 1, 2000) <= 0)
      Die("query " + std::to_string(i), absl::DeadlineExceededError("no answer"));
    const ssize_t n = ::recv(client, buf.data(), buf.size(), 0);
    if (n >= 2 && ((buf[0] << 8) | buf[1]) == id) {
      // A released answer must carry the address; SERVFAIL would be a bug.
      if ((buf[3] & 0x0f) != 0) Die("query " + std::to_string(i), absl::InternalError("rcode"));
      break;
    }
  }
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

double P50(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (geteuid() != 0) {
    (void)std::fprintf(stderr, "SKIP: dns_bench needs root (network namespace, nftables)\n");
    return 77;
  }
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 2000;

  auto ns = netfilter::CreateNetns();
  if (!ns.ok()) Die("create netns", ns.status());
  // This thread stays in the namespace for the whole run (sockets, upstream).
  auto guard = netfilter::NetnsGuard::Enter(ns->get());
  if (!guard.ok()) Die("enter netns", guard.status());
  auto rt = netfilter::RtNetlink::Open(-1);
  if (!rt.ok()) Die("rtnetlink", rt.status());
  if (auto s = rt->SetUp("lo"); !s.ok()) Die("lo up", s);

  auto nft = netfilter::Nftables::Open(-1);
  if (!nft.ok()) Die("nftables", nft.status());
  if (auto s = nft->EnsureSkeleton({}); !s.ok()) Die("skeleton", s);
  netfilter::TapPolicy policy;
  policy.tap = "sbt0";
  policy.guest_v4 = netfilter::IpAddress::V4(10, 200, 0, 2);
  policy.resolvers = {netfilter::IpAddress::V4(127, 0, 0, 53)};
  policy.pins.max_elements = 65536;
  if (auto s = nft->AddTap(policy); !s.ok()) Die("add tap", s);

  forkd::UniqueFd upstream(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  const sockaddr_in upstream_addr = Loopback("127.0.0.1", 5300);
  if (::bind(upstream.get(), reinterpret_cast<const sockaddr*>(&upstream_addr),
             sizeof(upstream_addr)) != 0) {
    Die("bind upstream", absl::InternalError(std::strerror(errno)));
  }
  forkd::UniqueFd stop(::eventfd(0, EFD_CLOEXEC));
  std::thread server(ServeUpstream, upstream.get(), stop.get());

  dns::ProxyConfig config;
  config.netns_fd = ns->get();
  config.listen_address = netfilter::IpAddress::V4(127, 0, 0, 53);
  config.upstream_address = netfilter::IpAddress::V4(127, 0, 0, 1);
  config.upstream_port = 5300;
  config.allowlist = {"*.bench.example"};
  auto pinner = dns::NftPinner::Open(ns->get(), 1, "sbt0", {443});
  if (!pinner.ok()) Die("pinner", pinner.status());
  auto proxy = dns::DnsProxy::Start(config, std::move(*pinner));
  if (!proxy.ok()) Die("start proxy", proxy.status());

  forkd::UniqueFd client(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  const sockaddr_in proxy_addr = Loopback("127.0.0.53", 53);
  std::vector<double> direct, proxied;
  uint16_t id = 1;
  // Warm-up (both paths), not measured.
  for (int i = 0; i < 50; ++i) {
    Ask(client.get(), upstream_addr, 100000 + i, id++);
    Ask(client.get(), proxy_addr, 200000 + i, id++);
  }
  for (int i = 0; i < rounds; ++i) {
    direct.push_back(Ask(client.get(), upstream_addr, i, id++));
    proxied.push_back(Ask(client.get(), proxy_addr, i, id++));
  }
  const dns::ProxyMetrics m = (*proxy)->Metrics();
  if (auto s = (*proxy)->Stop(); !s.ok()) Die("proxy loop", s);
  const uint64_t one = 1;
  if (::write(stop.get(), &one, sizeof(one)) != sizeof(one)) std::abort();
  server.join();
  if (m.pins < static_cast<uint64_t>(rounds)) {
    Die("metrics", absl::InternalError("fewer pins than answers: " + dns::ToString(m)));
  }

  // Fork-path cost: proxy start against AddTap, alternating.
  const int start_rounds = std::max(20, rounds / 10);
  std::vector<double> starts, addtaps;
  netfilter::TapPolicy other = policy;
  other.tap = "sbt1";
  other.guest_v4 = netfilter::IpAddress::V4(10, 200, 0, 6);
  other.resolvers = {netfilter::IpAddress::V4(127, 0, 0, 54)};
  dns::ProxyConfig other_config = config;
  other_config.listen_address = netfilter::IpAddress::V4(127, 0, 0, 54);
  for (int i = 0; i < start_rounds; ++i) {
    auto t0 = Clock::now();
    if (auto s = nft->AddTap(other); !s.ok()) Die("add tap sbt1", s);
    addtaps.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    t0 = Clock::now();
    auto other_pinner = dns::NftPinner::Open(ns->get(), 1, "sbt1", {443, 80});
    if (!other_pinner.ok()) Die("pinner sbt1", other_pinner.status());
    auto started = dns::DnsProxy::Start(other_config, std::move(*other_pinner));
    if (!started.ok()) Die("start proxy sbt1", started.status());
    starts.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    if (auto s = (*started)->Stop(); !s.ok()) Die("stop proxy sbt1", s);
    if (auto s = nft->RemoveTap("sbt1"); !s.ok()) Die("remove tap sbt1", s);
  }
  const double st = P50(starts);
  const double at = P50(addtaps);
  std::printf(
      "proxy start (fresh pinner, thread, setns, bind) p50 %.0f us, AddTap p50 %.0f us, "
      "%d alternating rounds\n",
      st, at, start_rounds);
  std::printf("RESULT dns_proxy_start start_p50_us=%.0f addtap_p50_us=%.0f ratio=%.2f\n", st, at,
              st / at);

  const double d = P50(direct);
  const double p = P50(proxied);
  std::printf("rounds=%d (alternating), every proxied answer pinned a new address (pins=%llu)\n",
              rounds, static_cast<unsigned long long>(m.pins));
  std::printf("direct p50 %.0f us, through the proxy with pinning p50 %.0f us (%.2fx)\n", d, p,
              p / d);
  std::printf("target added p50 < 200 us: %s\n", p - d < 200 ? "met" : "NOT met");
  std::printf("RESULT dns_pin added_p50_us=%.0f direct_p50_us=%.0f\n", p - d, d);
  return 0;
}

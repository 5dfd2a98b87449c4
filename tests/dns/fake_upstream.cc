#include "tests/dns/fake_upstream.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "common/errno_status.h"
#include "forkd/dns/ldns_ptr.h"
#include "forkd/dns/name_allowlist.h"
#include "tests/netfilter/netns_sockets.h"

namespace forkd::testing {
namespace {

std::string NameOf(const ldns_pkt* pkt) {
  const ldns_rr_list* q = ldns_pkt_question(pkt);
  if (q == nullptr || ldns_rr_list_rr_count(q) != 1) return "";
  const ldns_rdf* owner = ldns_rr_owner(ldns_rr_list_rr(q, 0));
  auto labels = dns::WireNameLabels(ldns_rdf_data(owner), ldns_rdf_size(owner));
  if (!labels.ok()) return "";
  std::string name;
  for (const std::string& l : *labels) name += (name.empty() ? "" : ".") + l;
  return name;
}

bool ReadFull(int fd, uint8_t* out, size_t n) {
  size_t done = 0;
  while (done < n) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 2000) <= 0) return false;
    const ssize_t r = ::recv(fd, out + done, n - done, 0);
    if (r <= 0) return false;
    done += static_cast<size_t>(r);
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<FakeUpstream>> FakeUpstream::Start(int netns,
                                                                  const std::string& address,
                                                                  uint16_t port) {
  std::unique_ptr<FakeUpstream> s(new FakeUpstream());
  FORKD_ASSIGN_OR_RETURN(s->udp_, UdpBind(netns, address, port));
  FORKD_ASSIGN_OR_RETURN(s->tcp_, TcpListen(netns, address, port));
  s->stop_.reset(::eventfd(0, EFD_CLOEXEC));
  if (!s->stop_) return absl::InternalError("eventfd");
  s->thread_ = std::thread([p = s.get()] { p->Serve(); });
  return s;
}

FakeUpstream::~FakeUpstream() {
  const uint64_t one = 1;
  if (::write(stop_.get(), &one, sizeof(one)) != sizeof(one)) std::abort();
  thread_.join();
}

void FakeUpstream::Set(const std::string& name, ScriptedAnswer answer) {
  std::lock_guard<std::mutex> lock(mu_);
  answers_[name] = std::move(answer);
}

int FakeUpstream::QueriesFor(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = counts_.find(name);
  return it == counts_.end() ? 0 : it->second;
}

void FakeUpstream::Serve() {
  for (;;) {
    pollfd p[3] = {{stop_.get(), POLLIN, 0}, {udp_.get(), POLLIN, 0}, {tcp_.get(), POLLIN, 0}};
    if (::poll(p, 3, -1) < 0) continue;
    if (p[0].revents != 0) return;
    if (p[1].revents != 0) AnswerUdp();
    if (p[2].revents != 0) AnswerTcp();
  }
}

std::optional<std::vector<uint8_t>> FakeUpstream::Respond(const std::vector<uint8_t>& query,
                                                          bool tcp) {
  auto pkt = dns::FromWire(query.data(), query.size());
  if (!pkt.ok()) return std::nullopt;
  const std::string name = NameOf(pkt->get());
  ScriptedAnswer answer;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++counts_[name];
    auto it = answers_.find(name);
    if (it == answers_.end()) {
      answer.udp.rcode = LDNS_RCODE_NXDOMAIN;
    } else {
      answer = it->second;
    }
  }
  if (answer.silent) return std::nullopt;
  return dns::testing::MakeResponse(query, tcp && answer.tcp ? *answer.tcp : answer.udp);
}

void FakeUpstream::AnswerUdp() {
  std::vector<uint8_t> buf(65535);
  sockaddr_storage from{};
  socklen_t len = sizeof(from);
  const ssize_t n = ::recvfrom(udp_.get(), buf.data(), buf.size(), MSG_DONTWAIT,
                               reinterpret_cast<sockaddr*>(&from), &len);
  if (n <= 0) return;
  buf.resize(static_cast<size_t>(n));
  auto response = Respond(buf, false);
  if (!response) return;
  (void)::sendto(udp_.get(), response->data(), response->size(), 0,
                 reinterpret_cast<sockaddr*>(&from), len);
}

void FakeUpstream::AnswerTcp() {
  UniqueFd conn(::accept4(tcp_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!conn) return;
  uint8_t prefix[2];
  if (!ReadFull(conn.get(), prefix, 2)) return;
  std::vector<uint8_t> query((size_t{prefix[0]} << 8) | prefix[1]);
  if (!ReadFull(conn.get(), query.data(), query.size())) return;
  auto response = Respond(query, true);
  if (!response) return;
  std::vector<uint8_t> out = {static_cast<uint8_t>(response->size() >> 8),
                              static_cast<uint8_t>(response->size() & 0xff)};
  out.insert(out.end(), response->begin(), response->end());
  (void)::send(conn.get(), out.data(), out.size(), MSG_NOSIGNAL);
}

}  // namespace forkd::testing

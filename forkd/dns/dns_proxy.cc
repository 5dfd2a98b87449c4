#include "forkd/dns/dns_proxy.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <future>
#include <optional>
#include <vector>

#include "common/errno_status.h"
#include "forkd/dns/name_allowlist.h"
#include "forkd/dns/query.h"
#include "forkd/dns/socket_address.h"
#include "forkd/dns/upstream.h"
#include "netfilter/netns.h"

namespace forkd::dns {
namespace {

using Clock = std::chrono::steady_clock;

// Guest datagrams read per wake-up before upstream events get their turn, so
// a flooding guest cannot starve its own answers.
constexpr int kGuestBatch = 64;
constexpr size_t kMaxDatagram = 65535;

absl::StatusOr<uint16_t> RandomId() {
  uint16_t id = 0;
  if (::getrandom(&id, sizeof(id), 0) != sizeof(id)) return ErrnoStatus(errno, "getrandom");
  return id;
}

}  // namespace

class DnsProxy::Loop {
 public:
  Loop(DnsProxy* owner, const ProxyConfig& config, NameAllowlist allowlist,
       std::unique_ptr<Pinner> pinner, int stop_fd)
      : owner_(owner),
        config_(config),
        allowlist_(std::move(allowlist)),
        pinner_(std::move(pinner)),
        upstream_(SocketAddress::From(config.upstream_address, config.upstream_port)),
        stop_fd_(stop_fd) {}

  // Runs on the proxy's thread, already inside the sandbox's namespace.
  absl::Status Setup() {
    const SocketAddress listen = SocketAddress::From(config_.listen_address, config_.listen_port);
    listen_.reset(::socket(listen.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!listen_) return ErrnoStatus(errno, "dns proxy socket");
    if (::bind(listen_.get(), listen.get(), listen.length) != 0) {
      return ErrnoStatus(errno, "bind dns proxy to " + config_.listen_address.ToString() + ":" +
                                    std::to_string(config_.listen_port));
    }
    epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_) return ErrnoStatus(errno, "epoll_create1");
    FORKD_RETURN_IF_ERROR(Watch(listen_.get(), EPOLLIN, &listen_));
    return Watch(stop_fd_, EPOLLIN, &stop_fd_);
  }

  absl::Status Run() {
    std::vector<epoll_event> events(kGuestBatch);
    for (;;) {
      const int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()),
                                 NextTimeoutMs());
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, "dns proxy epoll_wait");
      }
      for (int i = 0; i < n; ++i) {
        void* tag = events[i].data.ptr;
        if (tag == &stop_fd_) return absl::OkStatus();
        if (tag == &listen_) {
          FORKD_RETURN_IF_ERROR(DrainGuest());
        } else {
          FORKD_RETURN_IF_ERROR(OnUpstream(static_cast<Pending*>(tag)));
        }
      }
      FORKD_RETURN_IF_ERROR(ExpireTimeouts());
    }
  }

 private:
  struct Pending {
    GuestQuery query;
    SocketAddress guest;
    uint16_t upstream_id = 0;
    std::optional<UpstreamExchange> upstream;
    Clock::time_point deadline;
  };

  absl::Status Watch(int fd, uint32_t events, void* tag, int op = EPOLL_CTL_ADD) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = tag;
    if (::epoll_ctl(epoll_.get(), op, fd, &ev) != 0) return ErrnoStatus(errno, "epoll_ctl");
    return absl::OkStatus();
  }

  template <typename F>
  void Count(F&& f) {
    std::lock_guard<std::mutex> lock(owner_->mu_);
    f(owner_->metrics_);
  }
  void CountError(uint64_t ProxyMetrics::*counter, const absl::Status& why) {
    Count([&](ProxyMetrics& m) {
      ++(m.*counter);
      m.last_error = std::string(why.message());
    });
  }

  int NextTimeoutMs() const {
    if (pending_.empty()) return -1;
    Clock::time_point first = Clock::time_point::max();
    for (const auto& p : pending_) first = std::min(first, p->deadline);
    const auto wait = std::chrono::ceil<std::chrono::milliseconds>(first - Clock::now());
    return static_cast<int>(std::max<int64_t>(0, wait.count()));
  }

  absl::Status DrainGuest() {
    std::vector<uint8_t> buffer(kMaxDatagram);
    for (int i = 0; i < kGuestBatch; ++i) {
      SocketAddress from;
      from.length = sizeof(from.storage);
      const ssize_t n = ::recvfrom(listen_.get(), buffer.data(), buffer.size(), 0,
                                   reinterpret_cast<sockaddr*>(&from.storage), &from.length);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return absl::OkStatus();
        // An ICMP error queued on the socket (a guest that went away) is not
        // the proxy's failure: count it and keep serving.
        if (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH) {
          CountError(&ProxyMetrics::send_errors, ErrnoStatus(errno, "dns proxy socket"));
          continue;
        }
        return ErrnoStatus(errno, "dns proxy recvfrom");
      }
      OnGuestDatagram(std::span<const uint8_t>(buffer.data(), static_cast<size_t>(n)), from);
    }
    return absl::OkStatus();
  }

  void OnGuestDatagram(std::span<const uint8_t> datagram, const SocketAddress& from) {
    Count([](ProxyMetrics& m) { ++m.queries; });
    auto query = ParseQuery(datagram);
    if (!query.ok()) {
      CountError(&ProxyMetrics::malformed_queries, query.status());
      return;
    }
    if (!ShouldForward(*query, allowlist_)) {
      Count([](ProxyMetrics& m) { ++m.refused; });
      SendError(*query, from, LDNS_RCODE_REFUSED);
      return;
    }
    if (pending_.size() >= config_.max_outstanding) {
      Count([](ProxyMetrics& m) { ++m.overloaded; });
      SendError(*query, from, LDNS_RCODE_SERVFAIL);
      return;
    }
    auto pending = std::make_unique<Pending>();
    pending->guest = from;
    pending->deadline = Clock::now() + config_.upstream_timeout;
    absl::Status started = StartUpstream(*query, *pending);
    pending->query = std::move(*query);
    if (!started.ok()) {
      CountError(&ProxyMetrics::upstream_errors, started);
      SendError(pending->query, from, LDNS_RCODE_SERVFAIL);
      return;
    }
    Count([](ProxyMetrics& m) { ++m.forwarded; });
    pending_.push_back(std::move(pending));
  }

  absl::Status StartUpstream(const GuestQuery& query, Pending& p) {
    FORKD_ASSIGN_OR_RETURN(p.upstream_id, RandomId());
    FORKD_ASSIGN_OR_RETURN(std::vector<uint8_t> wire, BuildUpstreamQuery(query, p.upstream_id));
    FORKD_ASSIGN_OR_RETURN(UpstreamExchange exchange, UpstreamExchange::StartUdp(upstream_, wire));
    p.upstream.emplace(std::move(exchange));
    return Watch(p.upstream->fd(), p.upstream->events(), &p);
  }

  absl::Status OnUpstream(Pending* p) {
    const uint32_t before = p->upstream->events();
    auto message = p->upstream->OnReady();
    if (!message.ok()) {
      CountError(&ProxyMetrics::upstream_errors, message.status());
      return Finish(p, std::nullopt);
    }
    if (!message->has_value()) {
      if (p->upstream->events() != before) {
        return Watch(p->upstream->fd(), p->upstream->events(), p, EPOLL_CTL_MOD);
      }
      return absl::OkStatus();
    }
    auto filtered = FilterAnswer(p->query, p->upstream_id, **message, config_.limits);
    if (!filtered.ok()) {
      if (filtered.status().code() == absl::StatusCode::kInvalidArgument) {
        CountError(&ProxyMetrics::malformed_answers, filtered.status());
        // Over UDP anyone can send garbage to the port: keep waiting for the
        // real answer. A TCP stream that carries garbage is a failed exchange.
        if (!p->upstream->tcp()) return absl::OkStatus();
      } else {
        CountError(&ProxyMetrics::upstream_errors, filtered.status());
      }
      return Finish(p, std::nullopt);
    }
    switch (filtered->kind) {
      case FilteredAnswer::Kind::kTruncated: {
        if (p->upstream->tcp()) {
          CountError(&ProxyMetrics::upstream_errors,
                     absl::DataLossError("upstream answer truncated over TCP"));
          return Finish(p, std::nullopt);
        }
        Count([](ProxyMetrics& m) { ++m.tcp_fallbacks; });
        if (absl::Status s = p->upstream->SwitchToTcp(); !s.ok()) {
          CountError(&ProxyMetrics::upstream_errors, s);
          return Finish(p, std::nullopt);
        }
        return Watch(p->upstream->fd(), p->upstream->events(), p);
      }
      case FilteredAnswer::Kind::kUpstreamError:
        CountError(&ProxyMetrics::upstream_errors,
                   absl::UnavailableError(std::string("upstream answered rcode ") +
                                          std::to_string(filtered->upstream_rcode)));
        return Finish(p, std::nullopt);
      case FilteredAnswer::Kind::kAnswer:
        break;
    }
    Count([&](ProxyMetrics& m) {
      const StripCounts& s = filtered->stripped;
      for (int i = 0; i < kAddressClassCount; ++i) m.stripped_by_class[i] += s.by_class[i];
      m.stripped_off_chain += s.off_chain;
      m.stripped_other_sections += s.other_sections;
      m.stripped_too_large += s.too_large;
    });
    // Pin first: the guest must never hold an address the datapath would drop
    // (or, worse, one it could reach only by a pin it never got).
    if (!filtered->pins.empty()) {
      if (absl::Status pinned = pinner_->Pin(filtered->pins); !pinned.ok()) {
        CountError(&ProxyMetrics::pin_failures, pinned);
        return Finish(p, std::nullopt);
      }
      Count([&](ProxyMetrics& m) { m.pins += filtered->pins.size(); });
    }
    Count([](ProxyMetrics& m) { ++m.answered; });
    return Finish(p, std::move(filtered->wire));
  }

  // Sends `answer` (or SERVFAIL when there is none) and forgets the query.
  absl::Status Finish(Pending* p, std::optional<std::vector<uint8_t>> answer) {
    if (answer) {
      Send(p->guest, *answer);
    } else {
      SendError(p->query, p->guest, LDNS_RCODE_SERVFAIL);
    }
    auto it = std::find_if(pending_.begin(), pending_.end(),
                           [&](const std::unique_ptr<Pending>& q) { return q.get() == p; });
    if (it == pending_.end()) return absl::InternalError("dns proxy lost track of a query");
    pending_.erase(it);  // closes the upstream socket, which leaves the epoll set
    return absl::OkStatus();
  }

  absl::Status ExpireTimeouts() {
    const Clock::time_point now = Clock::now();
    std::vector<Pending*> expired;
    for (const auto& p : pending_) {
      if (p->deadline <= now) expired.push_back(p.get());
    }
    for (Pending* p : expired) {
      CountError(&ProxyMetrics::upstream_timeouts,
                 absl::DeadlineExceededError("upstream did not answer in time"));
      FORKD_RETURN_IF_ERROR(Finish(p, std::nullopt));
    }
    return absl::OkStatus();
  }

  void SendError(const GuestQuery& query, const SocketAddress& to, ldns_pkt_rcode rcode) {
    if (rcode == LDNS_RCODE_SERVFAIL) Count([](ProxyMetrics& m) { ++m.servfail; });
    auto wire = BuildErrorAnswer(query, rcode);
    if (!wire.ok()) {
      CountError(&ProxyMetrics::send_errors, wire.status());
      return;
    }
    Send(to, *wire);
  }

  void Send(const SocketAddress& to, const std::vector<uint8_t>& wire) {
    const ssize_t n = ::sendto(listen_.get(), wire.data(), wire.size(), 0, to.get(), to.length);
    if (n != static_cast<ssize_t>(wire.size())) {
      CountError(&ProxyMetrics::send_errors, ErrnoStatus(errno, "send answer to the guest"));
    }
  }

  DnsProxy* owner_;
  ProxyConfig config_;
  NameAllowlist allowlist_;
  std::unique_ptr<Pinner> pinner_;
  SocketAddress upstream_;
  int stop_fd_;
  UniqueFd listen_;
  UniqueFd epoll_;
  std::vector<std::unique_ptr<Pending>> pending_;
};

absl::StatusOr<std::unique_ptr<DnsProxy>> DnsProxy::Start(const ProxyConfig& config,
                                                          std::unique_ptr<Pinner> pinner) {
  FORKD_RETURN_IF_ERROR(Validate(config));
  if (!pinner) return absl::InvalidArgumentError("dns proxy: no pinner");
  FORKD_ASSIGN_OR_RETURN(NameAllowlist allowlist, NameAllowlist::Create(config.allowlist));
  std::unique_ptr<DnsProxy> proxy(new DnsProxy());
  proxy->stop_event_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!proxy->stop_event_) return ErrnoStatus(errno, "eventfd");
  proxy->loop_ = std::make_unique<Loop>(proxy.get(), config, std::move(allowlist),
                                        std::move(pinner), proxy->stop_event_.get());
  std::promise<absl::Status> ready;
  std::future<absl::Status> started = ready.get_future();
  DnsProxy* self = proxy.get();
  const int netns = config.netns_fd;
  // The thread owns the promise, so the shared state outlives set_value even
  // when Start() has already returned.
  proxy->thread_ = std::thread([self, netns, ready = std::move(ready)]() mutable {
    // The whole thread lives in the sandbox's namespace; the guard returns it
    // before the thread ends.
    auto guard = netfilter::NetnsGuard::Enter(netns);
    if (!guard.ok()) {
      ready.set_value(Annotate(guard.status(), "dns proxy"));
      return;
    }
    absl::Status setup = self->loop_->Setup();
    const bool ok = setup.ok();
    ready.set_value(std::move(setup));
    if (!ok) return;
    absl::Status ended = self->loop_->Run();
    std::lock_guard<std::mutex> lock(self->mu_);
    self->loop_status_ = std::move(ended);
  });
  absl::Status setup = started.get();
  if (!setup.ok()) {
    proxy->thread_.join();
    return setup;
  }
  return proxy;
}

DnsProxy::~DnsProxy() { (void)Stop(); }

absl::Status DnsProxy::Stop() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    if (::write(stop_event_.get(), &one, sizeof(one)) != sizeof(one)) {
      // Without the wake-up the thread would never end; there is no safe way on.
      return ErrnoStatus(errno, "wake the dns proxy thread to stop");
    }
    thread_.join();
    loop_.reset();
  }
  std::lock_guard<std::mutex> lock(mu_);
  return loop_status_;
}

ProxyMetrics DnsProxy::Metrics() const {
  std::lock_guard<std::mutex> lock(mu_);
  return metrics_;
}

}  // namespace forkd::dns

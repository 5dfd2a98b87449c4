#include "netfilter/nft_batch.h"

#include <libnftnl/common.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "common/errno_status.h"
#include "netfilter/netns.h"

namespace forkd::netfilter {
namespace {

// Holds a typical per-tap batch without growing.
constexpr size_t kInitialBatch = 64 * 1024;
constexpr size_t kReceiveBuffer = 64 * 1024;
// Socket buffers large enough for a batch of thousands of messages and the
// error answers to all of them.
constexpr int kSocketBuffer = 8 * 1024 * 1024;

}  // namespace

Batch::Batch(uint32_t first_seq, Storage storage)
    : s_(std::move(storage)), first_seq_(first_seq), seq_(first_seq) {
  s_.what.clear();
  s_.what_end.clear();
  Reserve(kInitialBatch);
  nlmsghdr* nlh = nftnl_batch_begin(s_.buf.get(), seq_++);
  used_ = NLMSG_ALIGN(nlh->nlmsg_len);
}

void Batch::Reserve(size_t bytes) {
  if (s_.capacity >= bytes) return;
  const size_t capacity = std::max(bytes, 2 * s_.capacity);
  auto grown = std::make_unique_for_overwrite<char[]>(capacity);
  if (used_ > 0) std::memcpy(grown.get(), s_.buf.get(), used_);
  s_.buf = std::move(grown);
  s_.capacity = capacity;
}

nlmsghdr* Batch::Begin(uint16_t type, uint16_t flags,
                       std::initializer_list<std::string_view> what) {
  // No zeroing needed: libmnl clears each header and every attribute's padding.
  Reserve(used_ + kMaxMessage);
  for (std::string_view part : what) s_.what.append(part);
  s_.what_end.push_back(static_cast<uint32_t>(s_.what.size()));
  return nftnl_nlmsg_build_hdr(s_.buf.get() + used_, type, NFPROTO_INET, flags, seq_++);
}

std::string_view Batch::What(size_t index) const {
  const uint32_t begin = index == 0 ? 0 : s_.what_end[index - 1];
  return std::string_view(s_.what).substr(begin, s_.what_end[index] - begin);
}

void Batch::Commit(const nlmsghdr* nlh) {
  if (nlh->nlmsg_len > kMaxMessage) {
    const std::string what(What(s_.what_end.size() - 1));
    (void)std::fprintf(stderr, "forkd: netlink message \"%s\" is %u bytes, over the %zu reserved\n",
                       what.c_str(), nlh->nlmsg_len, kMaxMessage);
    std::abort();
  }
  used_ += NLMSG_ALIGN(nlh->nlmsg_len);
}

std::span<const char> Batch::Finish() {
  if (!finished_) {
    Reserve(used_ + kMaxMessage);
    nlmsghdr* nlh = nftnl_batch_end(s_.buf.get() + used_, seq_++);
    used_ += NLMSG_ALIGN(nlh->nlmsg_len);
    finished_ = true;
  }
  return {s_.buf.get(), used_};
}

const std::string* Batch::Describe(uint32_t seq) const {
  if (seq <= first_seq_ || seq - first_seq_ - 1 >= s_.what_end.size()) return nullptr;
  described_ = What(seq - first_seq_ - 1);
  return &described_;
}

NetlinkSocket::NetlinkSocket(mnl_socket* s)
    : sock_(s),
      rx_(std::make_unique_for_overwrite<char[]>(kReceiveBuffer)),
      portid_(mnl_socket_get_portid(s)) {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  seq_ = static_cast<uint32_t>(ts.tv_nsec);
}

NetlinkSocket::NetlinkSocket(NetlinkSocket&& o) noexcept
    : sock_(std::exchange(o.sock_, nullptr)),
      rx_(std::move(o.rx_)),
      portid_(o.portid_),
      seq_(o.seq_) {}

NetlinkSocket& NetlinkSocket::operator=(NetlinkSocket&& o) noexcept {
  if (this != &o) {
    if (sock_ != nullptr) mnl_socket_close(sock_);
    sock_ = std::exchange(o.sock_, nullptr);
    rx_ = std::move(o.rx_);
    portid_ = o.portid_;
    seq_ = o.seq_;
  }
  return *this;
}

NetlinkSocket::~NetlinkSocket() {
  if (sock_ != nullptr) mnl_socket_close(sock_);
}

absl::StatusOr<NetlinkSocket> NetlinkSocket::Open(int netns_fd) {
  FORKD_ASSIGN_OR_RETURN(NetnsGuard guard, NetnsGuard::Enter(netns_fd));
  mnl_socket* s = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
  if (s == nullptr) return ErrnoStatus(errno, "open NETLINK_NETFILTER socket");
  NetlinkSocket sock(s);
  if (mnl_socket_bind(s, 0, MNL_SOCKET_AUTOPID) < 0) {
    return ErrnoStatus(errno, "bind NETLINK_NETFILTER socket");
  }
  const int fd = mnl_socket_get_fd(s);
  // FORCE variants need CAP_NET_ADMIN (which nftables needs anyway); fall back
  // to the sysctl-capped variants otherwise.
  for (auto [force, plain] : {std::pair{SO_SNDBUFFORCE, SO_SNDBUF}, {SO_RCVBUFFORCE, SO_RCVBUF}}) {
    if (::setsockopt(fd, SOL_SOCKET, force, &kSocketBuffer, sizeof(kSocketBuffer)) != 0 &&
        ::setsockopt(fd, SOL_SOCKET, plain, &kSocketBuffer, sizeof(kSocketBuffer)) != 0) {
      return ErrnoStatus(errno, "size NETLINK_NETFILTER socket buffers");
    }
  }
  // Ask the kernel for extended acks so errors come with its own explanation.
  const int one = 1;
  (void)::setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
  return sock;
}

uint32_t NetlinkSocket::NextSeq(uint32_t count) {
  const uint32_t first = seq_;
  seq_ += count;
  return first;
}

absl::Status NetlinkSocket::Send(Batch& batch, const std::string& context) {
  const std::span<const char> bytes = batch.Finish();
  if (mnl_socket_sendto(sock_, bytes.data(), bytes.size()) < 0) {
    return ErrnoStatus(errno, context + ": send batch");
  }
  // The kernel processes a netfilter batch synchronously inside sendmsg(), so
  // every error answer is queued by now; only errors are answered (no
  // NLM_F_ACK), so an empty queue means the whole batch committed.
  const int fd = mnl_socket_get_fd(sock_);
  uint32_t first_bad_seq = 0;
  int first_bad_err = 0;
  for (;;) {
    const ssize_t n = ::recv(fd, rx_.get(), kReceiveBuffer, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, context + ": read batch answers");
    }
    auto* nlh = reinterpret_cast<const nlmsghdr*>(rx_.get());
    int len = static_cast<int>(n);
    for (; mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) {
      if (nlh->nlmsg_type != NLMSG_ERROR) continue;
      const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
      if (err->error == 0) continue;
      if (first_bad_err == 0 || nlh->nlmsg_seq < first_bad_seq) {
        first_bad_seq = nlh->nlmsg_seq;
        first_bad_err = -err->error;
      }
    }
  }
  if (first_bad_err == 0) return absl::OkStatus();
  const std::string* what = batch.Describe(first_bad_seq);
  return ErrnoStatus(first_bad_err, context + ": " + (what ? *what : "batch"));
}

absl::Status NetlinkSocket::Dump(const nlmsghdr* request, mnl_cb_t cb, void* data,
                                 const std::string& context) {
  if (mnl_socket_sendto(sock_, request, request->nlmsg_len) < 0) {
    return ErrnoStatus(errno, context + ": send dump request");
  }
  for (;;) {
    const ssize_t n = mnl_socket_recvfrom(sock_, rx_.get(), kReceiveBuffer);
    if (n < 0) return ErrnoStatus(errno, context + ": read dump");
    const int ret = mnl_cb_run(rx_.get(), n, request->nlmsg_seq, portid_, cb, data);
    if (ret < 0) return ErrnoStatus(errno, context);
    if (ret == MNL_CB_STOP) return absl::OkStatus();
  }
}

}  // namespace forkd::netfilter

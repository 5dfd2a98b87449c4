#include "agent/netlink.h"

#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"

namespace forkd::agent {
namespace {

// NLMSG_OK without the macro's int/__u32 comparison (clang's -Wsign-compare).
bool NetlinkMessageOk(const nlmsghdr* h, int len) {
  return len >= static_cast<int>(sizeof(nlmsghdr)) && h->nlmsg_len >= sizeof(nlmsghdr) &&
         h->nlmsg_len <= static_cast<unsigned>(len);
}

constexpr size_t kRecvBufBytes = 32 * 1024;
constexpr time_t kReplyTimeoutSec = 5;

}  // namespace

NetlinkMessage::NetlinkMessage(uint16_t type, uint16_t flags) {
  nlmsghdr h{};
  h.nlmsg_len = NLMSG_HDRLEN;
  h.nlmsg_type = type;
  h.nlmsg_flags = flags;
  buf_.resize(NLMSG_HDRLEN);
  memcpy(buf_.data(), &h, sizeof(h));
}

void* NetlinkMessage::Append(const void* data, size_t len) {
  const size_t offset = buf_.size();
  buf_.resize(offset + NLMSG_ALIGN(len), 0);
  if (len > 0) memcpy(buf_.data() + offset, data, len);
  header()->nlmsg_len = static_cast<uint32_t>(buf_.size());
  return buf_.data() + offset;
}

void NetlinkMessage::AddAttr(uint16_t type, const void* data, size_t len) {
  rtattr attr{};
  attr.rta_len = static_cast<unsigned short>(RTA_LENGTH(len));
  attr.rta_type = type;
  const size_t offset = buf_.size();
  buf_.resize(offset + RTA_SPACE(len), 0);
  memcpy(buf_.data() + offset, &attr, sizeof(attr));
  if (len > 0) memcpy(buf_.data() + offset + RTA_LENGTH(0), data, len);
  header()->nlmsg_len = static_cast<uint32_t>(buf_.size());
}

void NetlinkMessage::AddAttrString(uint16_t type, std::string_view s) {
  std::string z(s);
  AddAttr(type, z.c_str(), z.size() + 1);
}

size_t NetlinkMessage::BeginNested(uint16_t type) {
  const size_t offset = buf_.size();
  AddAttr(type | NLA_F_NESTED, nullptr, 0);
  return offset;
}

void NetlinkMessage::EndNested(size_t offset) {
  auto* attr = reinterpret_cast<rtattr*>(buf_.data() + offset);
  attr->rta_len = static_cast<unsigned short>(buf_.size() - offset);
}

absl::StatusOr<NetlinkSocket> NetlinkSocket::Open() {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd) return ErrnoStatus(errno, "socket AF_NETLINK NETLINK_ROUTE");
  // Ask for extended acks so errors carry the kernel's message where it has one;
  // failing to enable them only loses detail.
  const int one = 1;
  if (::setsockopt(fd.get(), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one)) != 0 &&
      errno != ENOPROTOOPT) {
    return ErrnoStatus(errno, "setsockopt NETLINK_EXT_ACK");
  }
  // The kernel answers at once; a bound on the wait keeps a kernel surprise
  // from wedging NotifyForked (which holds a lock) forever.
  const timeval timeout{.tv_sec = kReplyTimeoutSec, .tv_usec = 0};
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) != 0) {
    return ErrnoStatus(errno, "setsockopt SO_RCVTIMEO");
  }
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
    return ErrnoStatus(errno, "bind AF_NETLINK");
  }
  return NetlinkSocket(std::move(fd));
}

absl::Status NetlinkSocket::Send(NetlinkMessage& msg, uint32_t seq, std::string_view what) {
  msg.header()->nlmsg_seq = seq;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  const auto bytes = msg.bytes();
  const ssize_t n = ::sendto(fd_.get(), bytes.data(), bytes.size(), 0,
                             reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel));
  if (n < 0) return ErrnoStatus(errno, absl::StrCat(std::string(what), ": sendto netlink"));
  if (static_cast<size_t>(n) != bytes.size()) {
    return absl::InternalError(absl::StrCat(std::string(what), ": short netlink send"));
  }
  return absl::OkStatus();
}

absl::Status NetlinkSocket::Request(NetlinkMessage& msg, std::string_view what) {
  msg.header()->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
  return Dump(msg, what, nullptr);
}

absl::Status NetlinkSocket::Dump(NetlinkMessage& msg, std::string_view what,
                                 const std::function<void(const nlmsghdr&)>& each) {
  msg.header()->nlmsg_flags |= NLM_F_REQUEST;
  if (each) msg.header()->nlmsg_flags |= NLM_F_DUMP;
  const uint32_t seq = seq_++;
  FORKD_RETURN_IF_ERROR(Send(msg, seq, what));
  std::vector<char> buf(kRecvBufBytes);
  for (;;) {
    const ssize_t n = ::recv(fd_.get(), buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      // EAGAIN: SO_RCVTIMEO expired with no answer from the kernel.
      return ErrnoStatus(errno, absl::StrCat(std::string(what), ": recv netlink"));
    }
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NetlinkMessageOk(h, len);
         h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_seq != seq) continue;  // a stale reply to an earlier request
      if (h->nlmsg_type == NLMSG_DONE) return absl::OkStatus();
      if (h->nlmsg_type == NLMSG_ERROR) {
        const auto* err = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
        if (err->error == 0) return absl::OkStatus();  // the ack
        return ErrnoStatus(-err->error, what);
      }
      if (each) each(*h);
    }
  }
}

}  // namespace forkd::agent

// A minimal NETLINK_ROUTE client: just enough rtnetlink for the agent to
// re-address its NIC after a restore without shipping iproute2 or libnl in a
// static binary. Each request is sent with NLM_F_ACK and its ack is awaited, so
// every failure surfaces with the kernel's errno.
#pragma once

#include <linux/netlink.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace forkd::agent {

// Builds one netlink message: header, fixed family struct, then attributes.
class NetlinkMessage {
 public:
  NetlinkMessage(uint16_t type, uint16_t flags);

  // Appends the family header (ifinfomsg, ifaddrmsg, rtmsg, ...).
  template <typename T>
  T* AddHeader(const T& header) {
    return static_cast<T*>(Append(&header, sizeof(header)));
  }
  void AddAttr(uint16_t type, const void* data, size_t len);
  void AddAttrString(uint16_t type, std::string_view s);  // NUL-terminated
  template <typename T>
  void AddAttrValue(uint16_t type, const T& v) {
    AddAttr(type, &v, sizeof(v));
  }
  // Nested attributes: everything added between Begin and End goes inside.
  size_t BeginNested(uint16_t type);
  void EndNested(size_t offset);

  nlmsghdr* header() { return reinterpret_cast<nlmsghdr*>(buf_.data()); }
  std::string_view bytes() const { return {buf_.data(), buf_.size()}; }

 private:
  void* Append(const void* data, size_t len);
  std::vector<char> buf_;
};

class NetlinkSocket {
 public:
  // Opens NETLINK_ROUTE in the calling thread's network namespace.
  static absl::StatusOr<NetlinkSocket> Open();

  // Sends `msg` (NLM_F_REQUEST|NLM_F_ACK are added) and waits for the ack.
  absl::Status Request(NetlinkMessage& msg, std::string_view what);

  // Sends a dump request and calls `each` for every message of the reply.
  absl::Status Dump(NetlinkMessage& msg, std::string_view what,
                    const std::function<void(const nlmsghdr&)>& each);

 private:
  explicit NetlinkSocket(UniqueFd fd) : fd_(std::move(fd)) {}
  absl::Status Send(NetlinkMessage& msg, uint32_t seq, std::string_view what);

  UniqueFd fd_;
  uint32_t seq_ = 1;
};

}  // namespace forkd::agent

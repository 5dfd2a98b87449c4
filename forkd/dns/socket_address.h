// An IP address and port as the socket calls want them.
#pragma once

#include <sys/socket.h>

#include <cstdint>

#include "netfilter/ip.h"

namespace forkd::dns {

struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;

  static SocketAddress From(const netfilter::IpAddress& address, uint16_t port);
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
  int family() const { return storage.ss_family; }
};

}  // namespace forkd::dns

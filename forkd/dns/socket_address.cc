#include "forkd/dns/socket_address.h"

#include <netinet/in.h>

#include <cstring>

namespace forkd::dns {

SocketAddress SocketAddress::From(const netfilter::IpAddress& address, uint16_t port) {
  SocketAddress s;
  if (address.family == netfilter::Family::kV4) {
    auto* in = reinterpret_cast<sockaddr_in*>(&s.storage);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    std::memcpy(&in->sin_addr, address.bytes.data(), 4);
    s.length = sizeof(sockaddr_in);
  } else {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&s.storage);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    std::memcpy(&in6->sin6_addr, address.bytes.data(), 16);
    s.length = sizeof(sockaddr_in6);
  }
  return s;
}

}  // namespace forkd::dns

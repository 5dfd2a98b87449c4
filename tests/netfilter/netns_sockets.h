// Socket helpers for tests that send real packets between network namespaces
// the test created. Every socket is created inside the namespace it is given
// and stays there; nothing touches the machine's own namespace.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace forkd::testing {

using namespace std::chrono_literals;

// How long a probe waits before calling a destination unreachable. Local veth
// round trips take microseconds; this bounds a dropped packet's wait, and is
// longer than TCP's first SYN retransmit (1 s) so one packet lost to a busy
// machine (ARP/ND still resolving) never fails a positive check.
inline constexpr std::chrono::milliseconds kDropWait = 1500ms;

enum class Reach { kConnected, kRefused, kTimedOut, kError };
std::string ToString(Reach r);

// Writes a sysctl under /proc/sys as seen from `netns`.
absl::Status WriteSysctl(int netns, const std::string& path, const std::string& value);

// A TCP listener on addr:port inside `netns` (addr "0.0.0.0" = any).
absl::StatusOr<UniqueFd> TcpListen(int netns, const std::string& addr, uint16_t port);
// A connect attempt from `netns` (optionally from source address `src`).
Reach TcpConnect(int netns, const std::string& dst, uint16_t port, const std::string& src = "",
                 std::chrono::milliseconds wait = kDropWait);

absl::StatusOr<UniqueFd> UdpBind(int netns, const std::string& addr, uint16_t port);
// Sends `payload` from `netns` (bound to `src` when given).
absl::Status UdpSend(int netns, const std::string& dst, uint16_t port, const std::string& payload,
                     const std::string& src = "");
// True when a datagram equal to `payload` arrives on `sock` within `wait`;
// `from` (if given) receives the sender's address as the receiver saw it.
bool UdpReceives(int sock, const std::string& payload, std::chrono::milliseconds wait = kDropWait,
                 std::string* from = nullptr);

// A connected TCP socket from `netns` to dst:port (blocking reads/writes).
absl::StatusOr<UniqueFd> TcpOpen(int netns, const std::string& dst, uint16_t port,
                                 std::chrono::milliseconds wait = 3s);
// The next connection on listener `listen_fd`, within `wait`.
absl::StatusOr<UniqueFd> TcpAccept(int listen_fd, std::chrono::milliseconds wait = 3s);
absl::Status StreamSend(int fd, const std::string& payload);
// True when the bytes `payload` arrive on stream `fd` within `wait` (bytes
// before them are skipped).
bool StreamReceives(int fd, const std::string& payload, std::chrono::milliseconds wait = kDropWait);

// Sends one complete IP packet (header included, as built by the caller)
// from `netns` through a raw IPPROTO_RAW socket.
absl::Status RawSend(int netns, const std::string& dst, const std::vector<uint8_t>& packet);

// Runs `nft <args>` inside `netns`, for asserting state only; returns stdout.
absl::StatusOr<std::string> NftInNetns(int netns, const std::string& args);

}  // namespace forkd::testing

// Connects to a guest's vsock port through the VMM's host-side unix socket
// multiplexer (Firecracker-compatible, forkd/vmm/README.md): connect to the socket,
// send "CONNECT <port>\n", expect "OK <host port>\n"; the stream then belongs
// to the guest listener, ready for AgentClient.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "agent/framing.h"
#include "common/unique_fd.h"

namespace forkd::agent {

// Error codes follow framing.h: kDeadlineExceeded when the multiplexer does not
// answer in time, kUnavailable when it hangs up (no listener on that port in
// the guest), kDataLoss for an answer that is not "OK <n>".
absl::StatusOr<UniqueFd> ConnectVsockMux(const std::string& uds_path, uint32_t port,
                                         Deadline deadline);

}  // namespace forkd::agent

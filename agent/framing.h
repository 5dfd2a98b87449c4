// Length-prefixed frames on a stream socket: a 4-byte big-endian length, then
// that many payload bytes. Used by both the guest agent and the host client.
//
// Every call takes an absolute deadline and never blocks past it. The fd must be
// a stream socket (unix, vsock, socketpair): I/O uses MSG_DONTWAIT so that a
// blocking descriptor cannot block us inside send/recv, and MSG_NOSIGNAL so a
// closed peer is an error, not SIGPIPE.
//
// Error codes are part of the contract (AgentClient classifies on them):
//   kDeadlineExceeded   the deadline passed before the frame was complete
//   kUnavailable        the peer closed or reset the connection (clean EOF
//                       before a frame, or EOF in the middle of one: truncated)
//   kResourceExhausted  the length prefix exceeds max_bytes (nothing allocated)
//   other               a system call failed (errno in the message)
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace forkd::agent {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

inline Deadline DeadlineIn(std::chrono::milliseconds d) { return Clock::now() + d; }

// Reads one frame. A clean EOF before any byte of the frame is kUnavailable with
// "connection closed"; EOF after part of a frame is kUnavailable with "truncated".
absl::StatusOr<std::string> ReadFrame(int fd, Deadline deadline, uint32_t max_bytes);

// Writes one frame (refuses a payload above max_bytes without writing anything).
absl::Status WriteFrame(int fd, std::string_view payload, Deadline deadline, uint32_t max_bytes);

// Lower level, exposed for tests that need to send broken frames.
absl::Status WriteAll(int fd, std::string_view bytes, Deadline deadline);

}  // namespace forkd::agent

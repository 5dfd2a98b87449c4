// Constants shared by the guest agent and the host-side client.
#pragma once

#include <cstddef>
#include <cstdint>

namespace forkd::agent {

// Bumped on any incompatible change to proto/agent.proto; the host records it in
// snapshot manifests and refuses to restore a snapshot whose agent speaks another.
inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr const char* kAgentVersion = "forkd-agent 0.1.0";

// Largest frame either side accepts. Checked against the length prefix before
// any buffer is allocated, so a hostile or corrupt prefix cannot make us allocate.
inline constexpr uint32_t kMaxFrameBytes = 4u << 20;

// Output and file caps leave room for the envelope inside one frame.
inline constexpr uint32_t kMaxExecOutputBytes = 1u << 20;  // per stream
inline constexpr uint32_t kMaxFileBytes = 3u << 20;

// NotifyForked refuses less entropy than this: 256 bits is what the kernel needs
// to consider its CRNG seeded.
inline constexpr size_t kMinEntropyBytes = 32;
// Upper bound so entropy_count (bits, an int) cannot overflow.
inline constexpr size_t kMaxEntropyBytes = 4096;

inline constexpr uint32_t kDefaultVsockPort = 1024;

}  // namespace forkd::agent

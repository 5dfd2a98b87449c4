// Whole-file read and write for the host, bounded so a reply fits in a frame.
#pragma once

#include "agent/proto/agent.pb.h"

namespace forkd::agent {

// Reads at most min(max_bytes, kMaxFileBytes) bytes (max_bytes 0: the cap);
// `truncated` says the file holds more.
v1::ReadFileResponse ReadFile(const v1::ReadFileRequest& request);

// Replaces the file's contents; refuses more than kMaxFileBytes. A new file
// gets `mode` (0: 0644); an existing file keeps its mode.
v1::WriteFileResponse WriteFile(const v1::WriteFileRequest& request);

}  // namespace forkd::agent

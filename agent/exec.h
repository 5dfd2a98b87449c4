// Runs one command for the host: argv/env/cwd/stdin in, status and capped
// output out, killed (its whole process group) at the deadline.
#pragma once

#include <chrono>

#include "agent/proto/agent.pb.h"

namespace forkd::agent {

inline constexpr std::chrono::milliseconds kDefaultExecTimeout{30'000};

// The command runs in a new process group. When the command exits, whatever it
// left running in that group is killed too, so a finished Exec leaves nothing
// behind in the guest; at the timeout the group is killed and timed_out is set.
// Output beyond the cap is read and discarded (the command never blocks on a
// full pipe) and the stream is marked truncated. Failures to start the command
// are reported in `error` with no status set.
v1::ExecResponse RunExec(const v1::ExecRequest& request);

}  // namespace forkd::agent

// The probe guest's stand-in for the forkd guest agent (agent/): listens on a
// vsock port (1024) for the host's NotifyForked and answers it according to
// probe.agent=<mode>, so the reseed gate can be proven against a real KVM
// fork. The probe has no kernel CRNG: "reseeding" mixes the host's entropy
// into the probe's own PRNG state (agent_prng_state), which is what a fork
// must not share with its siblings. It also answers Ping, and Exec for a
// tiny built-in command set (echo, true, false, exit N, prng; agent.cc):
// the probe has no processes, so this is the probe guest's equivalent of
// running a command, which forkd's API and tests use.
#pragma once

#include "runtime.h"

extern "C" {

enum agent_mode {
  AGENT_HONEST,    // reseeded=true, generation echoed
  AGENT_REFUSE,    // reseeded=false with an error string
  AGENT_SILENT,    // reads the request, never answers
  AGENT_LATE,      // answers honestly, but only after a long busy wait
  AGENT_GARBAGE,   // answers a frame that is not a protobuf Response
  AGENT_NETERR,    // reseeds, but reports a network_error (kept the template's MAC)
  AGENT_GENERR,    // reseeds, but reports a generation_error
  AGENT_WRONGGEN,  // reseeds, but echoes generation + 1
};

// Parses a probe.agent value; returns 0 for an unknown one.
int agent_parse_mode(const char* value, enum agent_mode* mode);
// Starts listening (vsock_init on `port`). Returns 1 and the CID, or 0 with *why.
int agent_init(enum agent_mode mode, uint32_t port, uint64_t* cid, const char** why);
const char* agent_mode_name(enum agent_mode mode);
uint64_t agent_prng_state(void);

}  // extern "C"

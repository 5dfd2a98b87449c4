// Hand-written protobuf codec for the probe guest's agent (probe/agent.cc):
// just enough of agent/proto/agent.proto to decode a Request carrying
// NotifyForked, Ping or Exec and to encode their Responses. Freestanding (no libprotobuf, no
// libc): the same file is compiled into the probe guest and into a host unit
// test that checks it against the real generated code.
#pragma once

#include <stddef.h>
#include <stdint.h>

extern "C" {

#define AGENT_MIN_ENTROPY 32
#define AGENT_MAX_ARGV 8

// What the probe needs from one Request.
struct agent_request {
  uint64_t id;
  int is_notify_forked;  // Request.notify_forked present
  uint64_t generation;
  const uint8_t* entropy;  // points into the decoded buffer
  uint32_t entropy_len;
  int is_ping;  // Request.ping present
  int is_exec;  // Request.exec present
  // ExecRequest.argv: the first AGENT_MAX_ARGV entries (pointers into the
  // decoded buffer); argc counts all of them.
  uint32_t argc;
  const uint8_t* argv[AGENT_MAX_ARGV];
  uint32_t argv_len[AGENT_MAX_ARGV];
};

// Decodes a serialized Request. Returns 1, or 0 when the bytes are not a
// well-formed Request (unknown fields are skipped, as protobuf does).
int agent_decode_request(const uint8_t* buf, uint32_t len, struct agent_request* out);

// Encodes Response{id, notify_forked{reseeded, error, generation}} into out
// (capacity cap). Returns the encoded length, or 0 when it does not fit.
uint32_t agent_encode_notify_forked(uint64_t id, int reseeded, const char* error,
                                    uint64_t generation, uint8_t* out, uint32_t cap);

// Encodes Response{id, ping{agent_version, protocol_version}}.
uint32_t agent_encode_ping(uint64_t id, const char* version, uint32_t protocol, uint8_t* out,
                           uint32_t cap);

// Encodes Response{id, exec{exit_code, stdout, stderr}} (exit_code is in a
// oneof, so 0 is encoded too).
uint32_t agent_encode_exec(uint64_t id, int32_t exit_code, const uint8_t* out_bytes,
                           uint32_t out_len, const uint8_t* err_bytes, uint32_t err_len,
                           uint8_t* out, uint32_t cap);

// As above, with the answer's network_error (field 5) and generation_error
// (field 6); a null string leaves the field out.
uint32_t agent_encode_notify_forked_full(uint64_t id, int reseeded, const char* error,
                                         const char* network_error, const char* generation_error,
                                         uint64_t generation, uint8_t* out, uint32_t cap);

// Encodes Response{id, error{code, message}} (ErrorResponse.Code values).
uint32_t agent_encode_error(uint64_t id, uint32_t code, const char* message, uint8_t* out,
                            uint32_t cap);

}  // extern "C"

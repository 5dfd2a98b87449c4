#include "agent.h"

#include "agent_codec.h"
#include "vsock.h"

extern "C" {

#define FRAME_MAX 1024
// The late mode's busy wait, in TSC cycles: at least 10 s on any TSC of up
// to 3 GHz, far beyond any host deadline (the gate's default is 2 s).
#define LATE_TSC_CYCLES 30000000000ULL

static enum agent_mode mode;
static uint8_t frame[4 + FRAME_MAX];
static uint32_t have;
static uint64_t prng[4] = {0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL,
                           0xa54ff53a5f1d36f1ULL};
static uint64_t reseeds;

static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Folds every entropy byte into all four state words (no kernel CRNG in the
// probe; this state is what forks of one snapshot would otherwise share).
static void reseed(const uint8_t* entropy, uint32_t len) {
  for (uint32_t i = 0; i < len; i++) {
    uint64_t& w = prng[i % 4];
    w = mix64(w ^ (static_cast<uint64_t>(entropy[i]) << ((i % 8) * 8)) ^ i);
  }
  for (int i = 0; i < 4; i++) prng[i] = mix64(prng[i] ^ prng[(i + 1) % 4]);
  reseeds++;
}

#define RESP_MAX 512

static void write_frame(const uint8_t* body, uint32_t len) {
  uint8_t out[4 + RESP_MAX];
  if (len > RESP_MAX) return;
  out[0] = static_cast<uint8_t>(len >> 24);
  out[1] = static_cast<uint8_t>(len >> 16);
  out[2] = static_cast<uint8_t>(len >> 8);
  out[3] = static_cast<uint8_t>(len);
  for (uint32_t i = 0; i < len; i++) out[4 + i] = body[i];
  vsock_write(out, 4 + len);
}

static int arg_is(const struct agent_request* req, uint32_t i, const char* word) {
  uint32_t n = 0;
  while (word[n]) n++;
  if (i >= req->argc || i >= AGENT_MAX_ARGV || req->argv_len[i] != n) return 0;
  for (uint32_t k = 0; k < n; k++) {
    if (req->argv[i][k] != static_cast<uint8_t>(word[k])) return 0;
  }
  return 1;
}

struct text {
  uint8_t buf[256];
  uint32_t len;
};

static void text_put(struct text* t, const uint8_t* b, uint32_t n) {
  for (uint32_t i = 0; i < n && t->len < sizeof t->buf; i++) t->buf[t->len++] = b[i];
}
static void text_str(struct text* t, const char* s) {
  uint32_t n = 0;
  while (s[n]) n++;
  text_put(t, reinterpret_cast<const uint8_t*>(s), n);
}
static void text_hex(struct text* t, uint64_t v) {
  static const char digits[] = "0123456789abcdef";
  for (int shift = 60; shift >= 0; shift -= 4) {
    const uint8_t c = static_cast<uint8_t>(digits[(v >> shift) & 0xf]);
    text_put(t, &c, 1);
  }
}

// The probe's built-in command set, answered through Exec (there is no
// process model in the probe): "echo ARGS..." prints its arguments, "true"
// and "false" exit 0 and 1, "exit N" exits N (0..255), "prng" prints the
// agent's PRNG state (what the reseed gate makes differ between forks);
// anything else exits 127 with an error on stderr.
static uint32_t run_builtin(const struct agent_request* req, uint8_t* resp, uint32_t cap) {
  struct text out = {{0}, 0}, err = {{0}, 0};
  int32_t code = 0;
  if (req->argc == 0) {
    text_str(&err, "probe agent: empty argv\n");
    code = 127;
  } else if (arg_is(req, 0, "echo")) {
    for (uint32_t i = 1; i < req->argc && i < AGENT_MAX_ARGV; i++) {
      if (i > 1) text_str(&out, " ");
      text_put(&out, req->argv[i], req->argv_len[i]);
    }
    text_str(&out, "\n");
  } else if (arg_is(req, 0, "true")) {
    code = 0;
  } else if (arg_is(req, 0, "false")) {
    code = 1;
  } else if (arg_is(req, 0, "exit") && req->argc == 2) {
    uint32_t v = 0;
    for (uint32_t k = 0; k < req->argv_len[1] && k < 3; k++) {
      const uint8_t c = req->argv[1][k];
      v = (c >= '0' && c <= '9') ? v * 10 + (c - '0') : 256;
    }
    code = v > 255 ? 2 : static_cast<int32_t>(v);
  } else if (arg_is(req, 0, "prng")) {
    text_hex(&out, prng[0]);
    text_str(&out, "\n");
  } else {
    text_str(&err, "probe agent: ");
    text_put(&err, req->argv[0], req->argv_len[0] > 64 ? 64 : req->argv_len[0]);
    text_str(&err, ": not a built-in (echo, true, false, exit N, prng)\n");
    code = 127;
  }
  return agent_encode_exec(req->id, code, out.buf, out.len, err.buf, err.len, resp, cap);
}

static void answer(const uint8_t* body, uint32_t len) {
  struct agent_request req;
  uint8_t resp[RESP_MAX];
  uint32_t n;
  if (mode == AGENT_SILENT) {
    report_ok("agent-silent");
    return;
  }
  if (mode == AGENT_GARBAGE) {
    // Field number 0 is invalid in every protobuf message.
    static const uint8_t garbage[] = {0x07, 'g', 'a', 'r', 'b', 'a', 'g', 'e', 0xff};
    write_frame(garbage, sizeof garbage);
    report_ok("agent-garbage");
    return;
  }
  if (!agent_decode_request(body, len, &req)) {
    n = agent_encode_error(0, 1 /* MALFORMED */, "probe agent: not a Request", resp, sizeof resp);
    write_frame(resp, n);
    return;
  }
  if (req.is_ping) {
    n = agent_encode_ping(req.id, "forkd-probe-agent", 1, resp, sizeof resp);
    write_frame(resp, n);
    return;
  }
  if (req.is_exec) {
    n = run_builtin(&req, resp, sizeof resp);
    write_frame(resp, n);
    return;
  }
  if (!req.is_notify_forked) {
    n = agent_encode_error(req.id, 2 /* UNKNOWN_REQUEST */,
                           "probe agent: NotifyForked, Ping and built-in Exec only", resp,
                           sizeof resp);
    write_frame(resp, n);
    return;
  }
  if (mode == AGENT_LATE) {
    const uint64_t start = rdtsc();
    while (rdtsc() - start < LATE_TSC_CYCLES) {
    }
  }
  if (mode == AGENT_REFUSE) {
    n = agent_encode_notify_forked(req.id, 0,
                                   "probe agent: refusing to reseed (probe.agent=refuse)",
                                   req.generation, resp, sizeof resp);
  } else if (req.entropy_len < AGENT_MIN_ENTROPY) {
    n = agent_encode_notify_forked(req.id, 0, "probe agent: fewer than 32 bytes of entropy",
                                   req.generation, resp, sizeof resp);
  } else {
    reseed(req.entropy, req.entropy_len);
    n = agent_encode_notify_forked_full(
        req.id, 1, nullptr,
        mode == AGENT_NETERR ? "probe agent: eth0 kept the template MAC (probe.agent=neterr)"
                             : nullptr,
        mode == AGENT_GENERR ? "probe agent: cannot record the generation (probe.agent=generr)"
                             : nullptr,
        mode == AGENT_WRONGGEN ? req.generation + 1 : req.generation, resp, sizeof resp);
  }
  write_frame(resp, n);
  // Serial output costs an exit per byte: only after the answer is out.
  serial_print("PROBE ok agent-answered generation=");
  serial_print_dec(req.generation);
  serial_print(" resets=");
  serial_print_dec(vsock_resets());
  serial_print(" reseeds=");
  serial_print_dec(reseeds);
  serial_print(" prng=");
  serial_print_hex(prng[0]);
  serial_putc('\n');
}

static void on_connect(void) { have = 0; }

static void on_data(const uint8_t* data, uint32_t len) {
  for (uint32_t i = 0; i < len; i++) {
    if (have < sizeof frame) frame[have++] = data[i];
    if (have < 4) continue;
    const uint32_t want = (static_cast<uint32_t>(frame[0]) << 24) |
                          (static_cast<uint32_t>(frame[1]) << 16) |
                          (static_cast<uint32_t>(frame[2]) << 8) | frame[3];
    if (want > FRAME_MAX) {
      uint8_t resp[128];
      const uint32_t n =
          agent_encode_error(0, 3 /* FRAME_TOO_LARGE */, "probe agent: frame", resp, sizeof resp);
      write_frame(resp, n);
      have = 0;
      return;  // the rest of this connection's bytes are not framed for us
    }
    if (have == 4 + want) {
      answer(frame + 4, want);
      have = 0;
    }
  }
}

int agent_parse_mode(const char* value, enum agent_mode* out) {
  static const char* const names[] = {"honest",  "refuse", "silent", "late",
                                      "garbage", "neterr", "generr", "wronggen"};
  for (int i = 0; i < 8; i++) {
    if (str_eq(value, names[i])) {
      *out = static_cast<enum agent_mode>(i);
      return 1;
    }
  }
  return 0;
}

const char* agent_mode_name(enum agent_mode m) {
  switch (m) {
    case AGENT_HONEST:
      return "honest";
    case AGENT_REFUSE:
      return "refuse";
    case AGENT_SILENT:
      return "silent";
    case AGENT_LATE:
      return "late";
    case AGENT_GARBAGE:
      return "garbage";
    case AGENT_NETERR:
      return "neterr";
    case AGENT_GENERR:
      return "generr";
    case AGENT_WRONGGEN:
      return "wronggen";
  }
  return "?";
}

uint64_t agent_prng_state(void) { return prng[0]; }

int agent_init(enum agent_mode m, uint32_t port, uint64_t* cid, const char** why) {
  mode = m;
  have = 0;
  if (!vsock_init(port, cid, why)) return 0;
  vsock_set_handlers(on_connect, on_data);
  vsock_set_quiet_reset(1);  // reported in the answered line instead
  return 1;
}

}  // extern "C"

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

static void write_frame(const uint8_t* body, uint32_t len) {
  uint8_t out[4 + 256];
  if (len > 256) return;
  out[0] = static_cast<uint8_t>(len >> 24);
  out[1] = static_cast<uint8_t>(len >> 16);
  out[2] = static_cast<uint8_t>(len >> 8);
  out[3] = static_cast<uint8_t>(len);
  for (uint32_t i = 0; i < len; i++) out[4 + i] = body[i];
  vsock_write(out, 4 + len);
}

static void answer(const uint8_t* body, uint32_t len) {
  struct agent_request req;
  uint8_t resp[256];
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
  if (!req.is_notify_forked) {
    n = agent_encode_error(req.id, 2 /* UNKNOWN_REQUEST */, "probe agent: NotifyForked only", resp,
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

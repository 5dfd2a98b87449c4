#include "agent_codec.h"

namespace {

struct reader {
  const uint8_t* p;
  const uint8_t* end;
};

int read_varint(struct reader* r, uint64_t* v) {
  uint64_t out = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (r->p == r->end) return 0;
    const uint8_t b = *r->p++;
    out |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = out;
      return 1;
    }
  }
  return 0;
}

// Reads a length-delimited field's payload.
int read_len(struct reader* r, const uint8_t** data, uint32_t* len) {
  uint64_t n;
  if (!read_varint(r, &n)) return 0;
  if (n > static_cast<uint64_t>(r->end - r->p)) return 0;
  *data = r->p;
  *len = static_cast<uint32_t>(n);
  r->p += n;
  return 1;
}

// Skips a field of `wire_type` whose tag was already read.
int skip(struct reader* r, uint32_t wire_type) {
  uint64_t v;
  const uint8_t* d;
  uint32_t n;
  switch (wire_type) {
    case 0:
      return read_varint(r, &v);
    case 1:
      if (r->end - r->p < 8) return 0;
      r->p += 8;
      return 1;
    case 2:
      return read_len(r, &d, &n);
    case 5:
      if (r->end - r->p < 4) return 0;
      r->p += 4;
      return 1;
    default:
      return 0;  // groups (3, 4) are not in this proto; 6, 7 are invalid
  }
}

// Walks a message's fields: `on_field(reader, field, wire)` consumes a field it
// knows and returns 1 (or 0 on a malformed payload), or returns -1 to have it
// skipped by wire type. Returns 0 on a malformed message.
template <typename OnField>
int for_each_field(const uint8_t* buf, uint32_t len, OnField on_field) {
  struct reader r = {buf, buf + len};
  while (r.p != r.end) {
    uint64_t tag;
    if (!read_varint(&r, &tag)) return 0;
    const uint32_t wire = static_cast<uint32_t>(tag & 7);
    const uint64_t field = tag >> 3;
    if (field == 0) return 0;
    const int taken = on_field(&r, field, wire);
    if (taken == 0 || (taken < 0 && !skip(&r, wire))) return 0;
  }
  return 1;
}

int decode_notify_forked(const uint8_t* buf, uint32_t len, struct agent_request* out) {
  return for_each_field(buf, len, [out](struct reader* r, uint64_t field, uint32_t wire) {
    if (field == 1 && wire == 0) return read_varint(r, &out->generation);
    if (field == 3 && wire == 2) return read_len(r, &out->entropy, &out->entropy_len);
    return -1;
  });
}

int decode_exec(const uint8_t* buf, uint32_t len, struct agent_request* out) {
  return for_each_field(buf, len, [out](struct reader* r, uint64_t field, uint32_t wire) {
    if (field != 1 || wire != 2) return -1;  // repeated string argv = 1
    const uint8_t* d;
    uint32_t n;
    if (!read_len(r, &d, &n)) return 0;
    if (out->argc < AGENT_MAX_ARGV) {
      out->argv[out->argc] = d;
      out->argv_len[out->argc] = n;
    }
    out->argc++;
    return 1;
  });
}

struct writer {
  uint8_t* p;
  uint8_t* end;
  int ok;
};

void put_byte(struct writer* w, uint8_t b) {
  if (w->p == w->end) {
    w->ok = 0;
    return;
  }
  *w->p++ = b;
}

void put_varint(struct writer* w, uint64_t v) {
  while (v >= 0x80) {
    put_byte(w, static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  put_byte(w, static_cast<uint8_t>(v));
}

uint32_t str_len(const char* s) {
  uint32_t n = 0;
  while (s && s[n]) n++;
  return n;
}

void put_bytes(struct writer* w, uint32_t field, const uint8_t* b, uint32_t n) {
  if (n == 0) return;
  put_varint(w, (field << 3) | 2);
  put_varint(w, n);
  for (uint32_t i = 0; i < n; i++) put_byte(w, b[i]);
}

void put_string(struct writer* w, uint32_t field, const char* s) {
  // proto3: empty strings are not encoded (put_bytes skips them).
  put_bytes(w, field, reinterpret_cast<const uint8_t*>(s), str_len(s));
}

uint32_t varint_size(uint64_t v) {
  uint32_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

uint32_t string_field_size(uint32_t field, const char* s) {
  const uint32_t n = str_len(s);
  return n == 0 ? 0 : varint_size(field << 3) + varint_size(n) + n;
}

// A varint field (wire type 0) with a one-byte tag.
void put_uint(struct writer* w, uint32_t field, uint64_t v) {
  put_byte(w, static_cast<uint8_t>(field << 3));
  put_varint(w, v);
}

// Starts a Response: its id (when set), then the oneof `kind` holding a
// message of `inner` bytes, which the caller writes next.
struct writer begin_response(uint8_t* out, uint32_t cap, uint64_t id, uint32_t kind,
                             uint32_t inner) {
  struct writer w = {out, out + cap, 1};
  if (id != 0) put_uint(&w, 1, id);
  put_byte(&w, static_cast<uint8_t>((kind << 3) | 2));
  put_varint(&w, inner);
  return w;
}

// The encoded length, or 0 when the message did not fit.
uint32_t finish(const struct writer* w, const uint8_t* out) {
  return w->ok ? static_cast<uint32_t>(w->p - out) : 0;
}

}  // namespace

extern "C" {

int agent_decode_request(const uint8_t* buf, uint32_t len, struct agent_request* out) {
  out->id = 0;
  out->is_notify_forked = 0;
  out->generation = 0;
  out->entropy = nullptr;
  out->entropy_len = 0;
  out->is_ping = 0;
  out->is_exec = 0;
  out->argc = 0;
  return for_each_field(buf, len, [out](struct reader* r, uint64_t field, uint32_t wire) {
    if (field == 1 && wire == 0) return read_varint(r, &out->id);
    if (wire != 2 || field < 2 || field > 6) return -1;
    const uint8_t* sub;
    uint32_t sub_len;
    if (!read_len(r, &sub, &sub_len)) return 0;
    // oneof: the last kind on the wire wins; a repeated notify_forked merges,
    // which restarting the decode over both would not model, but the host
    // never sends that. Another kind replaces notify_forked.
    out->is_notify_forked = field == 3;
    out->is_ping = field == 2;
    out->is_exec = field == 4;
    if (field == 3) return decode_notify_forked(sub, sub_len, out);
    out->argc = 0;
    return field == 4 ? decode_exec(sub, sub_len, out) : 1;
  });
}

uint32_t agent_encode_notify_forked(uint64_t id, int reseeded, const char* error,
                                    uint64_t generation, uint8_t* out, uint32_t cap) {
  return agent_encode_notify_forked_full(id, reseeded, error, nullptr, nullptr, generation, out,
                                         cap);
}

uint32_t agent_encode_notify_forked_full(uint64_t id, int reseeded, const char* error,
                                         const char* network_error, const char* generation_error,
                                         uint64_t generation, uint8_t* out, uint32_t cap) {
  // NotifyForkedResponse: reseeded = 1 (bool), error = 2, network_error = 5,
  // generation_error = 6, generation = 7 (in field order, as libprotobuf).
  uint32_t inner = 0;
  if (reseeded) inner += 2;
  inner += string_field_size(2, error);
  inner += string_field_size(5, network_error);
  inner += string_field_size(6, generation_error);
  if (generation != 0) inner += 1 + varint_size(generation);
  struct writer w = begin_response(out, cap, id, 4, inner);  // Response.notify_forked = 4
  if (reseeded) put_uint(&w, 1, 1);
  put_string(&w, 2, error);
  put_string(&w, 5, network_error);
  put_string(&w, 6, generation_error);
  if (generation != 0) put_uint(&w, 7, generation);
  return finish(&w, out);
}

uint32_t agent_encode_ping(uint64_t id, const char* version, uint32_t protocol, uint8_t* out,
                           uint32_t cap) {
  // PingResponse: agent_version = 1, protocol_version = 2.
  uint32_t inner = string_field_size(1, version);
  if (protocol != 0) inner += 1 + varint_size(protocol);
  struct writer w = begin_response(out, cap, id, 3, inner);  // Response.ping = 3
  put_string(&w, 1, version);
  if (protocol != 0) put_uint(&w, 2, protocol);
  return finish(&w, out);
}

uint32_t agent_encode_exec(uint64_t id, int32_t exit_code, const uint8_t* out_bytes,
                           uint32_t out_len, const uint8_t* err_bytes, uint32_t err_len,
                           uint8_t* out, uint32_t cap) {
  // ExecResponse: exit_code = 1 (oneof: always encoded; int32 as a 64-bit
  // varint), stdout = 4, stderr = 5.
  const uint64_t code = static_cast<uint64_t>(static_cast<int64_t>(exit_code));
  uint32_t inner = 1 + varint_size(code);
  if (out_len) inner += 1 + varint_size(out_len) + out_len;
  if (err_len) inner += 1 + varint_size(err_len) + err_len;
  struct writer w = begin_response(out, cap, id, 5, inner);  // Response.exec = 5
  put_uint(&w, 1, code);
  put_bytes(&w, 4, out_bytes, out_len);
  put_bytes(&w, 5, err_bytes, err_len);
  return finish(&w, out);
}

uint32_t agent_encode_error(uint64_t id, uint32_t code, const char* message, uint8_t* out,
                            uint32_t cap) {
  uint32_t inner = 0;
  if (code != 0) inner += 1 + varint_size(code);
  inner += string_field_size(2, message);
  struct writer w = begin_response(out, cap, id, 2, inner);  // Response.error = 2
  if (code != 0) put_uint(&w, 1, code);
  put_string(&w, 2, message);
  return finish(&w, out);
}

}  // extern "C"

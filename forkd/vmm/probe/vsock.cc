#include "vsock.h"
#include "vring.h"

extern "C" {

#define RX_BUF 4096
#define TX_BUF 16384
#define HOST_CID 2
#define OP_REQUEST 1
#define OP_RESPONSE 2
#define OP_RST 3
#define OP_SHUTDOWN 4
#define OP_RW 5
#define OP_CREDIT_UPDATE 6
#define OP_CREDIT_REQUEST 7
#define SHUT_RCV 1
#define SHUT_SEND 2
#define EPHEMERAL_BASE 49152
// Rounds of rx/echo per vsock_poll, so serial input stays responsive.
#define POLL_ROUNDS 64
// How long vsock_write waits for the host's credit, in TSC cycles: over
// 2 s on any TSC of up to 3 GHz. The host's buffer (256 KiB) dwarfs the
// agent's replies, so this only ends a write to a host that stopped reading.
#define CREDIT_WAIT_TSC 6000000000ULL

struct __attribute__((packed)) vsock_hdr {
  uint64_t src_cid;
  uint64_t dst_cid;
  uint32_t src_port;
  uint32_t dst_port;
  uint32_t len;
  uint16_t type;
  uint16_t op;
  uint32_t flags;
  uint32_t buf_alloc;
  uint32_t fwd_cnt;
};

static struct vq rxq, txq, evq;
static uint8_t rx_bufs[QSZ][RX_BUF] __attribute__((aligned(16)));
static uint8_t tx_buf[sizeof(struct vsock_hdr) + TX_BUF] __attribute__((aligned(16)));
static uint8_t ev_buf[QSZ][16];
static uint64_t guest_cid;
static uint32_t listen_port;
static int ready;
static vsock_connect_fn connect_handler;
static vsock_data_fn data_handler;
static int quiet_reset;
static uint64_t resets;
static uint32_t next_ephemeral = EPHEMERAL_BASE;

// The one connection.
static int connected;
static int connecting;  // guest-initiated, waiting for RESPONSE
static uint32_t local_port;
static uint32_t peer_port;
static uint32_t peer_buf_alloc;
static uint32_t peer_fwd_cnt;
static uint32_t peer_shutdown;  // SHUT_* the host sent
static uint32_t tx_cnt;
static uint32_t fwd_cnt;       // bytes consumed (echoed or handed to on_data)
static uint32_t fwd_cnt_sent;  // fwd_cnt the host last heard
// Received bytes not echoed yet: ring[(head + i) % size] for i < ring_len.
// With handlers, the ring holds bytes that arrived while vsock_write
// waited for credit, for pump() to hand over afterwards.
static uint8_t ring[VSOCK_BUF_ALLOC];
static uint32_t ring_head, ring_len;
static int in_write;  // vsock_write is waiting for credit
// Half-close (vsock_half_close): SHUTDOWN(SEND) once the ring is echoed;
// afterwards received bytes are only counted.
static int half_close_pending;
static int half_closed;
static uint32_t after_half_close;  // bytes received since
// vsock_ignore_close: the host's SHUTDOWN is never answered.
static int ignore_close;
// vsock_set_ignore_requests: host REQUESTs get neither RESPONSE nor RST;
// the host port of the last one ignored (0: none) waits for the device's
// RST.
static int ignore_requests;
static uint32_t ignored_host_port;

static uint32_t rd(uint64_t off) { return mmio_read32(VIRTIO_VSOCK_MMIO_BASE + off); }
static void wr(uint64_t off, uint32_t v) { mmio_write32(VIRTIO_VSOCK_MMIO_BASE + off, v); }

int vsock_init(uint32_t port, uint64_t* cid, const char** why) {
  if (rd(0x000) != 0x74726976 || rd(0x004) != 2 || rd(0x008) != 19) {
    *why = "no virtio-vsock device";
    return 0;
  }
  wr(0x070, 0);
  wr(0x070, 1);
  wr(0x070, 3);
  wr(0x024, 1);
  wr(0x020, 1);  // VIRTIO_F_VERSION_1
  wr(0x024, 0);
  wr(0x020, 0);
  wr(0x070, 3 | 8);
  if (!(rd(0x070) & 8)) {
    *why = "FEATURES_OK refused";
    return 0;
  }
  if (vq_setup(VIRTIO_VSOCK_MMIO_BASE, 0, &rxq) || vq_setup(VIRTIO_VSOCK_MMIO_BASE, 1, &txq) ||
      vq_setup(VIRTIO_VSOCK_MMIO_BASE, 2, &evq)) {
    *why = "queue setup failed";
    return 0;
  }
  wr(0x070, 3 | 8 | 4);
  guest_cid = rd(0x100) | (static_cast<uint64_t>(rd(0x104)) << 32);
  for (uint16_t i = 0; i < QSZ; i++) vq_post(&rxq, i, rx_bufs[i], RX_BUF, 2 /* WRITE */);
  for (uint16_t i = 0; i < QSZ; i++) vq_post(&evq, i, ev_buf[i], sizeof ev_buf[i], 2);
  wr(0x050, 0);
  wr(0x050, 2);
  listen_port = port;
  ready = 1;
  *cid = guest_cid;
  return 1;
}

// Sends one packet on the current connection's ports and waits until the
// device took it (tx_buf is reused).
static void send_to(uint32_t src, uint32_t dst, uint16_t op, uint32_t flags, const uint8_t* payload,
                    uint32_t len) {
  volatile struct vsock_hdr* h = reinterpret_cast<volatile struct vsock_hdr*>(tx_buf);
  h->src_cid = guest_cid;
  h->dst_cid = HOST_CID;
  h->src_port = src;
  h->dst_port = dst;
  h->len = len;
  h->type = 1;
  h->op = op;
  h->flags = flags;
  h->buf_alloc = VSOCK_BUF_ALLOC;
  h->fwd_cnt = fwd_cnt;
  fwd_cnt_sent = fwd_cnt;
  for (uint32_t i = 0; i < len; i++) tx_buf[sizeof(struct vsock_hdr) + i] = payload[i];
  vq_post(&txq, 0, tx_buf, static_cast<uint32_t>(sizeof(struct vsock_hdr) + len), 0);
  if (!vq_notify_and_wait(VIRTIO_VSOCK_MMIO_BASE, 1, &txq)) {
    report_fail("vsock", "tx buffer never used");
  }
}

static void send(uint16_t op, uint32_t flags, const uint8_t* payload, uint32_t len) {
  send_to(local_port, peer_port, op, flags, payload, len);
}

static void new_connection(uint32_t local, uint32_t peer) {
  connected = 0;
  connecting = 0;
  local_port = local;
  peer_port = peer;
  peer_buf_alloc = 0;
  peer_fwd_cnt = 0;
  peer_shutdown = 0;
  tx_cnt = 0;
  fwd_cnt = 0;
  fwd_cnt_sent = 0;
  ring_head = 0;
  ring_len = 0;
  half_close_pending = 0;
  half_closed = 0;
  after_half_close = 0;
  ignore_close = 0;
}

static uint32_t tx_credit(void) {
  const uint32_t in_flight = tx_cnt - peer_fwd_cnt;
  return in_flight >= peer_buf_alloc ? 0 : peer_buf_alloc - in_flight;
}

static void send_rw(const uint8_t* data, uint32_t len) {
  tx_cnt += len;
  send(OP_RW, 0, data, len);
}

static void on_rw(const uint8_t* payload, uint32_t len) {
  if (data_handler && !in_write && ring_len == 0) {
    fwd_cnt += len;  // consumed at once
    data_handler(payload, len);
    return;
  }
  if (half_closed) {  // nothing goes back: counted and consumed
    after_half_close += len;
    fwd_cnt += len;
    return;
  }
  if (len > VSOCK_BUF_ALLOC - ring_len) {
    // More than the buf_alloc we advertised is in flight: the host broke
    // the credit rules.
    report_fail("vsock-credit", "host sent beyond the advertised buf_alloc");
    send(OP_RST, 0, 0, 0);
    connected = 0;
    return;
  }
  for (uint32_t i = 0; i < len; i++)
    ring[(ring_head + ring_len + i) % VSOCK_BUF_ALLOC] = payload[i];
  ring_len += len;
}

static void handle(const struct vsock_hdr* h, const uint8_t* payload, uint32_t payload_room) {
  if (h->dst_cid != guest_cid || h->src_cid != HOST_CID) return;
  const int ours =
      (connected || connecting) && h->dst_port == local_port && h->src_port == peer_port;
  if (h->op == OP_REQUEST && ignore_requests) {
    ignored_host_port = h->src_port;
    serial_print("PROBE ok vsock-request-ignored port=");
    serial_print_dec(h->src_port);
    serial_putc('\n');
    return;
  }
  if (h->op == OP_RST && ignored_host_port != 0 && h->src_port == ignored_host_port &&
      h->dst_port == listen_port) {
    serial_print("PROBE ok vsock-ignored-request-reset port=");
    serial_print_dec(h->src_port);
    serial_putc('\n');
    ignored_host_port = 0;
    return;
  }
  if (h->op == OP_REQUEST) {
    if (h->dst_port != listen_port || listen_port == 0) {
      send_to(h->dst_port, h->src_port, OP_RST, 0, 0, 0);
      return;
    }
    if (connected || connecting) send(OP_RST, 0, 0, 0);  // one connection at a time
    new_connection(listen_port, h->src_port);
    peer_buf_alloc = h->buf_alloc;
    peer_fwd_cnt = h->fwd_cnt;
    connected = 1;
    send(OP_RESPONSE, 0, 0, 0);
    if (connect_handler) connect_handler();
    return;
  }
  if (!ours) return;
  peer_buf_alloc = h->buf_alloc;
  peer_fwd_cnt = h->fwd_cnt;
  switch (h->op) {
    case OP_RESPONSE:
      if (!connecting) break;
      connecting = 0;
      connected = 1;
      serial_print("PROBE ok vsock-connected port=");
      serial_print_dec(peer_port);
      serial_putc('\n');
      {
        static const char marker[] = VSOCK_CONNECT_MARKER;
        send_rw(reinterpret_cast<const uint8_t*>(marker), sizeof marker - 1);
      }
      break;
    case OP_RW:
      if (!connected) break;
      on_rw(payload, h->len > payload_room ? payload_room : h->len);
      break;
    case OP_CREDIT_REQUEST:
      send(OP_CREDIT_UPDATE, 0, 0, 0);
      break;
    case OP_SHUTDOWN:
      peer_shutdown |= h->flags & (SHUT_RCV | SHUT_SEND);
      if (half_closed && (peer_shutdown & SHUT_SEND)) {
        serial_print("PROBE ok vsock-peer-eof after-half-close=");
        serial_print_dec(after_half_close);
        serial_putc('\n');
      }
      break;
    case OP_RST:
      if (connected && ignore_close) {
        serial_print("PROBE ok vsock-reset-while-ignoring-close shutdown=");
        serial_print_dec(peer_shutdown);
        serial_putc('\n');
      }
      if (connecting) {
        serial_print("PROBE ok vsock-refused port=");
        serial_print_dec(peer_port);
        serial_putc('\n');
      }
      connected = 0;
      connecting = 0;
      break;
    default:
      break;
  }
}

// Echoes what the ring holds while the host has credit; finishes a
// connection the host shut down once everything is echoed; tells the host
// about consumed bytes it has not heard of. Returns 1 on progress.
static int pump(void) {
  if (!connected) return 0;
  int progress = 0;
  while (data_handler && !in_write && ring_len > 0 && connected) {
    // Bytes that waited out a vsock_write, in order (contiguous pieces).
    uint32_t n = ring_len;
    if (n > VSOCK_BUF_ALLOC - ring_head) n = VSOCK_BUF_ALLOC - ring_head;
    const uint32_t at = ring_head;
    ring_head = (ring_head + n) % VSOCK_BUF_ALLOC;
    ring_len -= n;
    fwd_cnt += n;
    data_handler(ring + at, n);
    progress = 1;
  }
  if (!connected) return progress;
  while (!data_handler && ring_len > 0 && !(peer_shutdown & SHUT_RCV)) {
    uint32_t n = tx_credit();
    if (n == 0) break;
    if (n > ring_len) n = ring_len;
    if (n > TX_BUF) n = TX_BUF;
    if (n > VSOCK_BUF_ALLOC - ring_head) n = VSOCK_BUF_ALLOC - ring_head;  // contiguous
    const uint32_t at = ring_head;
    ring_head = (ring_head + n) % VSOCK_BUF_ALLOC;
    ring_len -= n;
    fwd_cnt += n;  // consumed: the echo's own header carries it
    send_rw(ring + at, n);
    progress = 1;
  }
  if (peer_shutdown & SHUT_RCV) ring_len = 0;  // the host takes no more
  if (half_close_pending && ring_len == 0) {
    half_close_pending = 0;
    half_closed = 1;
    send(OP_SHUTDOWN, SHUT_SEND, 0, 0);
    serial_print("PROBE ok vsock-half-closed echoed=");
    serial_print_dec(tx_cnt);
    serial_putc('\n');
    progress = 1;
  }
  if ((peer_shutdown & SHUT_SEND) && ring_len == 0 && !ignore_close) {
    // The host sends no more and everything is echoed: done both ways
    // (the host answers RST).
    send(OP_SHUTDOWN, SHUT_RCV | SHUT_SEND, 0, 0);
    connected = 0;
    return 1;
  }
  if (fwd_cnt - fwd_cnt_sent >= VSOCK_BUF_ALLOC / 2) {
    send(OP_CREDIT_UPDATE, 0, 0, 0);
    progress = 1;
  }
  return progress;
}

static void poll_events(void) {
  int reposted = 0;
  uint32_t id, len;
  while (vq_next_used(&evq, &id, &len)) {
    uint32_t event = *reinterpret_cast<volatile uint32_t*>(ev_buf[id]);
    if (event == 0) {  // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
      // Every connection is gone (e.g. this is a restored fork); the CID
      // may have changed too (5.10.6.6).
      connected = 0;
      connecting = 0;
      guest_cid = rd(0x100) | (static_cast<uint64_t>(rd(0x104)) << 32);
      resets++;
      if (!quiet_reset) {
        serial_print("PROBE ok vsock-reset cid=");
        serial_print_dec(guest_cid);
        serial_putc('\n');
      }
    }
    vq_post(&evq, static_cast<uint16_t>(id), ev_buf[id], sizeof ev_buf[id], 2);
    reposted = 1;
  }
  if (reposted) wr(0x050, 2);
}

void vsock_set_handlers(vsock_connect_fn on_connect, vsock_data_fn on_data) {
  connect_handler = on_connect;
  data_handler = on_data;
}

void vsock_set_quiet_reset(int quiet) { quiet_reset = quiet; }
uint64_t vsock_resets(void) { return resets; }

void vsock_connect(uint32_t host_port) {
  if (!ready) return;
  if (connected || connecting) send(OP_RST, 0, 0, 0);
  new_connection(next_ephemeral++, host_port);
  connecting = 1;
  send(OP_REQUEST, 0, 0, 0);
}

void vsock_set_ignore_requests(int on) {
  ignore_requests = on;
  serial_print("PROBE ok vsock-ignore-requests on=");
  serial_print_dec(static_cast<uint64_t>(on));
  serial_putc('\n');
}

void vsock_ignore_close(void) {
  if (!connected) return;
  ignore_close = 1;
  report_ok("vsock-ignore-close");
}

void vsock_half_close(void) {
  if (connected && !half_closed) half_close_pending = 1;
}

static int poll_rx(void);

// Waits until the host has credit for at least one byte: asks once
// (CREDIT_REQUEST), then watches rx (bytes arriving meanwhile wait in the
// ring). 0 when the connection went away or the host never gave credit.
static int wait_credit(void) {
  send(OP_CREDIT_REQUEST, 0, 0, 0);
  const uint64_t start = rdtsc();
  in_write = 1;
  while (connected && tx_credit() == 0 && rdtsc() - start < CREDIT_WAIT_TSC) poll_rx();
  in_write = 0;
  if (connected && tx_credit() == 0) {
    report_fail("vsock-write", "no credit from the host");
    return 0;
  }
  return connected;
}

int vsock_write(const uint8_t* data, uint32_t len) {
  if (!connected || half_closed || (peer_shutdown & SHUT_RCV)) return 0;
  while (len > 0) {
    uint32_t chunk = tx_credit();
    if (chunk == 0) {
      if (!wait_credit()) return 0;
      continue;
    }
    if (chunk > len) chunk = len;
    if (chunk > TX_BUF) chunk = TX_BUF;
    send_rw(data, chunk);
    data += chunk;
    len -= chunk;
  }
  return 1;
}

void vsock_write_pattern(uint32_t len) {
  static uint8_t chunk[TX_BUF];
  uint32_t done = 0;
  while (done < len) {
    const uint32_t n = len - done > TX_BUF ? TX_BUF : len - done;
    for (uint32_t i = 0; i < n; i++) chunk[i] = static_cast<uint8_t>((done + i) % 251);
    if (!vsock_write(chunk, n)) {
      report_fail("vsock-write-pattern", "connection gone or no credit");
      return;
    }
    done += n;
  }
  serial_print("PROBE ok vsock-wrote bytes=");
  serial_print_dec(len);
  serial_putc('\n');
}

// Handles the rx used ring once; returns 1 when it held packets.
static int poll_rx(void) {
  int reposted = 0;
  uint32_t id, len;
  while (vq_next_used(&rxq, &id, &len)) {
    if (len >= sizeof(struct vsock_hdr) && len <= RX_BUF) {
      const struct vsock_hdr* h = reinterpret_cast<const struct vsock_hdr*>(rx_bufs[id]);
      handle(h, rx_bufs[id] + sizeof(struct vsock_hdr),
             static_cast<uint32_t>(len - sizeof(struct vsock_hdr)));
    }
    vq_post(&rxq, static_cast<uint16_t>(id), rx_bufs[id], RX_BUF, 2);
    reposted = 1;
  }
  if (reposted) wr(0x050, 0);
  return reposted;
}

void vsock_poll(void) {
  if (!ready) return;
  poll_events();
  for (int round = 0; round < POLL_ROUNDS; round++) {
    const int got = poll_rx();
    const int pumped = pump();
    if (!got && !pumped) break;
  }
}

}  // extern "C"

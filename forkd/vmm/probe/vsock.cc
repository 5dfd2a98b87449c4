#include "vsock.h"
#include "vring.h"

extern "C" {

#define RX_BUF 4096
#define TX_BUF 4096
#define HOST_CID 2
#define OP_REQUEST 1
#define OP_RESPONSE 2
#define OP_RST 3
#define OP_SHUTDOWN 4
#define OP_RW 5
#define OP_CREDIT_UPDATE 6
#define OP_CREDIT_REQUEST 7
#define POLL_LIMIT 2000000000u  // ~1 s: the VMM may answer on another thread

struct vq {
  struct vring_desc desc[QSZ] __attribute__((aligned(16)));
  struct vring_avail avail __attribute__((aligned(4)));
  struct vring_used used __attribute__((aligned(4)));
  uint16_t used_seen;
};
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
static uint32_t port;
static int connected;
static uint32_t peer_port;
static uint32_t fwd_cnt;
static int ready;
static vsock_connect_fn connect_handler;
static vsock_data_fn data_handler;
static int quiet_reset;
static uint64_t resets;

static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
static uint32_t rd(uint64_t off) { return mmio_read32(VIRTIO_VSOCK_MMIO_BASE + off); }
static void wr(uint64_t off, uint32_t v) { mmio_write32(VIRTIO_VSOCK_MMIO_BASE + off, v); }
static void wr_addr(uint64_t lo_off, const void* p) {
  uint64_t a = reinterpret_cast<uintptr_t>(p);
  wr(lo_off, static_cast<uint32_t>(a));
  wr(lo_off + 4, static_cast<uint32_t>(a >> 32));
}

static int setup_queue(uint32_t index, struct vq* q) {
  wr(0x030, index);
  if (rd(0x034) < QSZ) return 0;
  wr(0x038, QSZ);
  wr_addr(0x080, q->desc);
  wr_addr(0x090, &q->avail);
  wr_addr(0x0a0, &q->used);
  wr(0x044, 1);
  return rd(0x044) == 1;
}

// Makes descriptor `id` (a device-writable buffer) available on `q`.
static void post(struct vq* q, uint16_t id, void* buf, uint32_t len, uint16_t flags) {
  volatile struct vring_desc* d = &q->desc[id];
  d->addr = reinterpret_cast<uintptr_t>(buf);
  d->len = len;
  d->flags = flags;
  d->next = 0;
  volatile struct vring_avail* av = &q->avail;
  uint16_t idx = av->idx;
  av->ring[idx % QSZ] = id;
  barrier();
  av->idx = static_cast<uint16_t>(idx + 1);
  barrier();
}

int vsock_init(uint32_t listen_port, uint64_t* cid, const char** why) {
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
  if (!setup_queue(0, &rxq) || !setup_queue(1, &txq) || !setup_queue(2, &evq)) {
    *why = "queue setup failed";
    return 0;
  }
  wr(0x070, 3 | 8 | 4);
  guest_cid = rd(0x100) | (static_cast<uint64_t>(rd(0x104)) << 32);
  for (uint16_t i = 0; i < QSZ; i++) post(&rxq, i, rx_bufs[i], RX_BUF, 2 /* WRITE */);
  for (uint16_t i = 0; i < QSZ; i++) post(&evq, i, ev_buf[i], sizeof ev_buf[i], 2);
  wr(0x050, 0);
  wr(0x050, 2);
  port = listen_port;
  ready = 1;
  *cid = guest_cid;
  return 1;
}

static void send(uint16_t op, const uint8_t* payload, uint32_t len) {
  volatile struct vsock_hdr* h = reinterpret_cast<volatile struct vsock_hdr*>(tx_buf);
  h->src_cid = guest_cid;
  h->dst_cid = HOST_CID;
  h->src_port = port;
  h->dst_port = peer_port;
  h->len = len;
  h->type = 1;
  h->op = op;
  h->flags = 0;
  h->buf_alloc = QSZ * RX_BUF;
  h->fwd_cnt = fwd_cnt;
  for (uint32_t i = 0; i < len; i++) tx_buf[sizeof(struct vsock_hdr) + i] = payload[i];
  post(&txq, 0, tx_buf, static_cast<uint32_t>(sizeof(struct vsock_hdr) + len), 0);
  wr(0x050, 1);
  volatile struct vring_used* u = &txq.used;
  for (uint32_t i = 0; u->idx == txq.used_seen && i < POLL_LIMIT; i++) {
  }
  txq.used_seen = u->idx;
}

static void handle(const struct vsock_hdr* h, const uint8_t* payload) {
  if (h->dst_port != port || h->dst_cid != guest_cid) return;
  switch (h->op) {
    case OP_REQUEST:
      peer_port = h->src_port;
      connected = 1;
      fwd_cnt = 0;
      send(OP_RESPONSE, 0, 0);
      if (connect_handler) connect_handler();
      break;
    case OP_RW:
      if (!connected || h->src_port != peer_port) break;
      fwd_cnt += h->len;
      if (data_handler) {
        data_handler(payload, h->len > RX_BUF - sizeof(struct vsock_hdr)
                                  ? static_cast<uint32_t>(RX_BUF - sizeof(struct vsock_hdr))
                                  : h->len);
      } else {
        send(OP_RW, payload, h->len > TX_BUF ? TX_BUF : h->len);  // the echo
      }
      break;
    case OP_CREDIT_REQUEST:
      send(OP_CREDIT_UPDATE, 0, 0);
      break;
    case OP_RST:
    case OP_SHUTDOWN:
      if (h->src_port == peer_port) connected = 0;
      break;
    default:
      break;
  }
}

static void poll_events(void) {
  volatile struct vring_used* u = &evq.used;
  int reposted = 0;
  while (u->idx != evq.used_seen) {
    barrier();
    uint32_t id = u->ring[evq.used_seen % QSZ].id;
    evq.used_seen = static_cast<uint16_t>(evq.used_seen + 1);
    if (id >= QSZ) continue;
    uint32_t event = *reinterpret_cast<volatile uint32_t*>(ev_buf[id]);
    if (event == 0) {  // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
      // Every connection is gone (e.g. this is a restored fork); the CID
      // may have changed too (5.10.6.6).
      connected = 0;
      guest_cid = rd(0x100) | (static_cast<uint64_t>(rd(0x104)) << 32);
      resets++;
      if (!quiet_reset) {
        serial_print("PROBE ok vsock-reset cid=");
        serial_print_dec(guest_cid);
        serial_putc('\n');
      }
    }
    post(&evq, static_cast<uint16_t>(id), ev_buf[id], sizeof ev_buf[id], 2);
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

int vsock_write(const uint8_t* data, uint32_t len) {
  if (!connected) return 0;
  do {
    const uint32_t chunk = len > TX_BUF ? TX_BUF : len;
    send(OP_RW, data, chunk);
    data += chunk;
    len -= chunk;
  } while (len > 0);
  return 1;
}

void vsock_poll(void) {
  if (!ready) return;
  poll_events();
  volatile struct vring_used* u = &rxq.used;
  int reposted = 0;
  while (u->idx != rxq.used_seen) {
    barrier();
    uint16_t slot = static_cast<uint16_t>(rxq.used_seen % QSZ);
    uint32_t id = u->ring[slot].id;
    uint32_t len = u->ring[slot].len;
    rxq.used_seen = static_cast<uint16_t>(rxq.used_seen + 1);
    if (id >= QSZ) continue;
    if (len >= sizeof(struct vsock_hdr)) {
      const struct vsock_hdr* h = reinterpret_cast<const struct vsock_hdr*>(rx_bufs[id]);
      handle(h, rx_bufs[id] + sizeof(struct vsock_hdr));
    }
    post(&rxq, static_cast<uint16_t>(id), rx_bufs[id], RX_BUF, 2);
    reposted = 1;
  }
  if (reposted) wr(0x050, 0);
}

}  // extern "C"

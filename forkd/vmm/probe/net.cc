#include "net.h"
#include "vring.h"

extern "C" {

#define NET_HDR 12      // virtio_net_hdr_v1
#define RX_BUF 2048     // >= 1526: the minimum without offloads (5.1.6.3.1)
#define FRAME_MAX 1514  // MTU 1500 + Ethernet header
#define F_MAC (1u << 5)
#define REG_CONFIG_GENERATION 0x0fc
#define REG_CONFIG 0x100

static struct vq rxq, txq;
static uint8_t rx_bufs[QSZ][RX_BUF] __attribute__((aligned(16)));
static uint8_t tx_buf[NET_HDR + FRAME_MAX] __attribute__((aligned(16)));
static uint8_t mac[6];
static uint32_t generation;
static uint64_t hello_seq;
static uint64_t polls;
static int ready;

static uint32_t rd(uint64_t off) { return mmio_read32(VIRTIO_NET_MMIO_BASE + off); }
static void wr(uint64_t off, uint32_t v) { mmio_write32(VIRTIO_NET_MMIO_BASE + off, v); }

// Config space is read a byte at a time; a generation change in between
// means a torn read: retry (4.1.3.1 / 2.5.1).
static uint32_t read_mac(void) {
  uint32_t gen;
  do {
    gen = rd(REG_CONFIG_GENERATION);
    for (int i = 0; i < 6; i++)
      mac[i] = *reinterpret_cast<volatile uint8_t*>(VIRTIO_NET_MMIO_BASE + REG_CONFIG + i);
  } while (rd(REG_CONFIG_GENERATION) != gen);
  return gen;
}

static void print_mac(void) {
  for (int i = 0; i < 6; i++) {
    if (i) serial_putc(':');
    serial_putc("0123456789abcdef"[mac[i] >> 4]);
    serial_putc("0123456789abcdef"[mac[i] & 0xf]);
  }
}

static uint32_t append(uint8_t* dst, uint32_t at, const char* s) {
  while (*s && at < FRAME_MAX) dst[at++] = static_cast<uint8_t>(*s++);
  return at;
}

// Sends frame[0..len) (Ethernet header included) behind a zero header.
static void transmit(uint32_t len) {
  for (int i = 0; i < NET_HDR; i++) tx_buf[i] = 0;
  vq_post(&txq, 0, tx_buf, NET_HDR + len, 0);
  // A device that never takes it is dead; the next frame reuses tx_buf anyway.
  (void)vq_notify_and_wait(VIRTIO_NET_MMIO_BASE, 1, &txq);
}

static void put_header(uint8_t* f, const uint8_t* dst) {
  for (int i = 0; i < 6; i++) f[i] = dst[i];
  for (int i = 0; i < 6; i++) f[6 + i] = mac[i];
  f[12] = PROBE_NET_ETHERTYPE >> 8;
  f[13] = PROBE_NET_ETHERTYPE & 0xff;
}

void net_send_hello(void) {
  if (!ready) return;
  static const uint8_t broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  uint8_t* f = tx_buf + NET_HDR;
  put_header(f, broadcast);
  hello_seq++;
  uint32_t at = append(f, 14, "forkd-probe hello seq=");
  char num[21];
  int n = 20;
  num[n] = 0;
  uint64_t v = hello_seq;
  do {
    num[--n] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  at = append(f, at, &num[n]);
  at = append(f, at, " mac=");
  for (int i = 0; i < 6; i++) {
    if (i) f[at++] = ':';
    f[at++] = static_cast<uint8_t>("0123456789abcdef"[mac[i] >> 4]);
    f[at++] = static_cast<uint8_t>("0123456789abcdef"[mac[i] & 0xf]);
  }
  while (at < 60) f[at++] = 0;  // Ethernet minimum (no FCS)
  transmit(at);
  serial_print("PROBE net sent hello seq=");
  serial_print_dec(hello_seq);
  serial_print(" mac=");
  print_mac();
  serial_putc('\n');
}

int net_init(const char** why) {
  if (rd(0x000) != 0x74726976 || rd(0x004) != 2 || rd(0x008) != 1) {
    *why = "no virtio-net device";
    return 0;
  }
  wr(0x070, 0);
  wr(0x070, 1);
  wr(0x070, 3);
  wr(0x014, 0);
  if (!(rd(0x010) & F_MAC)) {
    *why = "device lacks VIRTIO_NET_F_MAC";
    return 0;
  }
  wr(0x024, 1);
  wr(0x020, 1);  // VIRTIO_F_VERSION_1
  wr(0x024, 0);
  wr(0x020, F_MAC);
  wr(0x070, 3 | 8);
  if (!(rd(0x070) & 8)) {
    *why = "FEATURES_OK refused";
    return 0;
  }
  if (vq_setup(VIRTIO_NET_MMIO_BASE, 0, &rxq) || vq_setup(VIRTIO_NET_MMIO_BASE, 1, &txq)) {
    *why = "queue setup failed";
    return 0;
  }
  wr(0x070, 3 | 8 | 4);
  generation = read_mac();
  for (uint16_t i = 0; i < QSZ; i++) vq_post(&rxq, i, rx_bufs[i], RX_BUF, 2 /* WRITE */);
  wr(0x050, 0);
  ready = 1;
  serial_print("PROBE ok net mac=");
  print_mac();
  serial_putc('\n');
  net_send_hello();
  return 1;
}

static void handle_frame(const uint8_t* f, uint32_t len) {
  if (len < 14 || f[12] != (PROBE_NET_ETHERTYPE >> 8) || f[13] != (PROBE_NET_ETHERTYPE & 0xff)) {
    return;  // not ours (IPv6 neighbour discovery and the like)
  }
  uint32_t plen = len - 14;
  if (plen > 80) plen = 80;
  serial_print("PROBE net rx len=");
  serial_print_dec(len);
  serial_putc(' ');
  for (uint32_t i = 0; i < plen; i++) {
    const uint8_t c = f[14 + i];
    if (c == 0) break;
    serial_putc(c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '.');
  }
  serial_putc('\n');
  // The echo: back to the sender, from this guest's (current) MAC.
  uint8_t* out = tx_buf + NET_HDR;
  uint8_t src[6];
  for (int i = 0; i < 6; i++) src[i] = f[6 + i];
  put_header(out, src);
  uint32_t at = append(out, 14, "echo ");
  for (uint32_t i = 14; i < len && at < FRAME_MAX; i++) out[at++] = f[i];
  while (at < 60) out[at++] = 0;
  transmit(at);
}

void net_poll(void) {
  if (!ready) return;
  // A fork's config may change under it (a new MAC): checked every 16th
  // poll, since each check is an exit.
  if (++polls % 16 == 0 && rd(REG_CONFIG_GENERATION) != generation) {
    generation = read_mac();
    serial_print("PROBE net config gen=");
    serial_print_dec(generation);
    serial_print(" mac=");
    print_mac();
    serial_putc('\n');
    net_send_hello();
  }
  int reposted = 0;
  uint32_t id, len;
  while (vq_next_used(&rxq, &id, &len)) {
    if (len > NET_HDR && len <= RX_BUF) handle_frame(rx_bufs[id] + NET_HDR, len - NET_HDR);
    vq_post(&rxq, static_cast<uint16_t>(id), rx_bufs[id], RX_BUF, 2);
    reposted = 1;
  }
  if (reposted) wr(0x050, 0);
}

}  // extern "C"

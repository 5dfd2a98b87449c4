#include "virtio.h"
#include "vring.h"

extern "C" {

#define REG_MAGIC 0x000
#define REG_VERSION 0x004
#define REG_DEVICE_ID 0x008
#define REG_DEVICE_FEATURES 0x010
#define REG_DEVICE_FEATURES_SEL 0x014
#define REG_DRIVER_FEATURES 0x020
#define REG_DRIVER_FEATURES_SEL 0x024
#define REG_QUEUE_SEL 0x030
#define REG_QUEUE_NUM_MAX 0x034
#define REG_QUEUE_NUM 0x038
#define REG_QUEUE_READY 0x044
#define REG_QUEUE_NOTIFY 0x050
#define REG_STATUS 0x070
#define REG_QUEUE_DESC_LO 0x080
#define REG_QUEUE_DESC_HI 0x084
#define REG_QUEUE_DRIVER_LO 0x090
#define REG_QUEUE_DRIVER_HI 0x094
#define REG_QUEUE_DEVICE_LO 0x0a0
#define REG_QUEUE_DEVICE_HI 0x0a4

#define STATUS_ACK 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8

#define DESC_F_WRITE 2
#define RNG_BUF 64

// The probe's page tables identity-map memory, so these addresses are
// guest-physical as the device needs them.
static struct vring_desc rng_desc[QSZ] __attribute__((aligned(16)));
static struct vring_avail rng_avail __attribute__((aligned(4)));
static struct vring_used rng_used __attribute__((aligned(4)));
static uint8_t rng_buf[RNG_BUF];
static uint16_t rng_used_seen;

static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

static uint32_t rd(uint64_t off) { return mmio_read32(VIRTIO_RNG_MMIO_BASE + off); }
static void wr(uint64_t off, uint32_t v) { mmio_write32(VIRTIO_RNG_MMIO_BASE + off, v); }
static void wr_addr(uint64_t lo_off, const void* p) {
  uint64_t a = reinterpret_cast<uintptr_t>(p);
  wr(lo_off, static_cast<uint32_t>(a));
  wr(lo_off + 4, static_cast<uint32_t>(a >> 32));
}

int virtio_rng_init(const char** why) {
  if (rd(REG_MAGIC) != 0x74726976 || rd(REG_VERSION) != 2) {
    *why = "no virtio-mmio v2 device";
    return 0;
  }
  if (rd(REG_DEVICE_ID) != 4) {
    *why = "device is not virtio-rng";
    return 0;
  }
  wr(REG_STATUS, 0);
  wr(REG_STATUS, STATUS_ACK);
  wr(REG_STATUS, STATUS_ACK | STATUS_DRIVER);
  wr(REG_DEVICE_FEATURES_SEL, 1);
  if (!(rd(REG_DEVICE_FEATURES) & 1)) {
    *why = "device lacks VIRTIO_F_VERSION_1";
    return 0;
  }
  wr(REG_DRIVER_FEATURES_SEL, 1);
  wr(REG_DRIVER_FEATURES, 1);
  wr(REG_DRIVER_FEATURES_SEL, 0);
  wr(REG_DRIVER_FEATURES, 0);
  wr(REG_STATUS, STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK);
  if (!(rd(REG_STATUS) & STATUS_FEATURES_OK)) {
    *why = "FEATURES_OK refused";
    return 0;
  }
  wr(REG_QUEUE_SEL, 0);
  if (rd(REG_QUEUE_NUM_MAX) < QSZ) {
    *why = "queue too small";
    return 0;
  }
  wr(REG_QUEUE_NUM, QSZ);
  wr_addr(REG_QUEUE_DESC_LO, rng_desc);
  wr_addr(REG_QUEUE_DRIVER_LO, &rng_avail);
  wr_addr(REG_QUEUE_DEVICE_LO, &rng_used);
  wr(REG_QUEUE_READY, 1);
  if (rd(REG_QUEUE_READY) != 1) {
    *why = "queue not ready";
    return 0;
  }
  wr(REG_STATUS, STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
  rng_used_seen = *reinterpret_cast<volatile uint16_t*>(&rng_used.idx);
  return 1;
}

int virtio_rng_read(uint8_t* out, uint32_t len, const char** why) {
  if (len > RNG_BUF) len = RNG_BUF;
  volatile struct vring_desc* d = &rng_desc[0];
  d->addr = reinterpret_cast<uintptr_t>(rng_buf);
  d->len = len;
  d->flags = DESC_F_WRITE;
  d->next = 0;
  volatile struct vring_avail* av = &rng_avail;
  uint16_t idx = av->idx;
  av->ring[idx % QSZ] = 0;
  barrier();  // x86 keeps stores in order; the compiler must too
  av->idx = static_cast<uint16_t>(idx + 1);
  barrier();
  wr(REG_QUEUE_NOTIFY, 0);
  volatile struct vring_used* u = &rng_used;
  if (!vring_wait_used(u, rng_used_seen)) {
    *why = "no used buffer";
    return 0;
  }
  barrier();
  uint16_t slot = static_cast<uint16_t>(rng_used_seen % QSZ);
  rng_used_seen = static_cast<uint16_t>(rng_used_seen + 1);
  if (u->ring[slot].id != 0 || u->ring[slot].len != len) {
    *why = "unexpected used element";
    return 0;
  }
  for (uint32_t i = 0; i < len; i++) out[i] = rng_buf[i];
  return 1;
}

}  // extern "C"

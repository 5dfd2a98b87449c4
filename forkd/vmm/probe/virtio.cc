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
#define REG_STATUS 0x070

#define STATUS_ACK 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8

#define DESC_F_WRITE 2
#define RNG_BUF 64

static struct vq rngq;
static uint8_t rng_buf[RNG_BUF];

static uint32_t rd(uint64_t off) { return mmio_read32(VIRTIO_RNG_MMIO_BASE + off); }
static void wr(uint64_t off, uint32_t v) { mmio_write32(VIRTIO_RNG_MMIO_BASE + off, v); }

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
  if (const char* failed = vq_setup(VIRTIO_RNG_MMIO_BASE, 0, &rngq)) {
    *why = failed;
    return 0;
  }
  wr(REG_STATUS, STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
  rngq.used_seen = *reinterpret_cast<volatile uint16_t*>(&rngq.used.idx);
  return 1;
}

int virtio_rng_read(uint8_t* out, uint32_t len, const char** why) {
  if (len > RNG_BUF) len = RNG_BUF;
  const uint16_t seen = rngq.used_seen;
  vq_post(&rngq, 0, rng_buf, len, DESC_F_WRITE);
  if (!vq_notify_and_wait(VIRTIO_RNG_MMIO_BASE, 0, &rngq)) {
    *why = "no used buffer";
    return 0;
  }
  volatile struct vring_used* u = &rngq.used;
  vq_barrier();
  const uint16_t slot = static_cast<uint16_t>(seen % QSZ);
  if (u->ring[slot].id != 0 || u->ring[slot].len != len) {
    *why = "unexpected used element";
    return 0;
  }
  for (uint32_t i = 0; i < len; i++) out[i] = rng_buf[i];
  return 1;
}

}  // extern "C"

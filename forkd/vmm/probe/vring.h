// The split virtqueue layout (virtio 1.x, 2.7) and the queue helpers shared
// by the probe guest's polling drivers; every queue has QSZ entries.
#pragma once

#include "runtime.h"

extern "C" {

#define QSZ 8

struct vring_desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
struct vring_avail {
  uint16_t flags;
  uint16_t idx;
  uint16_t ring[QSZ];
  uint16_t used_event;
};
struct vring_used_elem {
  uint32_t id;
  uint32_t len;
};
struct vring_used {
  uint16_t flags;
  uint16_t idx;
  struct vring_used_elem ring[QSZ];
  uint16_t avail_event;
};

// The VMM may answer a notify after the notifying write has returned, on
// another host thread (ioeventfd), so a driver waits for the used index to
// move. The bound (~1-2 s of TSC) only guards against a dead device.
#define VRING_WAIT_TSC_CYCLES 4000000000ULL
static inline int vring_wait_used(volatile struct vring_used* u, uint16_t seen) {
  const uint64_t start = rdtsc();
  while (u->idx == seen) {
    if (rdtsc() - start > VRING_WAIT_TSC_CYCLES) return 0;
    __asm__ volatile("pause" ::: "memory");
  }
  return 1;
}

// One queue of a driver: the rings in the probe's identity-mapped memory
// (so their addresses are guest-physical, as the device needs them) and the
// used index the driver has consumed up to.
struct vq {
  struct vring_desc desc[QSZ] __attribute__((aligned(16)));
  struct vring_avail avail __attribute__((aligned(4)));
  struct vring_used used __attribute__((aligned(4)));
  uint16_t used_seen;
};

// Ring stores must reach memory in program order: x86 keeps stores in
// order, the compiler must too.
static inline void vq_barrier(void) { __asm__ volatile("" ::: "memory"); }

// virtio-mmio registers the queue helpers use (4.2.2).
#define VQ_REG_QUEUE_SEL 0x030
#define VQ_REG_QUEUE_NUM_MAX 0x034
#define VQ_REG_QUEUE_NUM 0x038
#define VQ_REG_QUEUE_READY 0x044
#define VQ_REG_QUEUE_NOTIFY 0x050
#define VQ_REG_QUEUE_DESC_LO 0x080
#define VQ_REG_QUEUE_DRIVER_LO 0x090
#define VQ_REG_QUEUE_DEVICE_LO 0x0a0

static inline void vq_write_addr(uintptr_t base, uint64_t lo_off, const void* p) {
  const uint64_t a = reinterpret_cast<uintptr_t>(p);
  mmio_write32(base + lo_off, static_cast<uint32_t>(a));
  mmio_write32(base + lo_off + 4, static_cast<uint32_t>(a >> 32));
}

// Gives queue `index` of the device at `base` the rings of `q` and marks it
// ready. Returns null, or why it failed.
static inline const char* vq_setup(uintptr_t base, uint32_t index, struct vq* q) {
  mmio_write32(base + VQ_REG_QUEUE_SEL, index);
  if (mmio_read32(base + VQ_REG_QUEUE_NUM_MAX) < QSZ) return "queue too small";
  mmio_write32(base + VQ_REG_QUEUE_NUM, QSZ);
  vq_write_addr(base, VQ_REG_QUEUE_DESC_LO, q->desc);
  vq_write_addr(base, VQ_REG_QUEUE_DRIVER_LO, &q->avail);
  vq_write_addr(base, VQ_REG_QUEUE_DEVICE_LO, &q->used);
  mmio_write32(base + VQ_REG_QUEUE_READY, 1);
  if (mmio_read32(base + VQ_REG_QUEUE_READY) != 1) return "queue not ready";
  return nullptr;
}

// Makes descriptor `id` (one buffer, no chain) available on `q`.
static inline void vq_post(struct vq* q, uint16_t id, void* buf, uint32_t len, uint16_t flags) {
  volatile struct vring_desc* d = &q->desc[id];
  d->addr = reinterpret_cast<uintptr_t>(buf);
  d->len = len;
  d->flags = flags;
  d->next = 0;
  volatile struct vring_avail* av = &q->avail;
  const uint16_t idx = av->idx;
  av->ring[idx % QSZ] = id;
  vq_barrier();
  av->idx = static_cast<uint16_t>(idx + 1);
  vq_barrier();
}

// Takes the next element the device put on `q`'s used ring, if any: 1 with
// its descriptor id (< QSZ; elements naming any other id are skipped) and
// the length the device wrote, or 0 when there is none.
static inline int vq_next_used(struct vq* q, uint32_t* id, uint32_t* len) {
  volatile struct vring_used* u = &q->used;
  while (u->idx != q->used_seen) {
    vq_barrier();
    const uint16_t slot = static_cast<uint16_t>(q->used_seen % QSZ);
    *id = u->ring[slot].id;
    *len = u->ring[slot].len;
    q->used_seen = static_cast<uint16_t>(q->used_seen + 1);
    if (*id < QSZ) return 1;
  }
  return 0;
}

// Notifies queue `index` and waits until the device used one more buffer of
// it (vring_wait_used's bound). Returns 0 when it never did.
static inline int vq_notify_and_wait(uintptr_t base, uint32_t index, struct vq* q) {
  mmio_write32(base + VQ_REG_QUEUE_NOTIFY, index);
  volatile struct vring_used* u = &q->used;
  const int used = vring_wait_used(u, q->used_seen);
  q->used_seen = u->idx;
  return used;
}

}  // extern "C"

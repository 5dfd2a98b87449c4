// The split virtqueue layout (virtio 1.x, 2.7) shared by the probe guest's
// polling drivers; every queue has QSZ entries.
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

}  // extern "C"

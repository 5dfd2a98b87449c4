// The probe guest's polling virtio-net driver (CPL3, MMIO only, no
// interrupts). Frames of ethertype 0x88b5 (IEEE local experimental) are the
// probe's own: it sends a "hello" after init, after every config change (a
// fork given a new MAC) and on request, and echoes every 0x88b5 frame it
// receives back to its sender with "echo " in front of the payload.
// Serial lines:
//   PROBE ok net mac=M                 driver ready
//   PROBE net sent hello seq=N mac=M   a hello went out
//   PROBE net config gen=G mac=M       config space changed
//   PROBE net rx len=L <payload>       a 0x88b5 frame arrived (echoed)
#pragma once

#include "runtime.h"

extern "C" {

// layout::VirtioMmioAddr(layout::kVirtioNetSlot)
#define VIRTIO_NET_MMIO_BASE 0xd0002000UL
#define PROBE_NET_ETHERTYPE 0x88b5

// Returns 1 (and sends the first hello), or 0 with *why set.
int net_init(const char** why);
// Sends a hello frame: broadcast, payload "forkd-probe hello seq=N mac=M".
void net_send_hello(void);
// Handles received frames and config changes since the last call.
void net_poll(void);

}  // extern "C"

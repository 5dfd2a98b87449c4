// The probe guest's polling virtio-vsock driver: accepts host connections
// on one port and echoes every byte back. CPL3, MMIO only, no interrupts:
// vsock_poll() (called from the payload's main loop) reads the rx used ring
// from memory and only exits to the VMM to notify.
#pragma once

#include "runtime.h"

extern "C" {

// layout::VirtioMmioAddr(layout::kVirtioVsockSlot)
#define VIRTIO_VSOCK_MMIO_BASE 0xd0001000UL

// Returns 1 and the guest CID from config space, or 0 with *why set.
int vsock_init(uint32_t listen_port, uint64_t* cid, const char** why);
// Handles whatever the host sent since the last call.
void vsock_poll(void);

// Replace the echo (both null: echo again). on_connect runs when a host
// connection is accepted (the previous one, if any, is gone); on_data for
// the bytes each OP_RW of the current connection carries.
typedef void (*vsock_connect_fn)(void);
typedef void (*vsock_data_fn)(const uint8_t* data, uint32_t len);
void vsock_set_handlers(vsock_connect_fn on_connect, vsock_data_fn on_data);
// Sends `len` bytes on the current connection, in chunks of at most one tx
// buffer. Returns 0 when there is no connection.
int vsock_write(const uint8_t* data, uint32_t len);
// 1: handle TRANSPORT_RESET without printing "PROBE ok vsock-reset": each
// serial byte is an exit (~60 us or more on PVM), and a restored fork's
// first connection waits behind that line. vsock_resets() counts them.
void vsock_set_quiet_reset(int quiet);
uint64_t vsock_resets(void);

}  // extern "C"

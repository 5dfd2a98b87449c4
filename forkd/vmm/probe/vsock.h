// The probe guest's polling virtio-vsock driver: one connection at a time,
// either accepted on the listen port or initiated by the guest
// (vsock_connect). By default it echoes every byte back, honouring credit
// both ways: received bytes wait in a VSOCK_BUF_ALLOC ring (its advertised
// buf_alloc) until the host has credit for their echo, and fwd_cnt only
// counts echoed bytes, so a slow host reader stalls the host's sender. A
// host that overruns that credit is reported ("PROBE fail vsock-credit").
// Host SHUTDOWN(SEND): the remaining bytes are still echoed, then the probe
// shuts down both ways. vsock_half_close shuts down its sending side only. CPL3, MMIO only, no
// interrupts: vsock_poll() (called from the payload's main loop) reads the used rings from memory
// and only exits to the VMM to notify.
#pragma once

#include "runtime.h"

extern "C" {

// layout::VirtioMmioAddr(layout::kVirtioVsockSlot)
#define VIRTIO_VSOCK_MMIO_BASE 0xd0001000UL
// Small, so a multi-megabyte transfer runs out of credit many times.
#define VSOCK_BUF_ALLOC (64 * 1024)
// What a guest-initiated connection writes first, once accepted.
#define VSOCK_CONNECT_MARKER "PROBE-VSOCK-CONNECTED\n"

// Returns 1 and the guest CID from config space, or 0 with *why set.
int vsock_init(uint32_t listen_port, uint64_t* cid, const char** why);
// Handles whatever the host sent since the last call, and echoes.
void vsock_poll(void);
// Connects to host port `host_port` from a fresh guest port (dropping the
// current connection). Reports "PROBE ok vsock-connected port=P" when the
// host accepts (then sends VSOCK_CONNECT_MARKER and echoes), or
// "PROBE ok vsock-refused port=P" on RST.
void vsock_connect(uint32_t host_port);

// Replace the echo (both null: echo again). on_connect runs when a host
// connection is accepted (the previous one, if any, is gone); on_data for
// the bytes each OP_RW of the current connection carries (consumed at once).
typedef void (*vsock_connect_fn)(void);
typedef void (*vsock_data_fn)(const uint8_t* data, uint32_t len);
void vsock_set_handlers(vsock_connect_fn on_connect, vsock_data_fn on_data);
// Sends `len` bytes on the current connection, in chunks of at most one tx
// buffer, within the host's credit: out of credit it asks (CREDIT_REQUEST)
// and polls rx for the update, bytes arriving meanwhile kept for on_data
// (handed over by vsock_poll, never re-entrantly). Returns 0 when there is
// no connection, the host shut its receive side, or no credit came for
// ~2 s ("PROBE fail vsock-write").
int vsock_write(const uint8_t* data, uint32_t len);
// Echo mode: once every received byte is echoed, SHUTDOWN(SEND) on the
// current connection ("PROBE ok vsock-half-closed echoed=N"); bytes the host
// sends afterwards are counted, and the host's own SHUTDOWN(SEND) reports
// them ("PROBE ok vsock-peer-eof after-half-close=N").
void vsock_half_close(void);
// A guest that never finishes a close: the host's SHUTDOWNs on the current
// connection go unanswered ("PROBE ok vsock-ignore-close"); the host's RST then prints
// "PROBE ok vsock-reset-while-ignoring-close shutdown=F" (F: the flags heard).
void vsock_ignore_close(void);
// 1: host REQUESTs on the listen port go unanswered (neither RESPONSE nor
// RST), each reported ("PROBE ok vsock-request-ignored port=P"), and the
// device's RST for the last one ignored prints
// "PROBE ok vsock-ignored-request-reset port=P"; 0: answered again.
// Reports "PROBE ok vsock-ignore-requests on=N".
void vsock_set_ignore_requests(int on);
// Writes `len` bytes of (offset % 251) through vsock_write, then prints
// "PROBE ok vsock-wrote bytes=N" (or "PROBE fail vsock-write-pattern").
void vsock_write_pattern(uint32_t len);
// 1: handle TRANSPORT_RESET without printing "PROBE ok vsock-reset": each
// serial byte is an exit (~60 us or more on PVM), and a restored fork's
// first connection waits behind that line. vsock_resets() counts them.
void vsock_set_quiet_reset(int quiet);
uint64_t vsock_resets(void);

}  // extern "C"

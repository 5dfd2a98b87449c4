// Mini runtime of the probe guest, shared by its CPL0 stub and CPL3 payload:
// port and MMIO access, serial output, the report line convention
// ("PROBE ok <name>" / "PROBE fail <name>: why") and boot_params access.
// Kept free of any CPL assumption so later virtio polling drivers reuse it.
#pragma once

#include <stddef.h>
#include <stdint.h>

extern "C" {

static inline void outb(uint16_t port, uint8_t v) {
  __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port));
}
static inline uint8_t inb(uint16_t port) {
  uint8_t v;
  __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline uint32_t mmio_read32(uintptr_t addr) {
  return *reinterpret_cast<volatile uint32_t*>(addr);
}
static inline void mmio_write32(uintptr_t addr, uint32_t v) {
  *reinterpret_cast<volatile uint32_t*>(addr) = v;
}
static inline uint64_t rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

// COM1, polled. Port I/O by default (CPL0); serial_use_mmio switches to
// the VMM's MMIO alias at `base` (needed at CPL3 on kvm_pvm).
void serial_use_mmio(uintptr_t base);
void serial_putc(char c);
void serial_print(const char* s);
void serial_print_dec(uint64_t v);
void serial_print_hex(uint64_t v);
// Returns 1 and stores the byte when the receiver holds one, else 0.
int serial_try_getc(uint8_t* out);

void report_ok(const char* name);
void report_fail(const char* name, const char* why);

#define SERIAL_MMIO_BASE 0xc0000000UL /* layout::kSerialMmioAddr */

// Set by the payload before it raises an exception on purpose: the CPL0
// handler then performs the request with port I/O (which needs CPL0 here).
#define PROBE_REQUEST_NONE 0
#define PROBE_REQUEST_RESET 1
extern volatile uint32_t probe_request;

// Offsets into the Linux zero page (boot_params) that the probe reads.
#define BP_CMD_LINE_PTR 0x228
static inline const char* boot_cmdline(const void* boot_params) {
  return reinterpret_cast<const char*>(static_cast<uintptr_t>(
      *reinterpret_cast<const uint32_t*>(static_cast<const char*>(boot_params) + BP_CMD_LINE_PTR)));
}
// Finds "key=value" in the command line; copies value (NUL-terminated) into
// out and returns 1, or returns 0 when the key is absent.
int cmdline_get(const char* cmdline, const char* key, char* out, size_t out_len);
int str_eq(const char* a, const char* b);
uint64_t parse_dec(const char* s);

void* memset(void* dst, int c, size_t n);
void* memcpy(void* dst, const void* src, size_t n);

}  // extern "C"

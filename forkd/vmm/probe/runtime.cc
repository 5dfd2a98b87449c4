#include "runtime.h"

extern "C" {

#define COM1 0x3f8
#define UART_LSR 5
#define LSR_DATA_READY 0x01
#define LSR_THR_EMPTY 0x20

// Port I/O until serial_use_mmio(): on kvm_pvm, CPL3 port I/O faults even
// with IOPL=3, so the payload switches to the VMM's MMIO alias of COM1.
static volatile uint8_t* serial_mmio;

void serial_use_mmio(uintptr_t base) { serial_mmio = reinterpret_cast<volatile uint8_t*>(base); }

static uint8_t uart_read(uint16_t reg) {
  return serial_mmio ? serial_mmio[reg] : inb(static_cast<uint16_t>(COM1 + reg));
}

static void uart_write(uint16_t reg, uint8_t v) {
  if (serial_mmio) {
    serial_mmio[reg] = v;
  } else {
    outb(static_cast<uint16_t>(COM1 + reg), v);
  }
}

void serial_putc(char c) {
  while (!(uart_read(UART_LSR) & LSR_THR_EMPTY)) {
  }
  uart_write(0, static_cast<uint8_t>(c));
}

void serial_print(const char* s) {
  while (*s) serial_putc(*s++);
}

void serial_print_dec(uint64_t v) {
  char buf[21];
  int i = 20;
  buf[i] = 0;
  do {
    buf[--i] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  serial_print(&buf[i]);
}

void serial_print_hex(uint64_t v) {
  char buf[19];
  int i = 18;
  buf[i] = 0;
  do {
    buf[--i] = "0123456789abcdef"[v & 0xf];
    v >>= 4;
  } while (v);
  buf[--i] = 'x';
  buf[--i] = '0';
  serial_print(&buf[i]);
}

int serial_try_getc(uint8_t* out) {
  if (!(uart_read(UART_LSR) & LSR_DATA_READY)) return 0;
  *out = uart_read(0);
  return 1;
}

void report_ok(const char* name) {
  serial_print("PROBE ok ");
  serial_print(name);
  serial_putc('\n');
}

void report_fail(const char* name, const char* why) {
  serial_print("PROBE fail ");
  serial_print(name);
  serial_print(": ");
  serial_print(why);
  serial_putc('\n');
}

int cmdline_get(const char* cmdline, const char* key, char* out, size_t out_len) {
  const char* p = cmdline;
  while (p && *p) {
    while (*p == ' ') p++;
    const char* k = key;
    const char* q = p;
    while (*k && *q == *k) {
      k++;
      q++;
    }
    if (!*k && *q == '=') {
      q++;
      size_t n = 0;
      while (*q && *q != ' ' && n + 1 < out_len) out[n++] = *q++;
      out[n] = 0;
      return 1;
    }
    while (*p && *p != ' ') p++;
  }
  return 0;
}

int str_eq(const char* a, const char* b) {
  while (*a && *a == *b) {
    a++;
    b++;
  }
  return *a == *b;
}

uint64_t parse_dec(const char* s) {
  uint64_t v = 0;
  while (*s >= '0' && *s <= '9') v = v * 10 + static_cast<uint64_t>(*s++ - '0');
  return v;
}

void* memset(void* dst, int c, size_t n) {
  unsigned char* d = static_cast<unsigned char*>(dst);
  while (n--) *d++ = (unsigned char)c;
  return dst;
}

void* memcpy(void* dst, const void* src, size_t n) {
  unsigned char* d = static_cast<unsigned char*>(dst);
  const unsigned char* s = static_cast<const unsigned char*>(src);
  while (n--) *d++ = *s++;
  return dst;
}

}  // extern "C"

// The CPL0 half of the probe guest: IDT construction and the exception
// handler. Runs emulated on PVM hosts, so it stays tiny.
#include "runtime.h"

#define KERNEL_CS 0x08
#define NUM_EXCEPTIONS 22

struct idt_gate {
  uint16_t offset_lo;
  uint16_t selector;
  uint8_t ist;
  uint8_t type_attr;
  uint16_t offset_mid;
  uint32_t offset_hi;
  uint32_t reserved;
};

struct exception_frame {
  uint64_t vector;
  uint64_t error_code;
  uint64_t rip;
  uint64_t cs;
  uint64_t rflags;
  uint64_t rsp;
  uint64_t ss;
};

extern "C" {

extern struct idt_gate probe_idt[256];
extern const uint64_t probe_exception_stubs[NUM_EXCEPTIONS];

void probe_idt_setup(void) {
  for (int v = 0; v < NUM_EXCEPTIONS; v++) {
    uint64_t addr = probe_exception_stubs[v];
    struct idt_gate* g = &probe_idt[v];
    g->offset_lo = static_cast<uint16_t>(addr);
    g->selector = KERNEL_CS;
    g->ist = 0;
    g->type_attr = 0x8e;  // present, DPL0, 64-bit interrupt gate
    g->offset_mid = static_cast<uint16_t>(addr >> 16);
    g->offset_hi = static_cast<uint32_t>(addr >> 32);
    g->reserved = 0;
  }
}

// Reports the exception, then ends the VM by taking every gate away and
// faulting again (triple fault; on kvm_pvm the emulator may report an
// internal error instead), so a broken payload never leaves the VMM waiting.
volatile uint32_t probe_request = PROBE_REQUEST_NONE;

void probe_exception(const struct exception_frame* f) {
  // Exceptions arrive on the CPL0 stack: use port I/O (CPL0 may).
  serial_use_mmio(0);
  if (probe_request == PROBE_REQUEST_RESET) {
    // i8042 "pulse reset line", exactly what Linux's reboot=k does.
    outb(0x64, 0xfe);
  }
  serial_print("PROBE fail exception: vector=");
  serial_print_dec(f->vector);
  serial_print(" error=");
  serial_print_hex(f->error_code);
  serial_print(" rip=");
  serial_print_hex(f->rip);
  serial_putc('\n');
  memset(probe_idt, 0, sizeof(struct idt_gate) * NUM_EXCEPTIONS);
  __asm__ volatile("ud2");
}

}  // extern "C"

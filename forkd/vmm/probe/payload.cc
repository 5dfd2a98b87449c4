// The CPL3 payload of the probe guest: runs natively even on PVM hosts.
//
// Behaviour, selected by the kernel command line:
//   probe.mode=run     (default) count, report "PROBE count N state=S"
//                      every probe.report polls, react to serial input
//   probe.mode=reset   request a reset through the i8042 (reboot=k path;
//                      done by the CPL0 handler since CPL3 port I/O faults)
//   probe.mode=triple  cause a triple fault
//   probe.scenario=rng initialise the virtio-rng driver, read 64 bytes and
//                      report "PROBE ok rng <hex>"; then run, and each 'r'
//                      on serial input reads and reports 64 fresh bytes;
//                      probe.rng_bench=N first times N more reads and
//                      reports "PROBE rng-bench n=N tsc=<cycles in all>";
//                      each 'b' on serial input runs that flood again
//                      (N reads, 256 without probe.rng_bench)
//   probe.scenario=vsock  initialise the virtio-vsock driver, report
//                      "PROBE ok vsock cid=N", then echo every byte host
//                      connections to port probe.vsock_port (5000) send
//                      (probe/vsock.h); with probe.vsock_connect=P it also
//                      connects to host port P at boot and on each 'c' on
//                      serial input, and echoes on that connection; 'h'
//                      on serial input half-closes the current connection
//                      once its bytes are echoed (vsock_half_close), 'm'
//                      makes it never answer the host's SHUTDOWN, 'w'
//                      writes 1 MiB through vsock_write (credit-bound),
//                      'i' toggles ignoring host REQUESTs
//                      (vsock_set_ignore_requests)
//   probe.scenario=agent  a stand-in guest agent on vsock port
//                      probe.vsock_port (1024) answering NotifyForked as
//                      probe.agent=honest|refuse|silent|late|garbage says
//                      (probe/agent.h); reports "PROBE ok agent mode=M cid=N"
//   probe.scenario=net  initialise virtio-net, report "PROBE ok net mac=M",
//                      send a hello frame, echo every 0x88b5 frame
//                      (probe/net.h); 'n' on serial input sends a hello
// Serial input bytes: 'd' dirties probe.dirty_kib KiB of guest memory,
// 'p' reports the count now, anything else is folded into the state and
// echoed as "PROBE input <hex> state=S" so forks fed different input diverge.
#include "agent.h"
#include "net.h"
#include "runtime.h"
#include "virtio.h"
#include "vsock.h"

#define DIRTY_BASE 0x2000000UL /* 32 MiB: beyond the image, inside any >=64 MiB guest */
#define POLL_EVERY (1u << 16)

extern "C" unsigned char probe_idt[];

static volatile uint64_t counter;
static uint64_t reports;
static uint64_t state = 1469598103934665603ULL;
static uint64_t dirty_kib = 1024;
static uint64_t dirty_round;
static int rng_ready;
static uint32_t vsock_connect_port;   // probe.vsock_connect, 0: none
static int vsock_echo_ready;          // probe.scenario=vsock
static int vsock_ignore_requests_on;  // toggled by 'i'
static int net_ready;

static void rng_report(void) {
  uint8_t bytes[64];
  const char* why = "";
  if (!rng_ready) {
    report_fail("rng", "driver not initialised");
    return;
  }
  if (!virtio_rng_read(bytes, sizeof bytes, &why)) {
    report_fail("rng", why);
    return;
  }
  serial_print("PROBE ok rng ");
  for (uint32_t i = 0; i < sizeof bytes; i++) {
    serial_putc("0123456789abcdef"[bytes[i] >> 4]);
    serial_putc("0123456789abcdef"[bytes[i] & 0xf]);
  }
  serial_putc('\n');
}

// N back-to-back 64-byte requests, each a notify and a wait for the used
// ring: the round-trip cost of one virtqueue notification.
static void rng_bench(uint64_t n) {
  uint8_t bytes[64];
  const char* why = "";
  const uint64_t start = rdtsc();
  for (uint64_t i = 0; i < n; i++) {
    if (!virtio_rng_read(bytes, sizeof bytes, &why)) {
      report_fail("rng-bench", why);
      return;
    }
  }
  const uint64_t cycles = rdtsc() - start;
  serial_print("PROBE rng-bench n=");
  serial_print_dec(n);
  serial_print(" tsc=");
  serial_print_dec(cycles);
  serial_putc('\n');
}

static void report_count(void) {
  serial_print("PROBE count ");
  serial_print_dec(reports++);
  serial_print(" state=");
  serial_print_hex(state);
  serial_putc('\n');
}

static void dirty_memory(void) {
  volatile uint8_t* p = reinterpret_cast<volatile uint8_t*>(DIRTY_BASE);
  dirty_round++;
  for (uint64_t off = 0; off < dirty_kib * 1024; off += 4096)
    p[off] = static_cast<uint8_t>(dirty_round + 1);
  report_ok("dirty");
}

static uint64_t rng_bench_reads = 256;

static void on_input(uint8_t c) {
  if (c == 'b' && rng_ready) {
    rng_bench(rng_bench_reads);
  } else if (c == 'd') {
    dirty_memory();
  } else if (c == 'p') {
    report_count();
  } else if (c == 'n' && net_ready) {
    net_send_hello();
  } else if (c == 'r' && rng_ready) {
    rng_report();
  } else if (c == 'c' && vsock_connect_port != 0) {
    vsock_connect(vsock_connect_port);
  } else if (c == 'h' && vsock_echo_ready) {
    vsock_half_close();
  } else if (c == 'm' && vsock_echo_ready) {
    vsock_ignore_close();
  } else if (c == 'w' && vsock_echo_ready) {
    vsock_write_pattern(1u << 20);
  } else if (c == 'i' && vsock_echo_ready) {
    vsock_ignore_requests_on = !vsock_ignore_requests_on;
    vsock_set_ignore_requests(vsock_ignore_requests_on);
  } else if (c != '\n' && c != '\r') {
    state = (state ^ c) * 1099511628211ULL;
    serial_print("PROBE input ");
    serial_print_hex(c);
    serial_print(" state=");
    serial_print_hex(state);
    serial_putc('\n');
  }
}

static void triple_fault(void) {
  // Every page is user-writable in the probe's map, so user mode can take
  // the IDT's gates away; the next exception then escalates #GP -> #DF ->
  // shutdown without any CPL0 help.
  memset(probe_idt, 0, 256 * 16);
  __asm__ volatile("ud2");
}

extern "C" [[noreturn]] void probe_payload_main(const void* boot_params) {
  serial_use_mmio(SERIAL_MMIO_BASE);
  const char* cmdline = boot_cmdline(boot_params);
  char value[32];
  uint64_t report_every = 2048;
  if (cmdline_get(cmdline, "probe.report", value, sizeof value)) report_every = parse_dec(value);
  if (cmdline_get(cmdline, "probe.dirty_kib", value, sizeof value)) dirty_kib = parse_dec(value);
  if (report_every == 0) report_every = 1;

  serial_print("PROBE ready\n");
  if (cmdline_get(cmdline, "probe.mode", value, sizeof value)) {
    if (str_eq(value, "reset")) {
      report_ok("reset-request");
      // Port I/O needs CPL0 on kvm_pvm: ask the exception handler to do it.
      probe_request = PROBE_REQUEST_RESET;
      __asm__ volatile("ud2");
      report_fail("reset-request", "still running after i8042 reset");
    } else if (str_eq(value, "triple")) {
      report_ok("triple-request");
      triple_fault();
      report_fail("triple-request", "still running after triple fault");
    } else if (!str_eq(value, "run")) {
      report_fail("mode", "unknown probe.mode");
    }
  }

  if (cmdline_get(cmdline, "probe.scenario", value, sizeof value)) {
    if (str_eq(value, "rng")) {
      const char* why = "";
      rng_ready = virtio_rng_init(&why);
      if (rng_ready) {
        rng_report();
        if (cmdline_get(cmdline, "probe.rng_bench", value, sizeof value)) {
          rng_bench_reads = parse_dec(value);
          rng_bench(rng_bench_reads);
        }
      } else {
        report_fail("rng", why);
      }
    } else if (str_eq(value, "vsock")) {
      uint32_t vport = 5000;
      if (cmdline_get(cmdline, "probe.vsock_port", value, sizeof value)) {
        vport = static_cast<uint32_t>(parse_dec(value));
      }
      const char* why = "";
      uint64_t cid = 0;
      if (vsock_init(vport, &cid, &why)) {
        vsock_echo_ready = 1;
        serial_print("PROBE ok vsock cid=");
        serial_print_dec(cid);
        serial_putc('\n');
        if (cmdline_get(cmdline, "probe.vsock_connect", value, sizeof value)) {
          vsock_connect_port = static_cast<uint32_t>(parse_dec(value));
          vsock_connect(vsock_connect_port);
        }
      } else {
        report_fail("vsock", why);
      }
    } else if (str_eq(value, "agent")) {
      uint32_t vport = 1024;
      if (cmdline_get(cmdline, "probe.vsock_port", value, sizeof value)) {
        vport = static_cast<uint32_t>(parse_dec(value));
      }
      enum agent_mode mode = AGENT_HONEST;
      const char* why = "";
      uint64_t cid = 0;
      if (cmdline_get(cmdline, "probe.agent", value, sizeof value) &&
          !agent_parse_mode(value, &mode)) {
        report_fail("agent", "unknown probe.agent");
      } else if (agent_init(mode, vport, &cid, &why)) {
        serial_print("PROBE ok agent mode=");
        serial_print(agent_mode_name(mode));
        serial_print(" cid=");
        serial_print_dec(cid);
        serial_putc('\n');
      } else {
        report_fail("agent", why);
      }
    } else if (str_eq(value, "net")) {
      const char* why = "";
      net_ready = net_init(&why);
      if (!net_ready) report_fail("net", why);
    } else {
      report_fail("scenario", "unknown probe.scenario");
    }
  }

  uint64_t polls = 0;
  for (;;) {
    for (uint32_t i = 0; i < POLL_EVERY; i++) counter = counter + 1;
    uint8_t c;
    while (serial_try_getc(&c)) on_input(c);
    vsock_poll();
    net_poll();
    if (++polls % report_every == 0) report_count();
  }
}

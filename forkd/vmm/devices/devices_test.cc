// Bus range registration, the 8250's register behaviour and the devices'
// save -> serialise -> parse -> restore round trips.
#include <unistd.h>

#include <string>

#include "common/unique_fd.h"
#include "forkd/vmm/devices/bus.h"
#include "forkd/vmm/devices/i8042.h"
#include "forkd/vmm/devices/serial.h"
#include "gtest/gtest.h"

namespace forkd::vmm {
namespace {

class Recorder : public BusDevice {
 public:
  void Read(uint64_t offset, std::span<uint8_t> data) override {
    for (auto& b : data) b = static_cast<uint8_t>(offset);
  }
  void Write(uint64_t offset, std::span<const uint8_t>) override { last_write = offset; }
  uint64_t last_write = ~0ULL;
};

TEST(Bus, RoutesByRangeAndRejectsOverlap) {
  Bus bus;
  auto a = std::make_shared<Recorder>();
  auto b = std::make_shared<Recorder>();
  ASSERT_TRUE(bus.Register(0x100, 0x10, a, "a").ok());
  ASSERT_TRUE(bus.Register(0x110, 0x10, b, "b").ok());
  EXPECT_FALSE(bus.Register(0x10f, 2, b, "c").ok());
  EXPECT_FALSE(bus.Register(0xf0, 0x11, b, "d").ok());
  EXPECT_FALSE(bus.Register(0x200, 0, b, "empty").ok());
  EXPECT_FALSE(bus.Register(~0ULL - 1, 4, b, "wraps").ok());
  uint8_t v[1];
  ASSERT_TRUE(bus.Read(0x105, v));
  EXPECT_EQ(v[0], 5);
  const uint8_t w[1] = {1};
  ASSERT_TRUE(bus.Write(0x112, w));
  EXPECT_EQ(b->last_write, 2u);
  EXPECT_FALSE(bus.Read(0x120, v));
  EXPECT_FALSE(bus.Read(0xff, v));
  uint8_t wide[4];
  EXPECT_FALSE(bus.Read(0x10e, wide));  // straddles two devices
}

struct Pipe {
  UniqueFd r, w;
  Pipe() {
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    r = UniqueFd(fds[0]);
    w = UniqueFd(fds[1]);
  }
};

uint8_t Rd(Serial& s, uint64_t off) {
  uint8_t v[1];
  s.Read(off, v);
  return v[0];
}
void Wr(Serial& s, uint64_t off, uint8_t val) {
  const uint8_t v[1] = {val};
  s.Write(off, v);
}

TEST(Serial, TransmitsAndReceivesWithInterrupts) {
  Pipe p;
  int irqs = 0;
  Serial s(p.w.get(), [&] { ++irqs; });
  EXPECT_EQ(Rd(s, 5) & 0x60, 0x60);  // THR empty
  Wr(s, 0, 'h');
  char c;
  ASSERT_EQ(::read(p.r.get(), &c, 1), 1);
  EXPECT_EQ(c, 'h');

  Wr(s, 1, 0x01);  // IER: receive interrupt
  const uint8_t in[] = {'x', 'y'};
  EXPECT_EQ(s.EnqueueInput(in), 2u);
  EXPECT_EQ(irqs, 1);
  EXPECT_EQ(Rd(s, 2) & 0x0f, 0x04);  // IIR: receive data available
  EXPECT_EQ(Rd(s, 5) & 0x01, 0x01);
  EXPECT_EQ(Rd(s, 0), 'x');
  EXPECT_EQ(Rd(s, 0), 'y');
  EXPECT_EQ(Rd(s, 5) & 0x01, 0x00);
  EXPECT_EQ(Rd(s, 2) & 0x0f, 0x01);  // no interrupt pending
}

TEST(Serial, DivisorLatchAndLoopback) {
  Serial s(-1, nullptr);
  Wr(s, 3, 0x80);  // DLAB
  Wr(s, 0, 0x01);
  Wr(s, 1, 0x02);
  EXPECT_EQ(Rd(s, 0), 0x01);
  EXPECT_EQ(Rd(s, 1), 0x02);
  Wr(s, 3, 0x03);
  Wr(s, 4, 0x10 | 0x0a);                    // loopback, RTS, OUT2
  EXPECT_EQ(Rd(s, 6) & 0xf0, 0x10 | 0x80);  // CTS, DCD
  Wr(s, 0, 'q');                            // loops back into the receiver
  EXPECT_EQ(Rd(s, 0), 'q');
}

TEST(Serial, ReceiveFifoIsBounded) {
  Serial s(-1, nullptr);
  std::string big(Serial::kRxCapacity + 10, 'a');
  EXPECT_EQ(s.EnqueueInput({reinterpret_cast<const uint8_t*>(big.data()), big.size()}),
            Serial::kRxCapacity);
}

TEST(Serial, SaveRestoreRoundTrip) {
  Serial a(-1, nullptr);
  Wr(a, 3, 0x83);
  Wr(a, 0, 0x0c);
  Wr(a, 3, 0x03);
  Wr(a, 1, 0x01);
  Wr(a, 7, 0x5a);
  const uint8_t in[] = {'1', '2', '3'};
  a.EnqueueInput(in);
  DeviceState d = a.SaveDevice();
  Serial b(-1, nullptr);
  ASSERT_TRUE(b.RestoreDevice(d).ok());
  EXPECT_EQ(b.SaveDevice().bytes, d.bytes);
  EXPECT_EQ(Rd(b, 7), 0x5a);
  EXPECT_EQ(Rd(b, 0), '1');

  DeviceState bad = d;
  bad.bytes.pop_back();
  EXPECT_FALSE(b.RestoreDevice(bad).ok());
  bad = d;
  bad.bytes[0] = 99;
  EXPECT_FALSE(b.RestoreDevice(bad).ok());
  bad = d;
  bad.name = "i8042";
  EXPECT_FALSE(b.RestoreDevice(bad).ok());
}

TEST(I8042, ResetCommandEndsVmAndStateRoundTrips) {
  int resets = 0;
  I8042 k([&] { ++resets; });
  const uint8_t write_ctr[] = {0x60}, ctr[] = {0x47}, read_ctr[] = {0x20}, reset[] = {0xfe};
  k.Write(4, write_ctr);
  k.Write(0, ctr);
  k.Write(4, read_ctr);
  uint8_t v[1];
  k.Read(4, v);
  EXPECT_TRUE(v[0] & 0x01);  // output buffer full
  k.Read(0, v);
  EXPECT_EQ(v[0], 0x47);
  EXPECT_EQ(resets, 0);
  DeviceState d = k.SaveDevice();
  I8042 k2(nullptr);
  ASSERT_TRUE(k2.RestoreDevice(d).ok());
  EXPECT_EQ(k2.SaveDevice().bytes, d.bytes);
  k.Write(4, reset);
  EXPECT_EQ(resets, 1);
  d.bytes.push_back(0);
  EXPECT_FALSE(k2.RestoreDevice(d).ok());
}

}  // namespace
}  // namespace forkd::vmm

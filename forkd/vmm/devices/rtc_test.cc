// The CMOS/RTC: BCD time from the injected clock, update-in-progress never
// set, read-only clock registers, CMOS RAM, save/restore.
#include "forkd/vmm/devices/rtc.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace forkd::vmm {
namespace {

// 2026-11-27 14:32:59 UTC, a Friday.
constexpr time_t kFriday = 1795789979;

uint8_t ReadReg(Rtc& rtc, uint8_t index) {
  const uint8_t i[1] = {index};
  rtc.Write(0, i);
  uint8_t v[1] = {0xee};
  rtc.Read(1, v);
  return v[0];
}

void WriteReg(Rtc& rtc, uint8_t index, uint8_t value) {
  const uint8_t i[1] = {index};
  rtc.Write(0, i);
  const uint8_t v[1] = {value};
  rtc.Write(1, v);
}

TEST(Rtc, AnswersTheClockInBcd) {
  Rtc rtc([] { return kFriday; });
  EXPECT_EQ(ReadReg(rtc, 0x00), 0x59);  // seconds
  EXPECT_EQ(ReadReg(rtc, 0x02), 0x32);  // minutes
  EXPECT_EQ(ReadReg(rtc, 0x04), 0x14);  // hours, 24-hour mode
  EXPECT_EQ(ReadReg(rtc, 0x06), 0x06);  // weekday, 1 = Sunday
  EXPECT_EQ(ReadReg(rtc, 0x07), 0x27);  // day of month
  EXPECT_EQ(ReadReg(rtc, 0x08), 0x11);  // month
  EXPECT_EQ(ReadReg(rtc, 0x09), 0x26);  // year
  EXPECT_EQ(ReadReg(rtc, Rtc::kCenturyRegister), 0x20);
}

TEST(Rtc, FollowsTheClockOnEveryRead) {
  time_t now = kFriday;
  Rtc rtc([&now] { return now; });
  EXPECT_EQ(ReadReg(rtc, 0x00), 0x59);
  now += 1;  // 14:33:00
  EXPECT_EQ(ReadReg(rtc, 0x00), 0x00);
  EXPECT_EQ(ReadReg(rtc, 0x02), 0x33);
}

// The bug this device fixes: 0xff (an unclaimed port) has UIP set.
TEST(Rtc, StatusRegistersSayBcd24hValidAndNoUpdateInProgress) {
  Rtc rtc([] { return kFriday; });
  const uint8_t a = ReadReg(rtc, 0x0a);
  EXPECT_EQ(a & 0x80, 0) << "update-in-progress must be clear";
  EXPECT_EQ(a, 0x26);
  const uint8_t b = ReadReg(rtc, 0x0b);
  EXPECT_EQ(b & 0x04, 0) << "BCD";
  EXPECT_NE(b & 0x02, 0) << "24-hour";
  EXPECT_EQ(b & 0x70, 0) << "no interrupts enabled";
  EXPECT_EQ(ReadReg(rtc, 0x0c), 0);
  EXPECT_EQ(ReadReg(rtc, 0x0d), 0x80);
}

TEST(Rtc, ClockRegistersIgnoreWritesAndRamKeepsThem) {
  Rtc rtc([] { return kFriday; });
  WriteReg(rtc, 0x00, 0x12);
  WriteReg(rtc, 0x0a, 0xa6);
  WriteReg(rtc, 0x0b, 0x40);
  EXPECT_EQ(ReadReg(rtc, 0x00), 0x59);
  EXPECT_EQ(ReadReg(rtc, 0x0a), 0x26);
  EXPECT_EQ(ReadReg(rtc, 0x0b), 0x02);
  EXPECT_EQ(ReadReg(rtc, 0x10), 0);
  WriteReg(rtc, 0x10, 0xab);
  WriteReg(rtc, 0x7f, 0xcd);
  WriteReg(rtc, 0x01, 0x30);  // seconds alarm: plain RAM
  EXPECT_EQ(ReadReg(rtc, 0x10), 0xab);
  EXPECT_EQ(ReadReg(rtc, 0x7f), 0xcd);
  EXPECT_EQ(ReadReg(rtc, 0x01), 0x30);
}

TEST(Rtc, TheNmiBitOfTheIndexIsIgnored) {
  Rtc rtc([] { return kFriday; });
  EXPECT_EQ(ReadReg(rtc, 0x80 | 0x04), 0x14);
  uint8_t index[1];
  rtc.Read(0, index);
  EXPECT_EQ(index[0], 0x04);
}

TEST(Rtc, SaveRestoreRoundTripAndRefusal) {
  Rtc a([] { return kFriday; });
  WriteReg(a, 0x20, 0x5a);
  const uint8_t i[1] = {0x07};
  a.Write(0, i);
  const DeviceState d = a.SaveDevice();
  Rtc b([] { return kFriday; });
  ASSERT_TRUE(b.RestoreDevice(d).ok());
  uint8_t v[1];
  b.Read(1, v);  // index restored: day of month
  EXPECT_EQ(v[0], 0x27);
  EXPECT_EQ(ReadReg(b, 0x20), 0x5a);

  DeviceState bad = d;
  bad.bytes.pop_back();
  EXPECT_FALSE(b.RestoreDevice(bad).ok());
  bad = d;
  bad.bytes[0] = 9;
  EXPECT_FALSE(b.RestoreDevice(bad).ok());
  bad = d;
  bad.bytes[1] = 0x80;
  EXPECT_FALSE(b.RestoreDevice(bad).ok());
}

}  // namespace
}  // namespace forkd::vmm

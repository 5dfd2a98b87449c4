#include "forkd/snapshot/cpu_identity.h"

#include "forkd/snapshot/snapshot_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forkd::snapshot {
namespace {

using ::testing::HasSubstr;

CpuIdentity Sample() {
  CpuIdentity c;
  c.vendor = "GenuineIntel";
  c.family = 6;
  c.model = 85;
  c.stepping = 7;
  c.leaf1_ecx = 0x7ffefbff;
  c.leaf1_edx = 0xbfebfbff;
  c.leaf7_ebx = 0xd19f4fbb;
  c.leaf7_ecx = 0x0000080c;
  c.leaf7_edx = 0x84000000;
  c.xcr0_supported = 0x2ff;
  c.xsave_size_max = 2696;
  c.xsave_size_enabled = 2696;
  c.xsave_d1_eax = 0xf;
  c.xss_supported = 0x100;
  c.host_kernel = "6.1.0-26-cloud-amd64";
  return c;
}

void ExpectRefused(const CpuIdentity& snap, const CpuIdentity& host, const std::string& text) {
  absl::Status s = CheckCpuCompatible(snap, host);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << text;
  EXPECT_THAT(std::string(s.message()), HasSubstr(text));
}

TEST(CpuIdentity, HostIdentityIsReadAndCompatibleWithItself) {
  const CpuIdentity host = HostCpuIdentity();
  EXPECT_EQ(host.vendor.size(), 12u);
  EXPECT_NE(host.family, 0u);
  EXPECT_FALSE(host.host_kernel.empty());
  EXPECT_NE(host.leaf1_edx, 0u);  // FPU/TSC/... are set on every x86-64 CPU
  EXPECT_TRUE(CheckCpuCompatible(host, HostCpuIdentity()).ok());
}

TEST(CpuIdentity, SameCpuIsCompatible) { EXPECT_TRUE(CheckCpuCompatible(Sample(), Sample()).ok()); }

TEST(CpuIdentity, DifferentModelIsRefused) {
  CpuIdentity host = Sample();
  host.vendor = "AuthenticAMD";
  ExpectRefused(Sample(), host, "vendor is GenuineIntel in the snapshot but AuthenticAMD");
  host = Sample();
  host.family = 25;
  ExpectRefused(Sample(), host, "family is 6 in the snapshot but 25 on this host");
  host = Sample();
  host.model = 106;
  ExpectRefused(Sample(), host, "model is 85 in the snapshot but 106 on this host");
  host = Sample();
  host.stepping = 4;
  ExpectRefused(Sample(), host, "stepping is 7");
}

TEST(CpuIdentity, MissingFeatureIsRefusedExtraFeatureIsFine) {
  CpuIdentity host = Sample();
  host.leaf7_ebx &= ~(1u << 5);  // AVX2 gone
  ExpectRefused(Sample(), host,
                "CPUID.7.0:EBX is 0xd19f4fbb in the snapshot but 0xd19f4f9b "
                "(missing bits 0x20) on this host");
  host = Sample();
  host.leaf1_ecx &= ~(1u << 30);  // RDRAND gone
  ExpectRefused(Sample(), host, "CPUID.1:ECX");
  host = Sample();
  host.leaf7_ecx |= 1u << 1;  // host has more: harmless
  host.leaf1_edx |= 1u << 30;
  EXPECT_TRUE(CheckCpuCompatible(Sample(), host).ok());
}

TEST(CpuIdentity, XsaveLayoutDifferenceIsRefused) {
  CpuIdentity host = Sample();
  host.xcr0_supported = 0x2e7;
  ExpectRefused(Sample(), host, "XCR0 mask (CPUID.0xD.0) is 0x2ff");
  host = Sample();
  host.xsave_size_max = 2440;
  ExpectRefused(Sample(), host, "XSAVE max size (CPUID.0xD.0:ECX) is 2696");
  host = Sample();
  host.xsave_size_enabled = 832;
  ExpectRefused(Sample(), host, "XSAVE enabled size");
  host = Sample();
  host.xss_supported = 0;
  ExpectRefused(Sample(), host, "XSS mask");
  host = Sample();
  host.xsave_d1_eax = 0x7;
  ExpectRefused(Sample(), host, "XSAVE features (CPUID.0xD.1:EAX)");
}

TEST(CpuIdentity, HostKernelIsInformationalOnly) {
  CpuIdentity host = Sample();
  host.host_kernel = "6.12.0";
  EXPECT_TRUE(CheckCpuCompatible(Sample(), host).ok());
}

TEST(CheckCompatible, RefusesOtherFormatVersionAndOtherCpu) {
  SnapshotHeader h;
  h.cpu = Sample();
  EXPECT_TRUE(CheckCompatible(h, Sample()).ok());
  h.format_version = kFormatVersion + 1;
  absl::Status s = CheckCompatible(h, Sample());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("format_version 3 is not supported"));
  h.format_version = kFormatVersion;
  CpuIdentity host = Sample();
  host.model = 1;
  EXPECT_THAT(std::string(CheckCompatible(h, host).message()), HasSubstr("different CPU"));
}

}  // namespace
}  // namespace forkd::snapshot

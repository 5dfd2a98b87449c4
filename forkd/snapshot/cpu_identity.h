// Which CPU a snapshot was taken on, and whether this host may restore it.
//
// Why this exists: on these hosts (kvm_pvm) KVM_SET_CPUID2 succeeds but CPUID masking is ignored
// for XSAVE/AVX/RDRAND, so a guest sees the real host CPU (docs/host-facts.md). A guest restored on
// a different CPU could use instructions that fault, or carry an XSAVE image laid out for another
// feature set. So we record the real host CPUID and refuse any restore on a different CPU.
//
// What is recorded and how it is compared (CheckCompatible):
//   vendor, family, model, stepping  must be equal (same CPU model, per docs/host-facts.md: "refuse
//                                    cross-CPU restores")
//   CPUID 1.ECX/EDX, 7.0.EBX/ECX/EDX snapshot bits must be a subset of the host's (a hypervisor
//                                    or microcode that adds features is harmless, removing one
//                                    is not). 1.EBX is not recorded: it holds the APIC id of
//                                    whichever core ran the query.
//   CPUID 0xD.0 / 0xD.1              XCR0/XSS masks and XSAVE sizes must be equal: they fix the
//                                    layout of the saved XSAVE image.
//   host kernel release (uname -r)   recorded for diagnostics only; not compared, because a host
//                                    kernel update must not invalidate every template. If a
//                                    kvm_pvm change ever makes state incompatible, bump
//                                    kFormatVersion instead.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace forkd::snapshot {

struct CpuIdentity {
  std::string vendor;   // CPUID 0 EBX,EDX,ECX: "GenuineIntel", "AuthenticAMD" (<= 12 bytes)
  uint32_t family = 0;  // display family (base + extended)
  uint32_t model = 0;   // display model (extended model folded in)
  uint32_t stepping = 0;
  uint32_t leaf1_ecx = 0;
  uint32_t leaf1_edx = 0;
  uint32_t leaf7_ebx = 0;
  uint32_t leaf7_ecx = 0;
  uint32_t leaf7_edx = 0;
  uint64_t xcr0_supported = 0;      // CPUID 0xD.0 EDX:EAX
  uint32_t xsave_size_max = 0;      // CPUID 0xD.0 ECX: size for all supported XCR0 features
  uint32_t xsave_size_enabled = 0;  // CPUID 0xD.0 EBX: size for the features enabled in XCR0
  uint32_t xsave_d1_eax = 0;        // CPUID 0xD.1 EAX: XSAVEOPT/XSAVEC/XGETBV1/XSAVES
  uint64_t xss_supported = 0;       // CPUID 0xD.1 EDX:ECX
  std::string host_kernel;          // uname -r at save time; informational (<= 64 bytes)
  friend bool operator==(const CpuIdentity&, const CpuIdentity&) = default;
};

// Reads the identity of the CPU this process runs on (CPUID instruction + uname).
CpuIdentity HostCpuIdentity();

// OK when a snapshot taken on `snapshot` may be restored on `host`; otherwise
// FAILED_PRECONDITION naming the first differing field and both values.
absl::Status CheckCpuCompatible(const CpuIdentity& snapshot, const CpuIdentity& host);

}  // namespace forkd::snapshot

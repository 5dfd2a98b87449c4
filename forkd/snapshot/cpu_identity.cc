#include "forkd/snapshot/cpu_identity.h"

#include <cpuid.h>
#include <sys/utsname.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace forkd::snapshot {
namespace {

struct Regs {
  uint32_t eax = 0, ebx = 0, ecx = 0, edx = 0;
};

Regs Cpuid(uint32_t leaf, uint32_t subleaf) {
  Regs r;
  __cpuid_count(leaf, subleaf, r.eax, r.ebx, r.ecx, r.edx);
  return r;
}

absl::Status Mismatch(const char* field, const std::string& snap, const std::string& host,
                      const CpuIdentity& s, const CpuIdentity& h) {
  return absl::FailedPreconditionError(
      absl::StrCat("snapshot was taken on a different CPU: ", field, " is ", snap,
                   " in the snapshot but ", host, " on this host (snapshot CPU ", s.vendor,
                   " family ", s.family, " model ", s.model, " stepping ", s.stepping, ", host ",
                   h.vendor, " family ", h.family, " model ", h.model, " stepping ", h.stepping,
                   "); cross-CPU restore is refused because CPUID masking is not "
                   "enforced on this host"));
}

std::string Hex(uint64_t v) { return absl::StrFormat("%#x", v); }

// Bits present in the snapshot CPU but missing on the host.
absl::Status CheckSubset(const char* field, uint32_t snap, uint32_t host, const CpuIdentity& s,
                         const CpuIdentity& h) {
  uint32_t missing = snap & ~host;
  if (missing == 0) return absl::OkStatus();
  return Mismatch(field, Hex(snap), absl::StrCat(Hex(host), " (missing bits ", Hex(missing), ")"),
                  s, h);
}

}  // namespace

CpuIdentity HostCpuIdentity() {
  CpuIdentity id;
  Regs l0 = Cpuid(0, 0);
  char vendor[12];
  std::memcpy(vendor + 0, &l0.ebx, 4);
  std::memcpy(vendor + 4, &l0.edx, 4);
  std::memcpy(vendor + 8, &l0.ecx, 4);
  id.vendor.assign(vendor, sizeof vendor);
  const uint32_t max_leaf = l0.eax;

  Regs l1 = Cpuid(1, 0);
  const uint32_t base_family = (l1.eax >> 8) & 0xf;
  const uint32_t base_model = (l1.eax >> 4) & 0xf;
  id.family = base_family == 0xf ? base_family + ((l1.eax >> 20) & 0xff) : base_family;
  id.model = (base_family == 0x6 || base_family == 0xf) ? base_model | (((l1.eax >> 16) & 0xf) << 4)
                                                        : base_model;
  id.stepping = l1.eax & 0xf;
  id.leaf1_ecx = l1.ecx;
  id.leaf1_edx = l1.edx;
  if (max_leaf >= 7) {
    Regs l7 = Cpuid(7, 0);
    id.leaf7_ebx = l7.ebx;
    id.leaf7_ecx = l7.ecx;
    id.leaf7_edx = l7.edx;
  }
  if (max_leaf >= 0xd) {
    Regs d0 = Cpuid(0xd, 0);
    id.xcr0_supported = (uint64_t{d0.edx} << 32) | d0.eax;
    id.xsave_size_enabled = d0.ebx;
    id.xsave_size_max = d0.ecx;
    Regs d1 = Cpuid(0xd, 1);
    id.xsave_d1_eax = d1.eax;
    id.xss_supported = (uint64_t{d1.edx} << 32) | d1.ecx;
  }
  struct utsname u {};
  if (::uname(&u) == 0) id.host_kernel = u.release;
  return id;
}

absl::Status CheckCpuCompatible(const CpuIdentity& s, const CpuIdentity& h) {
  if (s.vendor != h.vendor) return Mismatch("vendor", s.vendor, h.vendor, s, h);
  if (s.family != h.family) {
    return Mismatch("family", absl::StrCat(s.family), absl::StrCat(h.family), s, h);
  }
  if (s.model != h.model)
    return Mismatch("model", absl::StrCat(s.model), absl::StrCat(h.model), s, h);
  if (s.stepping != h.stepping) {
    return Mismatch("stepping", absl::StrCat(s.stepping), absl::StrCat(h.stepping), s, h);
  }
  absl::Status st;
  if (!(st = CheckSubset("CPUID.1:ECX", s.leaf1_ecx, h.leaf1_ecx, s, h)).ok()) return st;
  if (!(st = CheckSubset("CPUID.1:EDX", s.leaf1_edx, h.leaf1_edx, s, h)).ok()) return st;
  if (!(st = CheckSubset("CPUID.7.0:EBX", s.leaf7_ebx, h.leaf7_ebx, s, h)).ok()) return st;
  if (!(st = CheckSubset("CPUID.7.0:ECX", s.leaf7_ecx, h.leaf7_ecx, s, h)).ok()) return st;
  if (!(st = CheckSubset("CPUID.7.0:EDX", s.leaf7_edx, h.leaf7_edx, s, h)).ok()) return st;
  // The XSAVE image's layout follows these; any difference can scramble restored FPU state.
  if (s.xcr0_supported != h.xcr0_supported) {
    return Mismatch("XCR0 mask (CPUID.0xD.0)", Hex(s.xcr0_supported), Hex(h.xcr0_supported), s, h);
  }
  if (s.xsave_size_max != h.xsave_size_max) {
    return Mismatch("XSAVE max size (CPUID.0xD.0:ECX)", absl::StrCat(s.xsave_size_max),
                    absl::StrCat(h.xsave_size_max), s, h);
  }
  if (s.xsave_size_enabled != h.xsave_size_enabled) {
    return Mismatch("XSAVE enabled size (CPUID.0xD.0:EBX)", absl::StrCat(s.xsave_size_enabled),
                    absl::StrCat(h.xsave_size_enabled), s, h);
  }
  if (s.xsave_d1_eax != h.xsave_d1_eax) {
    return Mismatch("XSAVE features (CPUID.0xD.1:EAX)", Hex(s.xsave_d1_eax), Hex(h.xsave_d1_eax), s,
                    h);
  }
  if (s.xss_supported != h.xss_supported) {
    return Mismatch("XSS mask (CPUID.0xD.1)", Hex(s.xss_supported), Hex(h.xss_supported), s, h);
  }
  return absl::OkStatus();
}

}  // namespace forkd::snapshot

#include "forkd/vmm/arch/x86_64/cpuid.h"

#include <cstdint>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace forkd::vmm::cpuid {
namespace {

constexpr uint32_t kLeaf1EcxHypervisor = 1u << 31;
constexpr uint32_t kLeaf1EdxHtt = 1u << 28;
constexpr uint32_t kKvmSignatureLeaf = 0x40000000;

}  // namespace

std::vector<kvm_cpuid_entry2> ForVcpu(const std::vector<kvm_cpuid_entry2>& supported,
                                      int vcpu_index, int num_vcpus) {
  std::vector<kvm_cpuid_entry2> out = supported;
  bool has_kvm_leaf = false;
  const auto apic_id = static_cast<uint32_t>(vcpu_index);
  for (auto& e : out) {
    switch (e.function) {
      case 1:
        // EBX[31:24] initial APIC id, [23:16] logical processors per package.
        e.ebx = (e.ebx & 0x0000ffff) | (apic_id << 24) | (uint32_t(num_vcpus) << 16);
        e.ecx |= kLeaf1EcxHypervisor;
        if (num_vcpus > 1) e.edx |= kLeaf1EdxHtt;
        break;
      case 0xb:
      case 0x1f:
        // Extended topology: EDX is the x2APIC id of this vCPU.
        e.edx = apic_id;
        break;
      case kKvmSignatureLeaf:
        has_kvm_leaf = true;
        break;
      default:
        break;
    }
  }
  if (!has_kvm_leaf) {
    // Advertise KVM so the guest finds kvmclock ("KVMKVMKVM\0\0\0").
    kvm_cpuid_entry2 sig{};
    sig.function = kKvmSignatureLeaf;
    sig.eax = kKvmSignatureLeaf + 1;
    std::memcpy(&sig.ebx, "KVMK", 4);
    std::memcpy(&sig.ecx, "VMKV", 4);
    std::memcpy(&sig.edx, "M\0\0\0", 4);
    out.push_back(sig);
  }
  return out;
}

namespace {

enum Reg { kEax, kEbx, kEcx, kEdx };

struct MaskedRegister {
  uint32_t function;
  uint32_t index;
  Reg reg;
  uint32_t ignored;  // bits not compared (set by the OS or by ForVcpu)
};

constexpr MaskedRegister kMask[] = {
    {1, 0, kEcx, (1u << 27) | kLeaf1EcxHypervisor},
    {1, 0, kEdx, kLeaf1EdxHtt},
    {7, 0, kEbx, 0},
    {7, 0, kEcx, 1u << 4},
    {7, 0, kEdx, 0},
    {7, 1, kEax, 0},
    {0xd, 1, kEax, 0},
    {0x80000001, 0, kEcx, 0},
    {0x80000001, 0, kEdx, 0},
    {0x80000008, 0, kEbx, 0},
    {kKvmSignatureLeaf + 1, 0, kEax, 0},
};

uint32_t Get(const kvm_cpuid_entry2& e, Reg r) {
  switch (r) {
    case kEax:
      return e.eax;
    case kEbx:
      return e.ebx;
    case kEcx:
      return e.ecx;
    case kEdx:
      return e.edx;
  }
  return 0;
}

const char* RegName(Reg r) {
  static const char* const names[] = {"eax", "ebx", "ecx", "edx"};
  return names[r];
}

bool Indexed(const kvm_cpuid_entry2& e) { return (e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) != 0; }

const kvm_cpuid_entry2* Find(const std::vector<kvm_cpuid_entry2>& v, uint32_t function,
                             uint32_t index) {
  for (const auto& e : v) {
    if (e.function == function && (!Indexed(e) || e.index == index)) return &e;
  }
  return nullptr;
}

}  // namespace

absl::Status CheckProvidable(const std::vector<kvm_cpuid_entry2>& snapshot,
                             const std::vector<kvm_cpuid_entry2>& supported) {
  for (const MaskedRegister& m : kMask) {
    const kvm_cpuid_entry2* saved = Find(snapshot, m.function, m.index);
    if (saved == nullptr) continue;
    const uint32_t want = Get(*saved, m.reg) & ~m.ignored;
    if (want == 0) continue;
    // The KVM leaves are ForVcpu's when KVM does not list them: nothing to provide.
    const kvm_cpuid_entry2* host = Find(supported, m.function, m.index);
    const uint32_t have = host != nullptr ? Get(*host, m.reg) : 0;
    if ((want & ~have) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("cpuid 0x", absl::Hex(m.function), ".", m.index, " ", RegName(m.reg),
                       ": the snapshot's guest has bits 0x", absl::Hex(want & ~have),
                       " that this host's KVM does not support (snapshot 0x", absl::Hex(want),
                       ", host 0x", absl::Hex(have), ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace forkd::vmm::cpuid

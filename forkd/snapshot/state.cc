#include "forkd/snapshot/state.h"

#include <algorithm>
#include <cstring>

namespace forkd::snapshot {
namespace {
// Byte-for-byte on purpose: "the same snapshot state" means the same bytes,
// padding included, since these structs are what KVM hands back and takes.
template <typename T>
bool SameBytes(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;  // NOLINT(bugprone-suspicious-memory-comparison)
}
}  // namespace

bool operator==(const VcpuState& a, const VcpuState& b) {
  return SameBytes(a.regs, b.regs) && SameBytes(a.sregs, b.sregs) && SameBytes(a.fpu, b.fpu) &&
         a.xsave == b.xsave && SameBytes(a.xcrs, b.xcrs) && a.msrs == b.msrs &&
         SameBytes(a.lapic, b.lapic) && SameBytes(a.events, b.events) &&
         SameBytes(a.debugregs, b.debugregs) && SameBytes(a.mp_state, b.mp_state) &&
         a.tsc_khz == b.tsc_khz && a.cpuid.size() == b.cpuid.size() &&
         std::equal(
             a.cpuid.begin(), a.cpuid.end(), b.cpuid.begin(),
             [](const kvm_cpuid_entry2& x, const kvm_cpuid_entry2& y) { return SameBytes(x, y); });
}

bool operator==(const VmState& a, const VmState& b) {
  return SameBytes(a.pic_master, b.pic_master) && SameBytes(a.pic_slave, b.pic_slave) &&
         SameBytes(a.ioapic, b.ioapic) && SameBytes(a.pit, b.pit) && SameBytes(a.clock, b.clock) &&
         a.host_monotonic_ns == b.host_monotonic_ns && a.host_tsc == b.host_tsc;
}

bool operator==(const SnapshotState& a, const SnapshotState& b) {
  return a.header == b.header && a.vcpus == b.vcpus && a.vm == b.vm && a.devices == b.devices;
}

}  // namespace forkd::snapshot

// The invariants of a SnapshotState, shared by the writer (never write what we would refuse)
// and the parser (never hand the VMM something it cannot apply).
#include <algorithm>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "forkd/snapshot/absl_bridge.h"
#include "forkd/snapshot/state_format.h"

namespace forkd::snapshot {
namespace {

bool ValidDeviceName(const std::string& name) {
  if (name.empty() || name.size() > kMaxDeviceNameBytes) return false;
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!alnum(name[0])) return false;
  return std::all_of(name.begin(), name.end(),
                     [&](char c) { return alnum(c) || c == '_' || c == '-' || c == '.'; });
}

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError("state: " + msg); }

absl::Status ValidateIrqchip(const kvm_irqchip& chip, uint32_t want, const char* field) {
  if (chip.chip_id == want) return absl::OkStatus();
  return Invalid(absl::StrCat("vm ", field, ".chip_id is ", chip.chip_id, ", expected ", want));
}

}  // namespace

absl::Status ValidateMemoryLayout(const std::vector<MemoryRegionLayout>& layout) {
  if (layout.empty()) return Invalid("memory layout: no regions");
  if (layout.size() > kMaxMemoryRegions) {
    return Invalid(absl::StrCat("memory layout: ", layout.size(), " regions exceeds the limit ",
                                kMaxMemoryRegions));
  }
  for (size_t i = 0; i < layout.size(); ++i) {
    const MemoryRegionLayout& r = layout[i];
    const std::string name = absl::StrCat("memory region ", i);
    if (r.size == 0) return Invalid(name + ": size is 0");
    if (r.guest_phys_addr % kGuestPageSize != 0 || r.size % kGuestPageSize != 0 ||
        r.file_offset % kGuestPageSize != 0) {
      return Invalid(absl::StrCat(name, ": guest_phys_addr ", r.guest_phys_addr, ", size ", r.size,
                                  ", file_offset ", r.file_offset, " are not all multiples of ",
                                  kGuestPageSize, " (unaligned)"));
    }
    if (r.guest_phys_addr > UINT64_MAX - r.size || r.file_offset > UINT64_MAX - r.size) {
      return Invalid(name + ": end overflows 64 bits");
    }
    for (size_t j = 0; j < i; ++j) {
      const MemoryRegionLayout& o = layout[j];
      if (r.guest_phys_addr < o.guest_phys_addr + o.size &&
          o.guest_phys_addr < r.guest_phys_addr + r.size) {
        return Invalid(
            absl::StrCat(name, " overlaps memory region ", j, " in guest-physical space"));
      }
      if (r.file_offset < o.file_offset + o.size && o.file_offset < r.file_offset + r.size) {
        return Invalid(absl::StrCat(name, " overlaps memory region ", j, " in the memory file"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CheckLayoutFitsFile(const std::vector<MemoryRegionLayout>& layout,
                                 uint64_t memory_file_size) {
  for (size_t i = 0; i < layout.size(); ++i) {
    const MemoryRegionLayout& r = layout[i];
    if (r.file_offset > memory_file_size || r.size > memory_file_size - r.file_offset) {
      return absl::OutOfRangeError(absl::StrCat(
          "memory region ", i, " (file bytes ", r.file_offset, "..", r.file_offset + r.size,
          ") is larger than the memory file (", memory_file_size, " bytes)"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateState(const SnapshotState& s) {
  const SnapshotHeader& h = s.header;
  if (h.vcpu_count < 1 || h.vcpu_count > kMaxVcpus) {
    return Invalid(absl::StrCat("vcpu_count ", h.vcpu_count, " is out of range 1..", kMaxVcpus));
  }
  if (s.vcpus.size() != h.vcpu_count) {
    return Invalid(absl::StrCat("vcpu_count is ", h.vcpu_count, " but there are ", s.vcpus.size(),
                                " VCPU sections"));
  }
  if (h.cpu.vendor.size() > 12) return Invalid("cpu vendor longer than 12 bytes");
  if (h.cpu.host_kernel.size() > 64) return Invalid("cpu host_kernel longer than 64 bytes");
  if (absl::Status st = ValidateMemoryLayout(h.memory); !st.ok()) return st;
  for (size_t i = 0; i < s.vcpus.size(); ++i) {
    const VcpuState& v = s.vcpus[i];
    if (!v.xsave.empty() && (v.xsave.size() < kMinXsaveBytes || v.xsave.size() > kMaxXsaveBytes)) {
      return Invalid(absl::StrCat("vcpu ", i, ": xsave size ", v.xsave.size(),
                                  " is neither 0 nor in ", kMinXsaveBytes, "..", kMaxXsaveBytes));
    }
    if (v.cpuid.size() > kMaxCpuidEntries) {
      return Invalid(absl::StrCat("vcpu ", i, ": cpuid count ", v.cpuid.size(),
                                  " exceeds the limit ", kMaxCpuidEntries));
    }
    if (v.msrs.size() > kMaxMsrs) {
      return Invalid(
          absl::StrCat("vcpu ", i, ": msr count ", v.msrs.size(), " exceeds the limit ", kMaxMsrs));
    }
  }
  if (absl::Status st = ValidateIrqchip(s.vm.pic_master, KVM_IRQCHIP_PIC_MASTER, "pic_master");
      !st.ok()) {
    return st;
  }
  if (absl::Status st = ValidateIrqchip(s.vm.pic_slave, KVM_IRQCHIP_PIC_SLAVE, "pic_slave");
      !st.ok()) {
    return st;
  }
  if (absl::Status st = ValidateIrqchip(s.vm.ioapic, KVM_IRQCHIP_IOAPIC, "ioapic"); !st.ok()) {
    return st;
  }
  if (s.devices.size() > kMaxDevices) {
    return Invalid(absl::StrCat(s.devices.size(), " devices exceeds the limit ", kMaxDevices));
  }
  std::set<std::string> names;
  for (const DeviceState& d : s.devices) {
    if (!ValidDeviceName(d.name)) {
      return Invalid(absl::StrCat("device name \"", absl::CHexEscape(d.name),
                                  "\" is not [A-Za-z0-9][A-Za-z0-9_.-]{0,63}"));
    }
    if (!names.insert(d.name).second) {
      return Invalid(absl::StrCat("device name \"", d.name, "\" appears twice"));
    }
    if (d.bytes.size() > kMaxDeviceStateBytes) {
      return Invalid(absl::StrCat("device ", d.name, ": ", d.bytes.size(),
                                  " state bytes exceeds the limit ", kMaxDeviceStateBytes));
    }
  }
  return absl::OkStatus();
}

}  // namespace forkd::snapshot

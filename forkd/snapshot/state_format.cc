#include "forkd/snapshot/state_format.h"

#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/errno_status.h"
#include "forkd/snapshot/absl_bridge.h"
#include "forkd/snapshot/byte_io.h"
#include "forkd/snapshot/file_io.h"

namespace forkd::snapshot {
namespace {

constexpr size_t kFileHeaderBytes = sizeof(kStateMagic) + 4 + 4;
constexpr size_t kSectionHeaderBytes = 4 + 4 + 8;
constexpr uint32_t kMaxVendorBytes = 12;
constexpr uint32_t kMaxHostKernelBytes = 64;
constexpr size_t kMsrEntryBytes = 4 + 8;
// HEADER pin_flags bits.
constexpr uint32_t kPinFlagUnpinned = 1u << 0;

// ---- encoding ----

void EncodeHeader(const SnapshotHeader& h, ByteWriter& w) {
  w.U32(h.vcpu_count);
  w.U32(h.guest_protocol_version);
  w.U64(h.created_unix_ns);
  w.Fixed(h.kernel_sha256);
  w.Fixed(h.initrd_sha256);
  w.U32(h.unpinned ? kPinFlagUnpinned : 0);
  const CpuIdentity& c = h.cpu;
  w.String(c.vendor);
  w.U32(c.family);
  w.U32(c.model);
  w.U32(c.stepping);
  w.U32(c.leaf1_ecx);
  w.U32(c.leaf1_edx);
  w.U32(c.leaf7_ebx);
  w.U32(c.leaf7_ecx);
  w.U32(c.leaf7_edx);
  w.U64(c.xcr0_supported);
  w.U32(c.xsave_size_max);
  w.U32(c.xsave_size_enabled);
  w.U32(c.xsave_d1_eax);
  w.U64(c.xss_supported);
  w.String(c.host_kernel);
  w.U32(static_cast<uint32_t>(h.memory.size()));
  for (const MemoryRegionLayout& r : h.memory) {
    w.U64(r.guest_phys_addr);
    w.U64(r.size);
    w.U64(r.file_offset);
  }
}

void EncodeVcpu(uint32_t id, const VcpuState& v, ByteWriter& w) {
  w.U32(id);
  w.Struct(v.regs);
  w.Struct(v.sregs);
  w.Struct(v.fpu);
  w.Blob(v.xsave);
  w.Struct(v.xcrs);
  w.U32(static_cast<uint32_t>(v.msrs.size()));
  for (const MsrEntry& m : v.msrs) {
    w.U32(m.index);
    w.U64(m.value);
  }
  w.Struct(v.lapic);
  w.Struct(v.events);
  w.Struct(v.debugregs);
  w.Struct(v.mp_state);
  w.U32(v.tsc_khz);
  w.U32(static_cast<uint32_t>(v.cpuid.size()));
  for (const kvm_cpuid_entry2& e : v.cpuid) w.Struct(e);
}

void EncodeVm(const VmState& vm, ByteWriter& w) {
  w.Struct(vm.pic_master);
  w.Struct(vm.pic_slave);
  w.Struct(vm.ioapic);
  w.Struct(vm.pit);
  w.Struct(vm.clock);
  w.U64(vm.host_monotonic_ns);
  w.U64(vm.host_tsc);
}

void EncodeDevice(const DeviceState& d, ByteWriter& w) {
  w.String(d.name);
  w.Blob(d.bytes);
}

template <typename Fn>
void Section(ByteWriter& w, SectionTag tag, Fn&& payload) {
  w.U32(static_cast<uint32_t>(tag));
  w.U32(kSectionMandatory);  // everything this version writes is needed to restore
  const size_t len_at = w.size();
  w.U64(0);
  const size_t start = w.size();
  payload(w);
  w.PatchU64(len_at, w.size() - start);
}

// ---- decoding ----

absl::StatusOr<SnapshotHeader> DecodeHeader(ByteReader& r) {
  SnapshotHeader h;
  FORKD_ASSIGN_OR_RETURN(h.vcpu_count, r.U32("vcpu_count"));
  // Checked here, not only in ValidateState, so a bad count is named before any VCPU section.
  if (h.vcpu_count < 1 || h.vcpu_count > kMaxVcpus) {
    return absl::InvalidArgumentError(absl::StrCat(r.context(), ": vcpu_count ", h.vcpu_count,
                                                   " is out of range 1..", kMaxVcpus));
  }
  FORKD_ASSIGN_OR_RETURN(h.guest_protocol_version, r.U32("guest_protocol_version"));
  FORKD_ASSIGN_OR_RETURN(h.created_unix_ns, r.U64("created_unix_ns"));
  FORKD_ASSIGN_OR_RETURN(auto sha, r.Fixed(h.kernel_sha256.size(), "kernel_sha256"));
  std::memcpy(h.kernel_sha256.data(), sha.data(), sha.size());
  FORKD_ASSIGN_OR_RETURN(auto initrd_sha, r.Fixed(h.initrd_sha256.size(), "initrd_sha256"));
  std::memcpy(h.initrd_sha256.data(), initrd_sha.data(), initrd_sha.size());
  FORKD_ASSIGN_OR_RETURN(uint32_t pin_flags, r.U32("pin_flags"));
  if ((pin_flags & ~kPinFlagUnpinned) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: pin_flags %#x has unknown bits", r.context(), pin_flags));
  }
  h.unpinned = (pin_flags & kPinFlagUnpinned) != 0;
  CpuIdentity& c = h.cpu;
  FORKD_ASSIGN_OR_RETURN(c.vendor, r.String(kMaxVendorBytes, "cpu.vendor"));
  FORKD_ASSIGN_OR_RETURN(c.family, r.U32("cpu.family"));
  FORKD_ASSIGN_OR_RETURN(c.model, r.U32("cpu.model"));
  FORKD_ASSIGN_OR_RETURN(c.stepping, r.U32("cpu.stepping"));
  FORKD_ASSIGN_OR_RETURN(c.leaf1_ecx, r.U32("cpu.leaf1_ecx"));
  FORKD_ASSIGN_OR_RETURN(c.leaf1_edx, r.U32("cpu.leaf1_edx"));
  FORKD_ASSIGN_OR_RETURN(c.leaf7_ebx, r.U32("cpu.leaf7_ebx"));
  FORKD_ASSIGN_OR_RETURN(c.leaf7_ecx, r.U32("cpu.leaf7_ecx"));
  FORKD_ASSIGN_OR_RETURN(c.leaf7_edx, r.U32("cpu.leaf7_edx"));
  FORKD_ASSIGN_OR_RETURN(c.xcr0_supported, r.U64("cpu.xcr0_supported"));
  FORKD_ASSIGN_OR_RETURN(c.xsave_size_max, r.U32("cpu.xsave_size_max"));
  FORKD_ASSIGN_OR_RETURN(c.xsave_size_enabled, r.U32("cpu.xsave_size_enabled"));
  FORKD_ASSIGN_OR_RETURN(c.xsave_d1_eax, r.U32("cpu.xsave_d1_eax"));
  FORKD_ASSIGN_OR_RETURN(c.xss_supported, r.U64("cpu.xss_supported"));
  FORKD_ASSIGN_OR_RETURN(c.host_kernel, r.String(kMaxHostKernelBytes, "cpu.host_kernel"));
  FORKD_ASSIGN_OR_RETURN(uint32_t regions, r.U32("memory region count"));
  if (regions > kMaxMemoryRegions) {
    return absl::InvalidArgumentError(absl::StrCat(r.context(), ": memory layout: ", regions,
                                                   " regions exceeds the limit ",
                                                   kMaxMemoryRegions));
  }
  for (uint32_t i = 0; i < regions; ++i) {
    MemoryRegionLayout m;
    FORKD_ASSIGN_OR_RETURN(m.guest_phys_addr, r.U64("memory region guest_phys_addr"));
    FORKD_ASSIGN_OR_RETURN(m.size, r.U64("memory region size"));
    FORKD_ASSIGN_OR_RETURN(m.file_offset, r.U64("memory region file_offset"));
    h.memory.push_back(m);
  }
  FORKD_RETURN_IF_ERROR(r.Finish());
  return h;
}

absl::StatusOr<VcpuState> DecodeVcpu(ByteReader& r, uint32_t want_id) {
  VcpuState v;
  FORKD_ASSIGN_OR_RETURN(uint32_t id, r.U32("vcpu id"));
  if (id != want_id) {
    return absl::InvalidArgumentError(absl::StrCat(r.context(), ": vcpu id ", id, ", expected ",
                                                   want_id,
                                                   " (VCPU sections must be in id order)"));
  }
  FORKD_RETURN_IF_ERROR(r.Struct(&v.regs, "regs"));
  FORKD_RETURN_IF_ERROR(r.Struct(&v.sregs, "sregs"));
  FORKD_RETURN_IF_ERROR(r.Struct(&v.fpu, "fpu"));
  FORKD_ASSIGN_OR_RETURN(v.xsave, r.Blob(kMaxXsaveBytes, "xsave"));
  if (!v.xsave.empty() && v.xsave.size() < kMinXsaveBytes) {
    return absl::InvalidArgumentError(absl::StrCat(r.context(), ": xsave size ", v.xsave.size(),
                                                   " is below the minimum ", kMinXsaveBytes));
  }
  FORKD_RETURN_IF_ERROR(r.Struct(&v.xcrs, "xcrs"));
  FORKD_ASSIGN_OR_RETURN(uint32_t msr_count, r.U32("msr count"));
  if (msr_count > kMaxMsrs) {
    return absl::InvalidArgumentError(
        absl::StrCat(r.context(), ": msr count ", msr_count, " exceeds the limit ", kMaxMsrs));
  }
  if (msr_count * kMsrEntryBytes > r.remaining()) {
    return absl::DataLossError(absl::StrCat(r.context(), ": msr count ", msr_count, " needs ",
                                            msr_count * kMsrEntryBytes, " bytes, ", r.remaining(),
                                            " left (truncated)"));
  }
  v.msrs.reserve(msr_count);
  for (uint32_t i = 0; i < msr_count; ++i) {
    MsrEntry m;
    FORKD_ASSIGN_OR_RETURN(m.index, r.U32("msr index"));
    FORKD_ASSIGN_OR_RETURN(m.value, r.U64("msr value"));
    v.msrs.push_back(m);
  }
  FORKD_RETURN_IF_ERROR(r.Struct(&v.lapic, "lapic"));
  FORKD_RETURN_IF_ERROR(r.Struct(&v.events, "events"));
  FORKD_RETURN_IF_ERROR(r.Struct(&v.debugregs, "debugregs"));
  FORKD_RETURN_IF_ERROR(r.Struct(&v.mp_state, "mp_state"));
  FORKD_ASSIGN_OR_RETURN(v.tsc_khz, r.U32("tsc_khz"));
  FORKD_ASSIGN_OR_RETURN(uint32_t cpuid_count, r.U32("cpuid count"));
  if (cpuid_count > kMaxCpuidEntries) {
    return absl::InvalidArgumentError(absl::StrCat(r.context(), ": cpuid count ", cpuid_count,
                                                   " exceeds the limit ", kMaxCpuidEntries));
  }
  if (cpuid_count * sizeof(kvm_cpuid_entry2) > r.remaining()) {
    return absl::DataLossError(absl::StrCat(r.context(), ": cpuid count ", cpuid_count, " needs ",
                                            cpuid_count * sizeof(kvm_cpuid_entry2), " bytes, ",
                                            r.remaining(), " left (truncated)"));
  }
  v.cpuid.resize(cpuid_count);
  for (kvm_cpuid_entry2& e : v.cpuid) FORKD_RETURN_IF_ERROR(r.Struct(&e, "cpuid entry"));
  FORKD_RETURN_IF_ERROR(r.Finish());
  return v;
}

absl::StatusOr<VmState> DecodeVm(ByteReader& r) {
  VmState vm;
  FORKD_RETURN_IF_ERROR(r.Struct(&vm.pic_master, "pic_master"));
  FORKD_RETURN_IF_ERROR(r.Struct(&vm.pic_slave, "pic_slave"));
  FORKD_RETURN_IF_ERROR(r.Struct(&vm.ioapic, "ioapic"));
  FORKD_RETURN_IF_ERROR(r.Struct(&vm.pit, "pit"));
  FORKD_RETURN_IF_ERROR(r.Struct(&vm.clock, "clock"));
  FORKD_ASSIGN_OR_RETURN(vm.host_monotonic_ns, r.U64("host_monotonic_ns"));
  FORKD_ASSIGN_OR_RETURN(vm.host_tsc, r.U64("host_tsc"));
  FORKD_RETURN_IF_ERROR(r.Finish());
  return vm;
}

absl::StatusOr<DeviceState> DecodeDevice(ByteReader& r) {
  DeviceState d;
  FORKD_ASSIGN_OR_RETURN(d.name, r.String(kMaxDeviceNameBytes, "device name"));
  FORKD_ASSIGN_OR_RETURN(d.bytes, r.Blob(kMaxDeviceStateBytes, "device bytes"));
  FORKD_RETURN_IF_ERROR(r.Finish());
  return d;
}

const char* TagName(uint32_t tag) {
  switch (static_cast<SectionTag>(tag)) {
    case SectionTag::kHeader:
      return "HEADER";
    case SectionTag::kVcpu:
      return "VCPU";
    case SectionTag::kVm:
      return "VM";
    case SectionTag::kDevice:
      return "DEVICE";
    case SectionTag::kEnd:
      return "END";
  }
  return "unknown";
}

absl::Status Truncated(const std::string& what) {
  return absl::DataLossError("state: truncated: " + what);
}
absl::Status Invalid(const std::string& what) {
  return absl::InvalidArgumentError("state: " + what);
}

}  // namespace

absl::StatusOr<std::vector<uint8_t>> SerializeState(const SnapshotState& state) {
  FORKD_RETURN_IF_ERROR(ValidateState(state));
  ByteWriter w;
  w.Fixed({reinterpret_cast<const uint8_t*>(kStateMagic), sizeof kStateMagic});
  w.U32(kFormatVersion);
  w.U32(0);  // reserved
  Section(w, SectionTag::kHeader, [&](ByteWriter& s) { EncodeHeader(state.header, s); });
  for (size_t i = 0; i < state.vcpus.size(); ++i) {
    Section(w, SectionTag::kVcpu,
            [&](ByteWriter& s) { EncodeVcpu(static_cast<uint32_t>(i), state.vcpus[i], s); });
  }
  Section(w, SectionTag::kVm, [&](ByteWriter& s) { EncodeVm(state.vm, s); });
  for (const DeviceState& d : state.devices) {
    Section(w, SectionTag::kDevice, [&](ByteWriter& s) { EncodeDevice(d, s); });
  }
  Section(w, SectionTag::kEnd, [](ByteWriter&) {});
  return w.Take();
}

absl::StatusOr<SnapshotState> ParseState(std::span<const uint8_t> bytes) {
  if (bytes.size() < kFileHeaderBytes) {
    // Check the magic on what we have, so a short non-snapshot file says "bad magic".
    if (!bytes.empty() &&
        std::memcmp(bytes.data(), kStateMagic, std::min(bytes.size(), sizeof kStateMagic)) != 0) {
      return Invalid("bad magic: not a forkd snapshot state file");
    }
    return Truncated(
        absl::StrCat("file header needs ", kFileHeaderBytes, " bytes, file has ", bytes.size()));
  }
  if (std::memcmp(bytes.data(), kStateMagic, sizeof kStateMagic) != 0) {
    return Invalid("bad magic: not a forkd snapshot state file");
  }
  ByteReader file(bytes.subspan(sizeof kStateMagic), "state");
  FORKD_ASSIGN_OR_RETURN(uint32_t version, file.U32("format_version"));
  if (version != kFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "state: format_version ", version, " is not supported (this build reads ", kFormatVersion,
        version < kFormatVersion ? "; snapshot is older" : "; snapshot is newer",
        "): re-create the snapshot"));
  }
  FORKD_ASSIGN_OR_RETURN(uint32_t reserved, file.U32("reserved"));
  if (reserved != 0) return Invalid(absl::StrCat("reserved header field is ", reserved, ", not 0"));

  SnapshotState state;
  bool have_header = false, have_vm = false, have_end = false;
  std::set<std::string> device_names;
  while (!have_end) {
    const size_t offset = sizeof kStateMagic + file.offset();  // from the start of the file
    if (file.remaining() < kSectionHeaderBytes) {
      return Truncated(absl::StrCat("section header at offset ", offset, " needs ",
                                    kSectionHeaderBytes, " bytes, ", file.remaining(),
                                    " left (no END section)"));
    }
    const uint32_t tag = *file.U32("section tag");
    const uint32_t flags = *file.U32("section flags");
    const uint64_t len = *file.U64("section length");
    const std::string where =
        absl::StrFormat("section %s (tag %#x) at offset %u", TagName(tag), tag, offset);
    if (len > kMaxSectionBytes) {
      return Invalid(absl::StrCat("section length overflow: ", where, " claims ", len,
                                  " bytes, limit ", kMaxSectionBytes));
    }
    if (len > file.remaining()) {
      return Truncated(
          absl::StrCat(where, " claims ", len, " bytes, ", file.remaining(), " left in the file"));
    }
    if ((flags & ~kSectionMandatory) != 0) {
      return Invalid(absl::StrFormat("%s has unknown flags %#x", where, flags));
    }
    std::span<const uint8_t> payload = *file.Fixed(static_cast<size_t>(len), "section payload");
    const bool known = std::string_view(TagName(tag)) != "unknown";
    if (!known) {
      if (flags & kSectionMandatory) {
        return absl::UnimplementedError(absl::StrCat(
            "state: unknown mandatory ", where, ": written by a newer forkd? refusing to restore"));
      }
      continue;  // optional data this build does not use
    }
    if (!have_header && static_cast<SectionTag>(tag) != SectionTag::kHeader) {
      return Invalid(where + " before the HEADER section");
    }
    switch (static_cast<SectionTag>(tag)) {
      case SectionTag::kHeader: {
        if (have_header) return Invalid(where + ": duplicate HEADER");
        ByteReader r(payload, "state: " + where);
        FORKD_ASSIGN_OR_RETURN(state.header, DecodeHeader(r));
        state.header.format_version = version;
        have_header = true;
        break;
      }
      case SectionTag::kVcpu: {
        if (have_vm) return Invalid(where + ": VCPU after VM");
        if (state.vcpus.size() >= state.header.vcpu_count) {
          return Invalid(absl::StrCat("vcpu_count is ", state.header.vcpu_count,
                                      " but there are more VCPU sections (", where, ")"));
        }
        ByteReader r(payload, absl::StrCat("state: ", where, " (vcpu ", state.vcpus.size(), ")"));
        FORKD_ASSIGN_OR_RETURN(VcpuState v,
                               DecodeVcpu(r, static_cast<uint32_t>(state.vcpus.size())));
        state.vcpus.push_back(std::move(v));
        break;
      }
      case SectionTag::kVm: {
        if (have_vm) return Invalid(where + ": duplicate VM");
        ByteReader r(payload, "state: " + where);
        FORKD_ASSIGN_OR_RETURN(state.vm, DecodeVm(r));
        have_vm = true;
        break;
      }
      case SectionTag::kDevice: {
        if (!have_vm) return Invalid(where + ": DEVICE before VM");
        if (state.devices.size() >= kMaxDevices) {
          return Invalid(absl::StrCat("more than ", kMaxDevices, " DEVICE sections (", where, ")"));
        }
        ByteReader r(payload, "state: " + where);
        FORKD_ASSIGN_OR_RETURN(DeviceState d, DecodeDevice(r));
        state.devices.push_back(std::move(d));
        break;
      }
      case SectionTag::kEnd:
        if (!payload.empty()) return Invalid(where + ": END section is not empty");
        have_end = true;
        break;
    }
  }
  if (file.remaining() != 0) {
    return Invalid(absl::StrCat(file.remaining(), " trailing bytes after the END section"));
  }
  if (!have_vm) return Invalid("no VM section");
  if (state.vcpus.size() != state.header.vcpu_count) {
    return Invalid(absl::StrCat("vcpu_count is ", state.header.vcpu_count, " but there are ",
                                state.vcpus.size(), " VCPU sections"));
  }
  FORKD_RETURN_IF_ERROR(ValidateState(state));
  return state;
}

absl::Status WriteState(const std::filesystem::path& path, const SnapshotState& state) {
  auto bytes = SerializeState(state);
  if (!bytes.ok()) return Annotate(bytes.status(), "write " + path.string());
  return WriteFileAtomically(path, *bytes);
}

absl::StatusOr<SnapshotState> ReadState(const std::filesystem::path& path) {
  auto bytes = ReadFileBounded(path, kMaxStateFileBytes);
  if (!bytes.ok()) return bytes.status();
  auto state = ParseState(*bytes);
  if (!state.ok()) return Annotate(state.status(), path.string());
  return state;
}

}  // namespace forkd::snapshot

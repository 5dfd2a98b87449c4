// The plain data a snapshot holds. The VMM fills these from KVM ioctls on save and feeds them back
// on restore; devices fill DeviceState::bytes from their own State structs (see byte_io.h). Nothing
// here knows how it is encoded on disk (state_format.h) or verified (manifest.h).
#pragma once

#include <linux/kvm.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "forkd/snapshot/cpu_identity.h"

namespace forkd::snapshot {

// The format this build writes and the only one it reads. Bump on any change to the encoding of
// an existing section; restore refuses every other value, older or newer (README.md).
// 2: HEADER gained initrd_sha256 and the pin flags (the guest pin, docs/guest-pin.md), and each
// vCPU its CPUID (VcpuState::cpuid).
inline constexpr uint32_t kFormatVersion = 2;

// Limits that keep an untrusted file from asking for absurd work or memory.
inline constexpr uint32_t kMaxVcpus = 4;
inline constexpr uint32_t kMaxMsrs = 1024;
inline constexpr uint32_t kMaxCpuidEntries = 256;  // KVM's own limit (KVM_MAX_CPUID_ENTRIES)  //
                                                   // ~50 are saved in practice (kvm-feasibility.md)
// The legacy 4 KiB KVM_GET_XSAVE region. Not sizeof(kvm_xsave): in C++ the kernel header's
// flexible-array shim (__DECLARE_FLEX_ARRAY) adds padding and makes it 4100.
inline constexpr uint32_t kMinXsaveBytes = sizeof(kvm_xsave::region);
inline constexpr uint32_t kMaxXsaveBytes = 64 * 1024;  // KVM_CAP_XSAVE2 incl. AMX < 12 KiB
inline constexpr uint32_t kMaxDevices = 64;
inline constexpr uint32_t kMaxDeviceStateBytes = 16 * 1024 * 1024;
inline constexpr uint32_t kMaxDeviceNameBytes = 64;
inline constexpr uint32_t kMaxMemoryRegions = 16;
inline constexpr uint64_t kGuestPageSize = 4096;

struct MsrEntry {
  uint32_t index = 0;
  uint64_t value = 0;
  friend bool operator==(const MsrEntry&, const MsrEntry&) = default;
};

// One vCPU, exactly as KVM reports it. The kvm_* structs are stored as their raw x86-64 bytes
// (padding included), so a round trip is byte-for-byte.
struct VcpuState {
  kvm_regs regs{};
  kvm_sregs sregs{};
  // KVM_GET_FPU. Redundant with `xsave` when the host has XSAVE; the only FPU/SSE state when not.
  kvm_fpu fpu{};
  // KVM_GET_XSAVE (4096 bytes) or KVM_GET_XSAVE2 (KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) bytes).
  // Size is 0 (host without XSAVE: restore from `fpu`) or in [kMinXsaveBytes, kMaxXsaveBytes].
  std::vector<uint8_t> xsave;
  kvm_xcrs xcrs{};
  // Restore these one at a time: KVM_SET_MSRS stops at the first MSR it rejects
  // (docs/host-facts.md).
  std::vector<MsrEntry> msrs;
  kvm_lapic_state lapic{};
  kvm_vcpu_events events{};
  kvm_debugregs debugregs{};
  kvm_mp_state mp_state{};
  // KVM_GET_TSC_KHZ at save time; needed to convert a host-TSC delta into kvmclock nanoseconds,
  // and set on restore (KVM_SET_TSC_KHZ): the guest calibrated against it.
  uint32_t tsc_khz = 0;
  // The CPUID the guest was given (KVM_SET_CPUID2 entries, forkd/vmm/arch/x86_64/cpuid.h), set
  // again on restore; a host whose KVM cannot provide its feature bits refuses the restore.
  std::vector<kvm_cpuid_entry2> cpuid;
};

// VM-wide KVM state.
struct VmState {
  kvm_irqchip pic_master{};  // chip_id KVM_IRQCHIP_PIC_MASTER
  kvm_irqchip pic_slave{};   // chip_id KVM_IRQCHIP_PIC_SLAVE
  kvm_irqchip ioapic{};      // chip_id KVM_IRQCHIP_IOAPIC
  kvm_pit_state2 pit{};
  kvm_clock_data clock{};
  // Host clocks read right after KVM_GET_CLOCK. kvm_pvm cannot offset the guest TSC, so restore
  // must advance kvmclock by the host time elapsed since the save or the guest wedges in its timer
  // code (kvm-feasibility.md "Snapshot / restore").
  uint64_t host_monotonic_ns = 0;  // CLOCK_MONOTONIC
  uint64_t host_tsc = 0;           // rdtsc
};

// One device's own snapshot, opaque to this library. The device encodes its State struct with
// ByteWriter and decodes it with ByteReader (byte_io.h); the snapshot code never looks inside.
struct DeviceState {
  std::string name;  // unique per snapshot; [A-Za-z0-9][A-Za-z0-9_.-]{0,63}, e.g. "virtio-rng"
  std::vector<uint8_t> bytes;
  friend bool operator==(const DeviceState&, const DeviceState&) = default;
};

// Where one guest-physical range lives in the `memory` file. All three values are multiples of
// kGuestPageSize; ranges overlap neither in guest-physical space nor in the file.
struct MemoryRegionLayout {
  uint64_t guest_phys_addr = 0;
  uint64_t size = 0;
  uint64_t file_offset = 0;
  friend bool operator==(const MemoryRegionLayout&, const MemoryRegionLayout&) = default;
};

struct SnapshotHeader {
  // What the file said. The writer always writes kFormatVersion regardless of this value.
  uint32_t format_version = kFormatVersion;
  CpuIdentity cpu;  // the host the snapshot was taken on; see CheckCompatible
  std::vector<MemoryRegionLayout> memory;
  uint32_t vcpu_count = 0;  // 1..kMaxVcpus, equals SnapshotState::vcpus.size()
  // The guest pin (docs/guest-pin.md): SHA-256 of the kernel image and of the initramfs bytes the
  // VM booted (the initramfs digest is that of the empty input when it had none), the agent
  // protocol its guest speaks (agent/protocol.h), and whether the boot was unpinned
  // (--insecure-skip-guest-verify: nobody checked the digests; a pinned restore refuses it).
  // Covered by the manifest's state hash like everything in the state file.
  std::array<uint8_t, 32> kernel_sha256{};
  std::array<uint8_t, 32> initrd_sha256{};
  uint32_t guest_protocol_version = 0;
  bool unpinned = false;
  uint64_t created_unix_ns = 0;
  friend bool operator==(const SnapshotHeader&, const SnapshotHeader&) = default;
};

// Everything in the `state` file. The device list of the snapshot is `devices` (names in order):
// the VMM recreates exactly these devices on restore and hands each its bytes.
struct SnapshotState {
  SnapshotHeader header;
  std::vector<VcpuState> vcpus;  // vcpus[i] is vCPU id i
  VmState vm;
  std::vector<DeviceState> devices;
};

// Byte-for-byte equality (the kvm_* structs have no operator==).
bool operator==(const VcpuState& a, const VcpuState& b);
bool operator==(const VmState& a, const VmState& b);
bool operator==(const SnapshotState& a, const SnapshotState& b);

}  // namespace forkd::snapshot

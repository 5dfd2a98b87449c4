// Snapshot and restore of a whole Machine, in the on-disk format of
// forkd/snapshot (memory + state + manifest in one directory). This file is
// the only seam between the VMM's state structs and the format's.
//
// Save:    Pause() -> guest RAM to dir/memory (sparse) -> collect state ->
//          snapshot::SaveSnapshot (state, then manifest as commit point).
// Save stamps the machine's guest pin into the state header.
// Restore: OpenSnapshot (state hash, version and CPU checks) -> guest pin
//          check (RestoreOptions::expect_pin) -> map
//          dir/memory MAP_PRIVATE -> new VM: memory slot, then irqchip/PIT
//          -> vCPU/VM/device state -> kvmclock advanced -> ready to Start().
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "forkd/vmm/machine.h"
#include "kernel-stage/guest_pin.h"

namespace forkd::vmm {

// `machine` must be paused (or ended); it stays paused. The memory file is
// written new and renamed into place; a directory whose snapshot a running
// fork maps (GuestMemory::FilePrivate holds it locked) is refused with
// FailedPrecondition.
absl::Status SaveSnapshot(const Machine& machine, const std::filesystem::path& dir);

struct RestoreReport {
  // Host-specific MSRs KVM refused to set (msr::IsHostSpecific; any other
  // refusal fails the restore).
  int rejected_msrs = 0;
};

// What a restore needs besides the snapshot: the fork's own host-side
// endpoints (its vsock socket and tap; the snapshot's are never reused).
struct RestoreOptions {
  // A snapshot with virtio-vsock needs the fork's own socket path; the guest
  // learns its old connections are reset.
  std::string vsock_uds_path;
  // Queue notifications through KVM_IOEVENTFD (VirtioConfig::ioeventfd).
  bool ioeventfd = true;
  // A snapshot with virtio-net needs the fork's own tap, and optionally a MAC
  // that replaces the snapshot's.
  std::optional<NetConfig> net;
  // Rate limits that replace the snapshot's (unset: the snapshot's).
  RateLimits limits;
  // The pin this restore must match (docs/guest-pin.md). When set, a snapshot stamped with
  // another kernel or initramfs digest or agent protocol, or an unpinned one, is refused with
  // FAILED_PRECONDITION naming both values (kernel_stage::CheckPin) before any VM is created.
  // Unset: any pin is accepted and carried over (the snapshot's own stamp is kept either way).
  std::optional<kernel_stage::GuestPin> expect_pin;
  // A fresh VM generation ID and its notify (Machine::RestoreState). Only
  // forkd-vmm-test-hook's --test-same-vm-generation clears it: the "VMGenID off"
  // control of tests/svm/linux_vmgenid_test.cc.
  bool new_vm_generation = true;
};
absl::StatusOr<std::unique_ptr<Machine>> RestoreSnapshot(std::shared_ptr<const Kvm> kvm,
                                                         const std::filesystem::path& dir,
                                                         SerialConfig serial,
                                                         RestoreReport* report = nullptr,
                                                         const RestoreOptions& options = {});

}  // namespace forkd::vmm

// Builds a Machine: cold boot of a kernel image through the 64-bit Linux
// boot protocol, or restore of a snapshot directory.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "agent/protocol.h"
#include "forkd/vmm/machine.h"
#include "forkd/vmm/vstate/kvm.h"
#include "kernel-stage/digest.h"
#include "kernel-stage/guest_pin.h"

namespace forkd::vmm {

struct BootConfig {
  std::string kernel_path;  // bzImage or ELF (vmlinux, probe guest)
  std::string initrd_path;  // optional
  std::string cmdline;
  uint64_t mem_size = 256 * 1024 * 1024;
  int vcpus = 1;
  SerialConfig serial;
  // When set, guest RAM is this file mapped MAP_SHARED instead of anonymous
  // memory (a template whose RAM is its snapshot memory file).
  std::string shared_memory_path;
  VirtioConfig virtio;
  // Appends `virtio_mmio.device=...` for each virtio device to the command
  // line (Linux guests); the probe guest finds its devices at fixed slots.
  bool declare_virtio_on_cmdline = true;
  // ACPI tables (acpi/tables.h: MADT with every vCPU, DSDT with every virtio
  // device) and the VM generation ID: how a stock kernel finds CPUs and
  // devices. Guests that do not read ACPI (the probe) are unaffected.
  bool acpi = true;

  // The guest pin (docs/guest-pin.md). BuildForBoot always hashes the kernel and initramfs bytes
  // it reads (kernel-stage/digest.h) and stamps them, with `agent_protocol`, on the Machine, so
  // every snapshot of it carries them. With `expect_kernel_sha256` set the boot is pinned: the
  // bytes loaded -- not the file as it was at some earlier check -- must have exactly these
  // digests (the initramfs digest is that of the empty input when there is no initramfs), or
  // BuildForBoot fails with FAILED_PRECONDITION naming both digests before creating the VM.
  // Without it the machine is stamped unpinned (forkd-vmm requires the digests unless
  // --insecure-skip-guest-verify).
  std::optional<kernel_stage::Sha256Digest> expect_kernel_sha256;
  std::optional<kernel_stage::Sha256Digest> expect_initrd_sha256;
  uint32_t agent_protocol = agent::kProtocolVersion;
};

// Creates and configures a machine ready to Start().
absl::StatusOr<std::unique_ptr<Machine>> BuildForBoot(std::shared_ptr<const Kvm> kvm,
                                                      const BootConfig& cfg);

// The guest pin of a boot from the kernel and initramfs bytes read for it (`initrd` empty when
// there is none): their digests, cfg.agent_protocol, unpinned unless cfg.expect_kernel_sha256.
// With expectations, FAILED_PRECONDITION naming both digests on a mismatch (IsPinMismatch);
// INVALID_ARGUMENT for an initramfs digest without a kernel digest, or a pinned boot of an
// initramfs without its digest. BuildForBoot calls it before creating the VM.
absl::StatusOr<kernel_stage::GuestPin> PinLoadedImages(const BootConfig& cfg,
                                                       std::string_view kernel,
                                                       std::string_view initrd);

// Reads a whole file (kernel, initramfs).
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

}  // namespace forkd::vmm

// Builds a Machine: cold boot of a kernel image through the 64-bit Linux
// boot protocol, or restore of a snapshot directory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "forkd/vmm/machine.h"
#include "forkd/vmm/vstate/kvm.h"

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
};

// Creates and configures a machine ready to Start().
absl::StatusOr<std::unique_ptr<Machine>> BuildForBoot(std::shared_ptr<const Kvm> kvm,
                                                      const BootConfig& cfg);

// Reads a whole file (kernel, initramfs).
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

}  // namespace forkd::vmm

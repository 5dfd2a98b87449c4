// The ACPI tables forkd-vmm gives a guest, so a stock distribution kernel
// finds its CPUs and devices without command-line declarations:
//   RSDP -> XSDT -> FADT (hardware-reduced) -> DSDT, and MADT.
// The DSDT holds each virtio-mmio device as LNRO0005 (Linux's virtio_mmio
// ACPI id) with its window and interrupt, and the VM generation ID device
// (vmgenid.h) with the Generic Event Device that notifies it.
// Firecracker's ACPI support is the reference design (forkd/vmm/README.md).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "forkd/vmm/acpi/aml.h"
#include "forkd/vmm/vstate/memory.h"

namespace forkd::vmm::acpi {

using aml::Bytes;

struct VirtioMmioDevice {
  uint64_t addr = 0;
  uint32_t size = 0;
  uint32_t gsi = 0;
};

struct AcpiConfig {
  int num_vcpus = 1;
  // COM1 (PNP0501, 0x3f8, IRQ 4). Needed under ACPI: without a _CRS for it
  // Linux never maps ISA IRQ 4 onto the IOAPIC, the UART cannot get its
  // interrupt and user space gets no console (kernel messages, polled, do).
  bool com1 = true;
  std::vector<VirtioMmioDevice> virtio;
  // The VM generation ID device, its 16 bytes at vmgenid_addr, notified
  // through a GED on ged_gsi.
  bool vmgenid = true;
  uint64_t vmgenid_addr = 0;
  uint32_t ged_gsi = 0;
};

// Table pieces, each a complete table with its checksum set.
Bytes BuildDsdt(const AcpiConfig& cfg);
Bytes BuildMadt(int num_vcpus);
Bytes BuildFadt(uint64_t dsdt_addr);
Bytes BuildXsdt(const std::vector<uint64_t>& table_addrs);
Bytes BuildRsdp(uint64_t xsdt_addr);

// The sum of all bytes, mod 256 (0 for a table with a correct checksum).
uint8_t Sum(const uint8_t* data, size_t len);

// Writes every table into guest memory at the addresses in layout.h
// (kAcpiRegionStart..+kAcpiRegionSize, reserved in the e820 map); the RSDP at
// kRsdpAddr, where Linux also finds it by scanning 0xE0000..0xFFFFF.
absl::Status WriteTables(const GuestMemory& mem, const AcpiConfig& cfg);

}  // namespace forkd::vmm::acpi

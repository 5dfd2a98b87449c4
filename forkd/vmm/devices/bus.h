// Bus: address ranges -> devices, one for port I/O and one for MMIO.
// Devices register a range before any vCPU runs; lookups after that are
// read-only, so the hot path takes no lock (devices lock themselves).
// Virtio-mmio devices plug into the MMIO bus the same way the UART plugs
// into the port bus.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>

#include "absl/status/status.h"

namespace forkd::vmm {

class BusDevice {
 public:
  virtual ~BusDevice() = default;
  // `offset` is relative to the base the device registered at.
  virtual void Read(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void Write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

class Bus {
 public:
  // Fails when [base, base+len) overlaps a registered range or is empty.
  absl::Status Register(uint64_t base, uint64_t len, std::shared_ptr<BusDevice> device,
                        std::string name);
  // False when no device covers the whole access (the caller decides what an
  // unclaimed access reads as).
  bool Read(uint64_t addr, std::span<uint8_t> data) const;
  bool Write(uint64_t addr, std::span<const uint8_t> data) const;

 private:
  struct Range {
    uint64_t len;
    std::shared_ptr<BusDevice> device;
    std::string name;
  };
  const std::pair<const uint64_t, Range>* Find(uint64_t addr, uint64_t len) const;
  std::map<uint64_t, Range> ranges_;  // keyed by base
};

}  // namespace forkd::vmm

#include "forkd/vmm/devices/bus.h"

#include "absl/strings/str_cat.h"

namespace forkd::vmm {

absl::Status Bus::Register(uint64_t base, uint64_t len, std::shared_ptr<BusDevice> device,
                           std::string name) {
  if (len == 0 || base + len < base) {
    return absl::InvalidArgumentError(absl::StrCat("bus range for ", name, " is empty or wraps"));
  }
  auto next = ranges_.lower_bound(base);
  if (next != ranges_.end() && next->first < base + len) {
    return absl::AlreadyExistsError(
        absl::StrCat(name, " at ", absl::Hex(base), " overlaps ", next->second.name));
  }
  if (next != ranges_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second.len > base) {
      return absl::AlreadyExistsError(
          absl::StrCat(name, " at ", absl::Hex(base), " overlaps ", prev->second.name));
    }
  }
  ranges_.emplace(base, Range{len, std::move(device), std::move(name)});
  return absl::OkStatus();
}

const std::pair<const uint64_t, Bus::Range>* Bus::Find(uint64_t addr, uint64_t len) const {
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return nullptr;
  --it;
  if (addr + len > it->first + it->second.len) return nullptr;
  return &*it;
}

bool Bus::Read(uint64_t addr, std::span<uint8_t> data) const {
  const auto* r = Find(addr, data.size());
  if (r == nullptr) return false;
  r->second.device->Read(addr - r->first, data);
  return true;
}

bool Bus::Write(uint64_t addr, std::span<const uint8_t> data) const {
  const auto* r = Find(addr, data.size());
  if (r == nullptr) return false;
  r->second.device->Write(addr - r->first, data);
  return true;
}

}  // namespace forkd::vmm

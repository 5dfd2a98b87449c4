// Mapping: the one owner of an mmap()ed range. Move-only; munmap in one place.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include "absl/status/statusor.h"

namespace forkd::vmm {

class Mapping {
 public:
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  Mapping(Mapping&& other) noexcept
      : addr_(std::exchange(other.addr_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  Mapping& operator=(Mapping&& other) noexcept {
    if (this != &other) {
      Reset();
      addr_ = std::exchange(other.addr_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ~Mapping() { Reset(); }

  // mmap(nullptr, size, prot, flags, fd, offset); `what` names it in errors.
  static absl::StatusOr<Mapping> Map(size_t size, int prot, int flags, int fd, off_t offset,
                                     const char* what);

  uint8_t* data() const { return static_cast<uint8_t*>(addr_); }
  size_t size() const { return size_; }
  std::span<uint8_t> bytes() const { return {data(), size_}; }
  bool valid() const { return addr_ != nullptr; }

  void Reset() {
    // munmap of a range we mapped cannot fail in a way we could act on.
    if (addr_ != nullptr) (void)::munmap(addr_, size_);
    addr_ = nullptr;
    size_ = 0;
  }

 private:
  Mapping(void* addr, size_t size) : addr_(addr), size_(size) {}
  void* addr_ = nullptr;
  size_t size_ = 0;
};

}  // namespace forkd::vmm

// The byte stream a device harness consumes (FuzzInput) and the encoder the
// seed writer uses to produce it (FuzzScript). Reads past the end yield
// zeros, so every input is a complete program: the harness never rejects an
// input, it only runs out of operations.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

namespace forkd::vmm::fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const { return pos_ >= size_; }
  size_t remaining() const { return size_ - pos_; }

  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t U16() { return static_cast<uint16_t>(U8() | (U8() << 8)); }
  uint32_t U32() { return U16() | (uint32_t{U16()} << 16); }
  uint64_t U64() { return U32() | (uint64_t{U32()} << 32); }
  // Up to `n` bytes (fewer at the end of the input).
  std::span<const uint8_t> Bytes(size_t n) {
    n = std::min(n, remaining());
    std::span<const uint8_t> out(data_ + pos_, n);
    pos_ += n;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

class FuzzScript {
 public:
  FuzzScript& U8(uint8_t v) {
    bytes_.push_back(v);
    return *this;
  }
  FuzzScript& U16(uint16_t v) {
    return U8(static_cast<uint8_t>(v)).U8(static_cast<uint8_t>(v >> 8));
  }
  FuzzScript& U32(uint32_t v) {
    return U16(static_cast<uint16_t>(v)).U16(static_cast<uint16_t>(v >> 16));
  }
  FuzzScript& U64(uint64_t v) {
    return U32(static_cast<uint32_t>(v)).U32(static_cast<uint32_t>(v >> 32));
  }
  FuzzScript& Bytes(std::span<const uint8_t> b) {
    bytes_.insert(bytes_.end(), b.begin(), b.end());
    return *this;
  }
  FuzzScript& Text(const std::string& s) {
    return Bytes({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

}  // namespace forkd::vmm::fuzz

// Little-endian encoding helpers for snapshot sections and for devices that encode their own
// State structs into DeviceState::bytes.
//
// ByteReader never reads past its span: every read checks the remaining length first and fails
// with DATA_LOSS naming the field ("virtio-rng: queue_size: needs 2 bytes at offset 10, 1 left").
// Length-prefixed reads check the length against a caller-given maximum AND the bytes actually
// left before allocating, so an untrusted length can never make us allocate more than the input.
//
//   ByteWriter w;                                   ByteReader r(bytes, "virtio-rng");
//   w.U16(state.queue_size);                        FORKD_ASSIGN_OR_RETURN(s.queue_size,
//   w.Blob(state.config);                                                  r.U16("queue_size"));
//   device.bytes = w.Take();                        FORKD_ASSIGN_OR_RETURN(s.config,
//                                                       r.Blob(256, "config"));
//                                                   FORKD_RETURN_IF_ERROR(r.Finish());
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace forkd::snapshot {

static_assert(std::endian::native == std::endian::little,
              "snapshot encoding copies little-endian x86-64 structs as raw bytes");

class ByteWriter {
 public:
  void U8(uint8_t v) { bytes_.push_back(v); }
  void U16(uint16_t v) { Raw(&v, sizeof v); }
  void U32(uint32_t v) { Raw(&v, sizeof v); }
  void U64(uint64_t v) { Raw(&v, sizeof v); }
  void Bool(bool v) { U8(v ? 1 : 0); }
  // Fixed-size bytes with no length prefix; the reader must know the size.
  void Fixed(std::span<const uint8_t> b) { Raw(b.data(), b.size()); }
  // u32 length + bytes.
  void Blob(std::span<const uint8_t> b);
  // u32 length + bytes.
  void String(std::string_view s);
  // The raw bytes of a trivially copyable struct (kvm_regs, ...), preceded by its u32 size so a
  // reader built against a different struct size fails with a clear message.
  template <typename T>
  void Struct(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    U32(static_cast<uint32_t>(sizeof(T)));
    Raw(&v, sizeof(T));
  }

  size_t size() const { return bytes_.size(); }
  // Overwrites a u64 written earlier at `offset` (used to patch section lengths).
  void PatchU64(size_t offset, uint64_t v) { std::memcpy(bytes_.data() + offset, &v, sizeof v); }
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  std::vector<uint8_t> Take() { return std::move(bytes_); }

 private:
  void Raw(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    bytes_.insert(bytes_.end(), b, b + n);
  }
  std::vector<uint8_t> bytes_;
};

class ByteReader {
 public:
  // `context` prefixes every error ("state section VCPU[1]", "virtio-rng").
  ByteReader(std::span<const uint8_t> bytes, std::string context)
      : bytes_(bytes), context_(std::move(context)) {}

  absl::StatusOr<uint8_t> U8(std::string_view field);
  absl::StatusOr<uint16_t> U16(std::string_view field);
  absl::StatusOr<uint32_t> U32(std::string_view field);
  absl::StatusOr<uint64_t> U64(std::string_view field);
  // Accepts only 0 or 1.
  absl::StatusOr<bool> Bool(std::string_view field);
  // A view of the next `n` bytes (no copy); valid as long as the input span.
  absl::StatusOr<std::span<const uint8_t>> Fixed(size_t n, std::string_view field);
  // u32 length (<= max_len) + bytes.
  absl::StatusOr<std::vector<uint8_t>> Blob(uint32_t max_len, std::string_view field);
  absl::StatusOr<std::string> String(uint32_t max_len, std::string_view field);
  // Reads what ByteWriter::Struct wrote; the stored size must equal sizeof(T).
  template <typename T>
  absl::Status Struct(T* out, std::string_view field) {
    static_assert(std::is_trivially_copyable_v<T>);
    auto size = U32(field);
    if (!size.ok()) return size.status();
    if (*size != sizeof(T)) return SizeMismatch(field, *size, sizeof(T));
    auto raw = Fixed(sizeof(T), field);
    if (!raw.ok()) return raw.status();
    std::memcpy(out, raw->data(), sizeof(T));
    return absl::OkStatus();
  }
  // INVALID_ARGUMENT unless every byte was consumed: trailing garbage means the writer and reader
  // disagree about the layout, which must never pass silently.
  absl::Status Finish() const;

  size_t offset() const { return offset_; }
  size_t remaining() const { return bytes_.size() - offset_; }
  const std::string& context() const { return context_; }

 private:
  absl::Status Need(size_t n, std::string_view field) const;
  absl::Status SizeMismatch(std::string_view field, uint64_t got, uint64_t want) const;

  std::span<const uint8_t> bytes_;
  size_t offset_ = 0;
  std::string context_;
};

}  // namespace forkd::snapshot

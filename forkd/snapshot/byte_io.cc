#include "forkd/snapshot/byte_io.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "forkd/snapshot/absl_bridge.h"

namespace forkd::snapshot {

void ByteWriter::Blob(std::span<const uint8_t> b) {
  U32(static_cast<uint32_t>(b.size()));
  Fixed(b);
}

void ByteWriter::String(std::string_view s) {
  Blob({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
}

absl::Status ByteReader::Need(size_t n, std::string_view field) const {
  if (n <= remaining()) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat(context_, ": ", AV(field), ": truncated: needs ", n,
                                          " bytes at offset ", offset_, ", ", remaining(),
                                          " left"));
}

absl::Status ByteReader::SizeMismatch(std::string_view field, uint64_t got, uint64_t want) const {
  return absl::InvalidArgumentError(
      absl::StrCat(context_, ": ", AV(field), ": size ", got, ", expected ", want));
}

absl::StatusOr<std::span<const uint8_t>> ByteReader::Fixed(size_t n, std::string_view field) {
  if (absl::Status s = Need(n, field); !s.ok()) return s;
  std::span<const uint8_t> out = bytes_.subspan(offset_, n);
  offset_ += n;
  return out;
}

namespace {
template <typename T>
absl::StatusOr<T> ReadLe(ByteReader& r, std::string_view field) {
  auto raw = r.Fixed(sizeof(T), field);
  if (!raw.ok()) return raw.status();
  T v;
  std::memcpy(&v, raw->data(), sizeof(T));
  return v;
}
}  // namespace

absl::StatusOr<uint8_t> ByteReader::U8(std::string_view field) {
  return ReadLe<uint8_t>(*this, field);
}
absl::StatusOr<uint16_t> ByteReader::U16(std::string_view field) {
  return ReadLe<uint16_t>(*this, field);
}
absl::StatusOr<uint32_t> ByteReader::U32(std::string_view field) {
  return ReadLe<uint32_t>(*this, field);
}
absl::StatusOr<uint64_t> ByteReader::U64(std::string_view field) {
  return ReadLe<uint64_t>(*this, field);
}

absl::StatusOr<bool> ByteReader::Bool(std::string_view field) {
  auto v = U8(field);
  if (!v.ok()) return v.status();
  if (*v > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(context_, ": ", AV(field), ": bool value ", *v, " is not 0 or 1"));
  }
  return *v == 1;
}

absl::StatusOr<std::vector<uint8_t>> ByteReader::Blob(uint32_t max_len, std::string_view field) {
  auto len = U32(field);
  if (!len.ok()) return len.status();
  // Limit first, then availability: only then is the allocation below bounded by real input.
  if (*len > max_len) {
    return absl::InvalidArgumentError(
        absl::StrCat(context_, ": ", AV(field), ": length ", *len, " exceeds the limit ", max_len));
  }
  auto raw = Fixed(*len, field);
  if (!raw.ok()) return raw.status();
  return std::vector<uint8_t>(raw->begin(), raw->end());
}

absl::StatusOr<std::string> ByteReader::String(uint32_t max_len, std::string_view field) {
  auto blob = Blob(max_len, field);
  if (!blob.ok()) return blob.status();
  return std::string(blob->begin(), blob->end());
}

absl::Status ByteReader::Finish() const {
  if (remaining() == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(context_, ": ", remaining(), " unexpected trailing bytes at offset ", offset_));
}

}  // namespace forkd::snapshot

#include "forkd/vmm/acpi/aml.h"

#include <algorithm>
#include <cstddef>
#include <string>

namespace forkd::vmm::acpi::aml {
namespace {

constexpr uint8_t kZeroOp = 0x00;
constexpr uint8_t kOneOp = 0x01;
constexpr uint8_t kNameOp = 0x08;
constexpr uint8_t kBytePrefix = 0x0a;
constexpr uint8_t kWordPrefix = 0x0b;
constexpr uint8_t kDWordPrefix = 0x0c;
constexpr uint8_t kStringPrefix = 0x0d;
constexpr uint8_t kQWordPrefix = 0x0e;
constexpr uint8_t kScopeOp = 0x10;
constexpr uint8_t kBufferOp = 0x11;
constexpr uint8_t kPackageOp = 0x12;
constexpr uint8_t kMethodOp = 0x14;
constexpr uint8_t kDualNamePrefix = 0x2e;
constexpr uint8_t kMultiNamePrefix = 0x2f;
constexpr uint8_t kExtOpPrefix = 0x5b;
constexpr uint8_t kDeviceOp = 0x82;  // after kExtOpPrefix
constexpr uint8_t kRootChar = 0x5c;
constexpr uint8_t kArg0Op = 0x68;
constexpr uint8_t kNotifyOp = 0x86;
constexpr uint8_t kLEqualOp = 0x93;
constexpr uint8_t kIfOp = 0xa0;
constexpr uint8_t kReturnOp = 0xa4;
constexpr uint8_t kOnesOp = 0xff;

// Resource descriptors (ACPI 6.4 section 6.4).
constexpr uint8_t kEndTag = 0x79;      // small item, length 1
constexpr uint8_t kIoPort = 0x47;      // small item, length 7
constexpr uint8_t kIrqNoFlags = 0x22;  // small item, length 2
constexpr uint8_t kMemory32Fixed = 0x86;
constexpr uint8_t kExtendedInterrupt = 0x89;

// resize + copy rather than insert: GCC 12's -Warray-bounds misfires on
// vector::insert into a small vector of known size.
void Append(Bytes& out, const Bytes& b) {
  const size_t at = out.size();
  out.resize(at + b.size());
  std::copy(b.begin(), b.end(), out.begin() + static_cast<std::ptrdiff_t>(at));
}
void AppendLe(Bytes& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
Bytes Concat(const std::vector<Bytes>& parts) {
  Bytes out;
  for (const auto& p : parts) Append(out, p);
  return out;
}

// opcode(s) PkgLength body
Bytes Packaged(const Bytes& opcode, const Bytes& body) {
  Bytes out = opcode;
  Append(out, PkgLength(body.size()));
  Append(out, body);
  return out;
}

}  // namespace

Bytes PkgLength(size_t body_len) {
  // One byte holds up to 63; each extra byte adds 8 bits above the low nibble.
  for (size_t extra = 0; extra <= 3; ++extra) {
    const size_t total = body_len + 1 + extra;
    const size_t limit = extra == 0 ? 0x3f : (size_t{1} << (4 + 8 * extra)) - 1;
    if (total > limit) continue;
    if (extra == 0) return {static_cast<uint8_t>(total)};
    Bytes out{static_cast<uint8_t>((extra << 6) | (total & 0x0f))};
    for (size_t i = 0; i < extra; ++i) out.push_back(static_cast<uint8_t>(total >> (4 + 8 * i)));
    return out;
  }
  return {};  // > 256 MiB: not an AML package this encoder is asked for
}

Bytes NameString(std::string_view path) {
  Bytes out;
  if (!path.empty() && path[0] == '\\') {
    out.push_back(kRootChar);
    path.remove_prefix(1);
  }
  std::vector<std::string> segs;
  size_t start = 0;
  while (start <= path.size()) {
    const size_t dot = path.find('.', start);
    std::string seg(path.substr(start, dot == std::string_view::npos ? dot : dot - start));
    seg.resize(4, '_');
    segs.push_back(seg);
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (segs.size() == 2) out.push_back(kDualNamePrefix);
  if (segs.size() > 2) {
    out.push_back(kMultiNamePrefix);
    out.push_back(static_cast<uint8_t>(segs.size()));
  }
  for (const auto& s : segs) Append(out, Bytes(s.begin(), s.end()));
  return out;
}

Bytes Integer(uint64_t value) {
  if (value == 0) return {kZeroOp};
  if (value == 1) return {kOneOp};
  if (value == ~uint64_t{0}) return {kOnesOp};
  Bytes out;
  if (value <= 0xff) {
    out.push_back(kBytePrefix);
    AppendLe(out, value, 1);
  } else if (value <= 0xffff) {
    out.push_back(kWordPrefix);
    AppendLe(out, value, 2);
  } else if (value <= 0xffffffff) {
    out.push_back(kDWordPrefix);
    AppendLe(out, value, 4);
  } else {
    out.push_back(kQWordPrefix);
    AppendLe(out, value, 8);
  }
  return out;
}

Bytes String(std::string_view s) {
  Bytes out(s.size() + 2, 0);
  out[0] = kStringPrefix;
  std::copy(s.begin(), s.end(), out.begin() + 1);
  return out;
}

Bytes EisaId(std::string_view id) {
  if (id.size() != 7) return {};
  auto letter = [&](int i) { return static_cast<uint32_t>(id[i] - 0x40) & 0x1f; };
  auto hex = [&](int i) {
    const char c = id[i];
    return static_cast<uint32_t>(c <= '9' ? c - '0' : (c & ~0x20) - 'A' + 10) & 0xf;
  };
  const uint32_t letters = (letter(0) << 10) | (letter(1) << 5) | letter(2);
  // Stored big-endian: the integer's bytes read as the id in order.
  const uint32_t v = (letters >> 8) | ((letters & 0xff) << 8) | (((hex(3) << 4) | hex(4)) << 16) |
                     (((hex(5) << 4) | hex(6)) << 24);
  Bytes out{kDWordPrefix};
  AppendLe(out, v, 4);
  return out;
}

Bytes Name(std::string_view name, const Bytes& value) {
  Bytes out{kNameOp};
  Append(out, NameString(name));
  Append(out, value);
  return out;
}

Bytes Scope(std::string_view name, const std::vector<Bytes>& terms) {
  Bytes body = NameString(name);
  Append(body, Concat(terms));
  return Packaged({kScopeOp}, body);
}

Bytes Device(std::string_view name, const std::vector<Bytes>& terms) {
  Bytes body = NameString(name);
  Append(body, Concat(terms));
  return Packaged({kExtOpPrefix, kDeviceOp}, body);
}

Bytes Method(std::string_view name, uint8_t num_args, bool serialized,
             const std::vector<Bytes>& terms) {
  Bytes body = NameString(name);
  // MethodFlags: bits 0-2 ArgCount, bit 3 SerializeFlag, bits 4-7 SyncLevel (0).
  body.push_back(static_cast<uint8_t>((num_args & 7) | (serialized ? 0x08 : 0)));
  Append(body, Concat(terms));
  return Packaged({kMethodOp}, body);
}

Bytes Package(const std::vector<Bytes>& elements) {
  Bytes body{static_cast<uint8_t>(elements.size())};  // NumElements
  Append(body, Concat(elements));
  return Packaged({kPackageOp}, body);
}

Bytes Return(const Bytes& value) {
  Bytes out{kReturnOp};
  Append(out, value);
  return out;
}

Bytes If(const Bytes& predicate, const std::vector<Bytes>& terms) {
  Bytes body = predicate;
  Append(body, Concat(terms));
  return Packaged({kIfOp}, body);
}

Bytes LEqual(const Bytes& a, const Bytes& b) {
  Bytes out{kLEqualOp};
  Append(out, a);
  Append(out, b);
  return out;
}

Bytes Notify(std::string_view object, const Bytes& value) {
  Bytes out{kNotifyOp};
  Append(out, NameString(object));
  Append(out, value);
  return out;
}

Bytes Arg(int n) { return {static_cast<uint8_t>(kArg0Op + (n & 7))}; }

Bytes ResourceTemplate(const std::vector<Bytes>& descriptors) {
  Bytes data = Concat(descriptors);
  // End tag; a checksum of 0 means "treat as checksummed correctly" (iasl's choice).
  data.push_back(kEndTag);
  data.push_back(0);
  Bytes body = Integer(data.size());  // BufferSize
  Append(body, data);
  return Packaged({kBufferOp}, body);
}

Bytes Memory32Fixed(bool read_write, uint32_t base, uint32_t length) {
  Bytes out{kMemory32Fixed};
  AppendLe(out, 9, 2);  // length of the rest
  out.push_back(read_write ? 1 : 0);
  AppendLe(out, base, 4);
  AppendLe(out, length, 4);
  return out;
}

Bytes Io(uint16_t base, uint8_t alignment, uint8_t length) {
  Bytes out{kIoPort, 1};  // 16-bit decode
  AppendLe(out, base, 2);
  AppendLe(out, base, 2);
  out.push_back(alignment);
  out.push_back(length);
  return out;
}

Bytes IrqNoFlags(uint8_t irq) {
  Bytes out{kIrqNoFlags};
  AppendLe(out, 1u << (irq & 15), 2);
  return out;
}

Bytes Interrupt(bool edge, bool active_low, bool shared, uint32_t gsi) {
  Bytes out{kExtendedInterrupt};
  AppendLe(out, 6, 2);  // flags, table length, one DWORD
  // Bit 0 consumer, 1 edge, 2 active low, 3 shared.
  out.push_back(static_cast<uint8_t>(1 | (edge ? 2 : 0) | (active_low ? 4 : 0) | (shared ? 8 : 0)));
  out.push_back(1);
  AppendLe(out, gsi, 4);
  return out;
}

}  // namespace forkd::vmm::acpi::aml

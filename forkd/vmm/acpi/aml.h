// A small AML (ACPI Machine Language) encoder: the subset forkd-vmm's DSDT
// needs (ACPI 6.4 chapter 20). Each function returns the encoded bytes of one
// term; terms nest by value. Checked byte for byte against iasl's output for
// the same ASL in acpi_test.cc.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace forkd::vmm::acpi::aml {

using Bytes = std::vector<uint8_t>;

// PkgLength (20.2.4) for a package whose contents after the PkgLength are
// `body_len` bytes: the encoding counts its own bytes.
Bytes PkgLength(size_t body_len);

// A NameString of one or more 4-character segments separated by '.', with an
// optional leading '\' (root). Shorter segments are padded with '_'.
// "_SB.V000" -> DualNamePrefix; three or more -> MultiNamePrefix.
Bytes NameString(std::string_view path);

// Integer constants, smallest encoding as iasl emits them: Zero, One, Ones,
// BytePrefix, WordPrefix, DWordPrefix, QWordPrefix.
Bytes Integer(uint64_t value);
// A String (NUL terminated ASCII).
Bytes String(std::string_view s);
// EisaId("PNP0501"): a compressed 7-character EISA id as a DWord integer.
Bytes EisaId(std::string_view id);

Bytes Name(std::string_view name, const Bytes& value);
Bytes Scope(std::string_view name, const std::vector<Bytes>& terms);
Bytes Device(std::string_view name, const std::vector<Bytes>& terms);
Bytes Method(std::string_view name, uint8_t num_args, bool serialized,
             const std::vector<Bytes>& terms);
Bytes Package(const std::vector<Bytes>& elements);
Bytes Return(const Bytes& value);
Bytes If(const Bytes& predicate, const std::vector<Bytes>& terms);
Bytes LEqual(const Bytes& a, const Bytes& b);
Bytes Notify(std::string_view object, const Bytes& value);
Bytes Arg(int n);  // Arg0..Arg6

// A ResourceTemplate: a Buffer of resource descriptors and the end tag.
Bytes ResourceTemplate(const std::vector<Bytes>& descriptors);
// Memory32Fixed (6.4.3.4), ReadWrite or ReadOnly.
Bytes Memory32Fixed(bool read_write, uint32_t base, uint32_t length);
// IO (6.4.2.5) with 16-bit decode, a fixed range: IO(Decode16, base, base, align, len).
Bytes Io(uint16_t base, uint8_t alignment, uint8_t length);
// IRQNoFlags (6.4.2.1) { irq }: edge, active high, exclusive, ISA IRQ 0..15.
Bytes IrqNoFlags(uint8_t irq);
// Extended Interrupt (6.4.3.6), one interrupt, as
// Interrupt(ResourceConsumer, Edge|Level, ActiveHigh|ActiveLow, Exclusive|Shared).
Bytes Interrupt(bool edge, bool active_low, bool shared, uint32_t gsi);

}  // namespace forkd::vmm::acpi::aml

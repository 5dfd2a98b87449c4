#include "forkd/vmm/acpi/tables.h"

#include <algorithm>
#include <cstring>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "forkd/vmm/arch/x86_64/layout.h"

namespace forkd::vmm::acpi {
namespace {

constexpr size_t kHeaderSize = 36;
constexpr size_t kChecksumOffset = 9;
constexpr char kOemId[] = "FORKD ";         // 6 bytes
constexpr char kOemTableId[] = "FORKDVM ";  // 8 bytes
constexpr char kCreatorId[] = "FRKD";
constexpr uint32_t kCreatorRevision = 1;

// FADT (ACPI 6.4 table 5.9), revision 6.4: offsets of the fields set here.
constexpr uint8_t kFadtRevision = 6;
constexpr uint8_t kFadtMinorRevision = 4;
constexpr size_t kFadtSize = 276;
constexpr size_t kFadtCentury = 108;
constexpr size_t kFadtIapcBootArch = 109;
constexpr size_t kFadtFlags = 112;
constexpr size_t kFadtMinorVersion = 131;
constexpr size_t kFadtXDsdt = 140;
constexpr size_t kFadtHypervisorVendor = 268;
constexpr uint16_t kIapcVgaNotPresent = 1 << 2;
constexpr uint16_t kIapcMsiNotSupported = 1 << 3;
constexpr uint32_t kFadtHwReducedAcpi = 1 << 20;
// The CMOS byte holding the century (devices/rtc.h).
constexpr uint8_t kCmosCentury = 0x32;

// MADT (5.2.12).
constexpr uint8_t kMadtRevision = 5;
constexpr uint32_t kLocalApicAddr = 0xfee00000;
constexpr uint32_t kIoApicAddr = 0xfec00000;
constexpr uint8_t kMadtLocalApic = 0;
constexpr uint8_t kMadtIoApic = 1;
constexpr uint32_t kLocalApicEnabled = 1;

constexpr uint8_t kDsdtRevision = 2;
constexpr uint8_t kXsdtRevision = 1;
constexpr uint8_t kRsdpRevision = 2;
constexpr size_t kRsdpSize = 36;
constexpr size_t kRsdpV1Size = 20;

void PutLe(Bytes& b, size_t at, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutStr(Bytes& b, size_t at, std::string_view s) {
  std::memcpy(b.data() + at, s.data(), s.size());
}
void AppendLe(Bytes& b, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// A table: the standard header (5.2.6) followed by `body`, checksummed.
Bytes Table(std::string_view signature, uint8_t revision, const Bytes& body) {
  Bytes t(kHeaderSize + body.size(), 0);
  PutStr(t, 0, signature);
  PutLe(t, 4, kHeaderSize + body.size(), 4);
  t[8] = revision;
  PutStr(t, 10, kOemId);
  PutStr(t, 16, kOemTableId);
  PutLe(t, 24, 1, 4);  // OEM revision
  PutStr(t, 28, kCreatorId);
  PutLe(t, 32, kCreatorRevision, 4);
  std::copy(body.begin(), body.end(), t.begin() + kHeaderSize);
  t[kChecksumOffset] = static_cast<uint8_t>(-Sum(t.data(), t.size()));
  return t;
}

absl::Status Place(const GuestMemory& mem, uint64_t& next, const Bytes& table, uint64_t* addr) {
  *addr = next;
  if (next + table.size() > layout::kAcpiTablesEnd) {
    return absl::ResourceExhaustedError(
        absl::StrCat("ACPI tables exceed their region at 0x", absl::Hex(next)));
  }
  FORKD_RETURN_IF_ERROR(mem.Write(next, table));
  next = (next + table.size() + 15) & ~uint64_t{15};
  return absl::OkStatus();
}

}  // namespace

uint8_t Sum(const uint8_t* data, size_t len) {
  uint8_t s = 0;
  for (size_t i = 0; i < len; ++i) s = static_cast<uint8_t>(s + data[i]);
  return s;
}

Bytes BuildDsdt(const AcpiConfig& cfg) {
  using namespace aml;
  std::vector<Bytes> devices;
  if (cfg.com1) {
    devices.push_back(
        Device("COM1", {Name("_HID", EisaId("PNP0501")), Name("_UID", Integer(1)),
                        Name("_CRS", ResourceTemplate({Io(layout::kCom1Port, 8, 8),
                                                       IrqNoFlags(layout::kCom1Irq)}))}));
  }
  for (size_t i = 0; i < cfg.virtio.size(); ++i) {
    const VirtioMmioDevice& d = cfg.virtio[i];
    // V000, V001, ...: unique 4-character names.
    const std::string name = absl::StrCat("V", absl::Dec(i, absl::kZeroPad3));
    devices.push_back(Device(
        name,
        {Name("_HID", String("LNRO0005")), Name("_UID", Integer(i)),
         Name("_CRS", ResourceTemplate({Memory32Fixed(true, static_cast<uint32_t>(d.addr), d.size),
                                        Interrupt(true, false, false, d.gsi)}))}));
  }
  if (cfg.vmgenid) {
    // Linux's vmgenid driver matches _HID VMGENCTR, or _CID VM_Gen_Counter
    // (which ACPICA upper-cases), and reads ADDR: {low, high} of the 16 bytes.
    devices.push_back(
        Device("VGEN", {Name("_HID", String("VMGENCTR")), Name("_CID", String("VM_Gen_Counter")),
                        Name("_DDN", String("VM_Gen_Counter")),
                        Method("ADDR", 0, false,
                               {Return(Package({Integer(cfg.vmgenid_addr & 0xffffffff),
                                                Integer(cfg.vmgenid_addr >> 32)}))})}));
    // A hardware-reduced platform has no GPE blocks: the Generic Event Device
    // (ACPI0013, 5.6.9) is how an interrupt runs AML. Its _EVT notifies VGEN
    // (0x80: the generation changed) when forkd-vmm raises ged_gsi.
    devices.push_back(Device(
        "GED0",
        {Name("_HID", String("ACPI0013")), Name("_UID", Integer(0)),
         Name("_CRS", ResourceTemplate({Interrupt(true, false, false, cfg.ged_gsi)})),
         Method("_EVT", 1, true,
                {If(LEqual(Arg(0), Integer(cfg.ged_gsi)), {Notify("VGEN", Integer(0x80))})})}));
  }
  return Table("DSDT", kDsdtRevision, Scope("_SB_", devices));
}

Bytes BuildMadt(int num_vcpus) {
  Bytes body;
  AppendLe(body, kLocalApicAddr, 4);
  AppendLe(body, 0, 4);  // flags: no PC-AT dual 8259 (the guest uses the IOAPIC)
  for (int i = 0; i < num_vcpus; ++i) {
    body.push_back(kMadtLocalApic);
    body.push_back(8);
    body.push_back(static_cast<uint8_t>(i));  // ACPI processor UID
    body.push_back(static_cast<uint8_t>(i));  // APIC id (cpuid.cc gives vCPU i APIC id i)
    AppendLe(body, kLocalApicEnabled, 4);
  }
  body.push_back(kMadtIoApic);
  body.push_back(12);
  body.push_back(0);  // IOAPIC id
  body.push_back(0);
  AppendLe(body, kIoApicAddr, 4);
  AppendLe(body, 0, 4);  // global system interrupt base
  return Table("APIC", kMadtRevision, body);
}

Bytes BuildFadt(uint64_t dsdt_addr) {
  Bytes body(kFadtSize - kHeaderSize, 0);
  auto at = [](size_t table_offset) { return table_offset - kHeaderSize; };
  body[at(kFadtCentury)] = kCmosCentury;
  PutLe(body, at(kFadtIapcBootArch), kIapcVgaNotPresent | kIapcMsiNotSupported, 2);
  PutLe(body, at(kFadtFlags), kFadtHwReducedAcpi, 4);
  body[at(kFadtMinorVersion)] = kFadtMinorRevision;
  PutLe(body, at(kFadtXDsdt), dsdt_addr, 8);
  PutStr(body, at(kFadtHypervisorVendor), "FORKDVMM");
  return Table("FACP", kFadtRevision, body);
}

Bytes BuildXsdt(const std::vector<uint64_t>& table_addrs) {
  Bytes body;
  for (uint64_t a : table_addrs) AppendLe(body, a, 8);
  return Table("XSDT", kXsdtRevision, body);
}

Bytes BuildRsdp(uint64_t xsdt_addr) {
  Bytes r(kRsdpSize, 0);
  PutStr(r, 0, "RSD PTR ");
  PutStr(r, 9, kOemId);
  r[15] = kRsdpRevision;
  PutLe(r, 20, kRsdpSize, 4);
  PutLe(r, 24, xsdt_addr, 8);
  // Checksum over the ACPI 1.0 part, then the extended one over all of it.
  r[8] = static_cast<uint8_t>(-Sum(r.data(), kRsdpV1Size));
  r[32] = static_cast<uint8_t>(-Sum(r.data(), kRsdpSize));
  return r;
}

absl::Status WriteTables(const GuestMemory& mem, const AcpiConfig& cfg) {
  uint64_t next = layout::kAcpiTablesStart;
  uint64_t dsdt = 0, fadt = 0, madt = 0, xsdt = 0;
  FORKD_RETURN_IF_ERROR(Place(mem, next, BuildDsdt(cfg), &dsdt));
  FORKD_RETURN_IF_ERROR(Place(mem, next, BuildFadt(dsdt), &fadt));
  FORKD_RETURN_IF_ERROR(Place(mem, next, BuildMadt(cfg.num_vcpus), &madt));
  FORKD_RETURN_IF_ERROR(Place(mem, next, BuildXsdt({fadt, madt}), &xsdt));
  return mem.Write(layout::kRsdpAddr, BuildRsdp(xsdt));
}

}  // namespace forkd::vmm::acpi

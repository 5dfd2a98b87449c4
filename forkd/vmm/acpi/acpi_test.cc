// The AML encoder and the ACPI tables. The DSDT is compared byte for byte with
// what iasl (Debian's acpica-tools) compiles from the equivalent ASL, at test
// time: the reference is the real compiler, not bytes that could go stale.
// The other tables are disassembled by `iasl -d`, which reports bad checksums
// and decodes every field independently of this code.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "forkd/vmm/acpi/aml.h"
#include "forkd/vmm/acpi/tables.h"
#include "forkd/vmm/acpi/vmgenid.h"
#include "forkd/vmm/arch/x86_64/layout.h"
#include "gtest/gtest.h"

namespace forkd::vmm::acpi {
namespace {

namespace fs = std::filesystem;
using aml::Bytes;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "forkd_acpi.XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data()) ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  fs::path path() const { return path_; }

 private:
  fs::path path_;
};

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
void WriteFile(const fs::path& p, const Bytes& b) {
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}
// Runs iasl in `dir`; its output goes to `dir`/iasl.log.
bool Iasl(const fs::path& dir, const std::string& args) {
  const std::string cmd = "cd '" + dir.string() + "' && iasl " + args + " > iasl.log 2>&1";
  const int rc = std::system(cmd.c_str());
  return rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0;
}
std::string Hex(const Bytes& b) {
  std::string out;
  char buf[4];
  for (uint8_t c : b) {
    std::snprintf(buf, sizeof buf, "%02x ", c);
    out += buf;
  }
  return out;
}

AcpiConfig ThreeDevices() {
  AcpiConfig cfg;
  cfg.num_vcpus = 2;
  for (uint32_t slot : {layout::kVirtioRngSlot, layout::kVirtioVsockSlot, layout::kVirtioNetSlot}) {
    cfg.virtio.push_back({layout::VirtioMmioAddr(slot),
                          static_cast<uint32_t>(layout::kVirtioMmioDeviceSize),
                          layout::VirtioIrq(slot)});
  }
  cfg.vmgenid_addr = layout::kVmGenIdAddr;
  cfg.ged_gsi = layout::kGedIrq;
  return cfg;
}

TEST(Aml, PkgLengthEncodings) {
  EXPECT_EQ(aml::PkgLength(0), Bytes{0x01});
  EXPECT_EQ(aml::PkgLength(62), Bytes{0x3f});
  // 63 + 2 bytes of PkgLength = 65 = 0x041: low nibble 1, then 0x04.
  EXPECT_EQ(aml::PkgLength(63), (Bytes{0x41, 0x04}));
  EXPECT_EQ(aml::PkgLength(0xffd), (Bytes{0x4f, 0xff}));
  // 0xffe + 3 = 0x1001 needs two extra bytes.
  EXPECT_EQ(aml::PkgLength(0xffe), (Bytes{0x81, 0x00, 0x01}));
}

TEST(Aml, NamesAndIntegers) {
  EXPECT_EQ(aml::NameString("_SB"), (Bytes{'_', 'S', 'B', '_'}));
  EXPECT_EQ(aml::NameString("\\_SB.V000"),
            (Bytes{0x5c, 0x2e, '_', 'S', 'B', '_', 'V', '0', '0', '0'}));
  EXPECT_EQ(aml::NameString("A.B.C"),
            (Bytes{0x2f, 3, 'A', '_', '_', '_', 'B', '_', '_', '_', 'C', '_', '_', '_'}));
  EXPECT_EQ(aml::Integer(0), Bytes{0x00});
  EXPECT_EQ(aml::Integer(1), Bytes{0x01});
  EXPECT_EQ(aml::Integer(0x80), (Bytes{0x0a, 0x80}));
  EXPECT_EQ(aml::Integer(0x1234), (Bytes{0x0b, 0x34, 0x12}));
  EXPECT_EQ(aml::Integer(0xef000), (Bytes{0x0c, 0x00, 0xf0, 0x0e, 0x00}));
  EXPECT_EQ(aml::Integer(0x100000000ULL), (Bytes{0x0e, 0, 0, 0, 0, 1, 0, 0, 0}));
}

TEST(Dsdt, MatchesIaslByteForByte) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  fs::copy_file(FORKD_ACPI_TESTDATA "/dsdt_reference.asl", dir.path() / "dsdt.asl");
  ASSERT_TRUE(Iasl(dir.path(), "-f -p dsdt dsdt.asl"))
      << "iasl (Debian package acpica-tools) failed or is missing:\n"
      << ReadFile(dir.path() / "iasl.log");
  const std::string ref = ReadFile(dir.path() / "dsdt.aml");
  ASSERT_GT(ref.size(), 36u);
  const Bytes iasl(ref.begin(), ref.end());
  const Bytes ours = BuildDsdt(ThreeDevices());
  // The header differs only in the compiler's id and revision (and so the
  // checksum); everything after it is the AML.
  ASSERT_EQ(ours.size(), iasl.size());
  EXPECT_EQ(Bytes(ours.begin(), ours.begin() + 9), Bytes(iasl.begin(), iasl.begin() + 9));
  EXPECT_EQ(Bytes(ours.begin() + 10, ours.begin() + 28),
            Bytes(iasl.begin() + 10, iasl.begin() + 28));
  EXPECT_EQ(Hex(Bytes(ours.begin() + 36, ours.end())), Hex(Bytes(iasl.begin() + 36, iasl.end())));
  EXPECT_EQ(Sum(ours.data(), ours.size()), 0);
  // Control: the comparison does see a one-byte difference (net's GSI).
  AcpiConfig other = ThreeDevices();
  other.virtio[2].gsi = 8;
  const Bytes changed = BuildDsdt(other);
  ASSERT_EQ(changed.size(), iasl.size());
  EXPECT_NE(Bytes(changed.begin() + 36, changed.end()), Bytes(iasl.begin() + 36, iasl.end()));
}

// What iasl's disassembler says about one of our tables.
std::string Disassemble(const Bytes& table, const std::string& name) {
  TempDir dir;
  WriteFile(dir.path() / (name + ".dat"), table);
  const bool ok = Iasl(dir.path(), "-d " + name + ".dat");
  std::string dsl = ReadFile(dir.path() / (name + ".dsl"));
  if (!ok) dsl += "\nIASL FAILED:\n" + ReadFile(dir.path() / "iasl.log");
  return dsl;
}

TEST(Madt, OneLocalApicPerVcpuAndTheIoApic) {
  for (int n : {1, 4}) {
    const Bytes madt = BuildMadt(n);
    EXPECT_EQ(Sum(madt.data(), madt.size()), 0);
    EXPECT_EQ(madt.size(), 36u + 8 + 8u * n + 12);
    const std::string dsl = Disassemble(madt, "apic");
    EXPECT_EQ(dsl.find("Incorrect"), std::string::npos) << dsl;
    EXPECT_EQ(dsl.find("IASL FAILED"), std::string::npos) << dsl;
    size_t count = 0;
    for (size_t at = dsl.find("[Processor Local APIC]"); at != std::string::npos;
         at = dsl.find("[Processor Local APIC]", at + 1)) {
      ++count;
    }
    EXPECT_EQ(count, static_cast<size_t>(n)) << dsl;
    EXPECT_NE(dsl.find("[I/O APIC]"), std::string::npos) << dsl;
    EXPECT_NE(dsl.find("Address : FEC00000"), std::string::npos) << dsl;
    // The last vCPU's local APIC id.
    char id[64];
    std::snprintf(id, sizeof id, "Local Apic ID : %02X", n - 1);
    EXPECT_NE(dsl.find(id), std::string::npos) << dsl;
  }
}

TEST(Fadt, HardwareReducedWithItsDsdt) {
  const Bytes fadt = BuildFadt(0xe0040);
  EXPECT_EQ(fadt.size(), 276u);
  EXPECT_EQ(Sum(fadt.data(), fadt.size()), 0);
  const std::string dsl = Disassemble(fadt, "facp");
  EXPECT_EQ(dsl.find("Incorrect"), std::string::npos) << dsl;
  EXPECT_NE(dsl.find("Hardware Reduced (V5) : 1"), std::string::npos) << dsl;
  EXPECT_NE(dsl.find("DSDT Address : 00000000000E0040"), std::string::npos) << dsl;
  EXPECT_NE(dsl.find("Century Index : 32"), std::string::npos) << dsl;
  EXPECT_NE(dsl.find("Hypervisor ID : 4D4D56444B524F46"), std::string::npos) << dsl;
}

TEST(Rsdp, ChecksumsAndXsdtPointer) {
  const Bytes rsdp = BuildRsdp(0xe1234);
  ASSERT_EQ(rsdp.size(), 36u);
  EXPECT_EQ(Sum(rsdp.data(), 20), 0);
  EXPECT_EQ(Sum(rsdp.data(), 36), 0);
  // (iasl -d does not take a lone RSDP: its fields are checked here.)
  EXPECT_EQ(std::string(rsdp.begin(), rsdp.begin() + 8), "RSD PTR ");
  EXPECT_EQ(rsdp[15], 2);   // revision: ACPI 2.0+, XSDT
  EXPECT_EQ(rsdp[20], 36);  // length
  EXPECT_EQ(Bytes(rsdp.begin() + 24, rsdp.begin() + 32), (Bytes{0x34, 0x12, 0x0e, 0, 0, 0, 0, 0}));
}

TEST(Tables, WrittenIntoGuestMemoryAndLinked) {
  auto mem = GuestMemory::Anonymous(16 << 20);
  ASSERT_TRUE(mem.ok()) << mem.status();
  ASSERT_TRUE(WriteTables(*mem, ThreeDevices()).ok());
  auto read = [&](uint64_t gpa, uint64_t len) {
    auto s = mem->Slice(gpa, len);
    return Bytes(s->begin(), s->end());
  };
  auto le = [](const Bytes& b, size_t at, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | b[at + i];
    return v;
  };
  const Bytes rsdp = read(layout::kRsdpAddr, 36);
  EXPECT_EQ(std::string(rsdp.begin(), rsdp.begin() + 8), "RSD PTR ");
  EXPECT_EQ(Sum(rsdp.data(), 36), 0);
  const uint64_t xsdt_addr = le(rsdp, 24, 8);
  const Bytes xsdt_head = read(xsdt_addr, 36);
  const Bytes xsdt = read(xsdt_addr, le(xsdt_head, 4, 4));
  EXPECT_EQ(std::string(xsdt.begin(), xsdt.begin() + 4), "XSDT");
  EXPECT_EQ(Sum(xsdt.data(), xsdt.size()), 0);
  ASSERT_EQ(xsdt.size(), 36u + 16);
  std::vector<std::string> sigs;
  for (size_t at = 36; at < xsdt.size(); at += 8) {
    const uint64_t a = le(xsdt, at, 8);
    EXPECT_GE(a, layout::kAcpiTablesStart);
    const Bytes head = read(a, 36);
    const Bytes t = read(a, le(head, 4, 4));
    EXPECT_LE(a + t.size(), layout::kAcpiTablesEnd);
    EXPECT_EQ(Sum(t.data(), t.size()), 0);
    sigs.emplace_back(t.begin(), t.begin() + 4);
    if (sigs.back() == "FACP") {
      const Bytes dsdt = read(le(t, 140, 8), 36);
      EXPECT_EQ(std::string(dsdt.begin(), dsdt.begin() + 4), "DSDT");
    }
  }
  EXPECT_EQ(sigs, (std::vector<std::string>{"FACP", "APIC"}));
}

TEST(VmGenId, EveryWriteIsNew) {
  auto mem = GuestMemory::Anonymous(16 << 20);
  ASSERT_TRUE(mem.ok()) << mem.status();
  auto a = WriteNewGenerationId(*mem, layout::kVmGenIdAddr);
  ASSERT_TRUE(a.ok()) << a.status();
  auto read_a = ReadGenerationId(*mem, layout::kVmGenIdAddr);
  ASSERT_TRUE(read_a.ok());
  EXPECT_EQ(*read_a, *a);
  auto b = WriteNewGenerationId(*mem, layout::kVmGenIdAddr);
  ASSERT_TRUE(b.ok());
  EXPECT_NE(*a, *b);
  EXPECT_EQ(*ReadGenerationId(*mem, layout::kVmGenIdAddr), *b);
  EXPECT_NE(*b, GenerationId{});
}

}  // namespace
}  // namespace forkd::vmm::acpi

#include "forkd/snapshot/test_states.h"

#include <cstring>
#include <random>
#include <stdexcept>

namespace forkd::snapshot::testing {
namespace {

template <typename T>
void Randomize(T& v, std::mt19937_64& rng) {
  auto* p = reinterpret_cast<uint8_t*>(&v);
  for (size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<uint8_t>(rng());
}

std::vector<uint8_t> RandomBytes(size_t n, std::mt19937_64& rng) {
  std::vector<uint8_t> b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

}  // namespace

SnapshotState RandomState(uint32_t seed, uint32_t vcpus, uint32_t devices) {
  std::mt19937_64 rng(seed);
  SnapshotState s;
  SnapshotHeader& h = s.header;
  h.vcpu_count = vcpus;
  h.guest_protocol_version = static_cast<uint32_t>(rng());
  h.created_unix_ns = rng();
  for (auto& b : h.kernel_sha256) b = static_cast<uint8_t>(rng());
  for (auto& b : h.initrd_sha256) b = static_cast<uint8_t>(rng());
  h.unpinned = (rng() & 1) != 0;
  h.cpu.vendor = "GenuineIntel";
  h.cpu.family = 6;
  h.cpu.model = 85;
  h.cpu.stepping = 7;
  h.cpu.leaf1_ecx = static_cast<uint32_t>(rng());
  h.cpu.leaf1_edx = static_cast<uint32_t>(rng());
  h.cpu.leaf7_ebx = static_cast<uint32_t>(rng());
  h.cpu.leaf7_ecx = static_cast<uint32_t>(rng());
  h.cpu.leaf7_edx = static_cast<uint32_t>(rng());
  h.cpu.xcr0_supported = rng();
  h.cpu.xsave_size_max = 2696;
  h.cpu.xsave_size_enabled = 2696;
  h.cpu.xsave_d1_eax = 0xf;
  h.cpu.xss_supported = rng();
  h.cpu.host_kernel = "6.1.0-test-amd64";
  h.memory = {{.guest_phys_addr = 0, .size = 0xc0000, .file_offset = 0},
              {.guest_phys_addr = 0x100000, .size = 0x40000, .file_offset = 0xc0000}};
  for (uint32_t i = 0; i < vcpus; ++i) {
    VcpuState v;
    Randomize(v.regs, rng);
    Randomize(v.sregs, rng);
    Randomize(v.fpu, rng);
    // The legacy 4 KiB region, a KVM_CAP_XSAVE2-sized one, and none (host without XSAVE).
    const size_t xsave_sizes[] = {kMinXsaveBytes, 11008, 0};
    v.xsave = RandomBytes(xsave_sizes[i % 3], rng);
    Randomize(v.xcrs, rng);
    for (uint32_t m = 0; m < 40 + i; ++m) {
      v.msrs.push_back({static_cast<uint32_t>(rng()), rng()});
    }
    Randomize(v.lapic, rng);
    Randomize(v.events, rng);
    Randomize(v.debugregs, rng);
    Randomize(v.mp_state, rng);
    v.tsc_khz = static_cast<uint32_t>(rng());
    for (uint32_t c = 0; c < 20 + i; ++c) {
      kvm_cpuid_entry2 e{};
      Randomize(e, rng);
      v.cpuid.push_back(e);
    }
    s.vcpus.push_back(std::move(v));
  }
  Randomize(s.vm.pic_master, rng);
  Randomize(s.vm.pic_slave, rng);
  Randomize(s.vm.ioapic, rng);
  s.vm.pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
  s.vm.pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
  s.vm.ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
  Randomize(s.vm.pit, rng);
  Randomize(s.vm.clock, rng);
  s.vm.host_monotonic_ns = rng();
  s.vm.host_tsc = rng();
  const char* names[] = {"serial0", "virtio-rng", "virtio-net.0", "vsock", "i8042"};
  for (uint32_t d = 0; d < devices; ++d) {
    s.devices.push_back({.name = names[d % 5] + std::string(d >= 5 ? "x" + std::to_string(d) : ""),
                         .bytes = RandomBytes(rng() % 300, rng)});
  }
  return s;
}

SnapshotState MinimalState() {
  SnapshotState s;
  s.header.vcpu_count = 1;
  s.header.cpu.vendor = "AuthenticAMD";
  s.header.memory = {{.guest_phys_addr = 0, .size = 0x10000, .file_offset = 0}};
  VcpuState v;
  v.xsave.assign(kMinXsaveBytes, 0xab);
  s.vcpus.push_back(std::move(v));
  s.vm.pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
  s.vm.pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
  s.vm.ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
  s.devices.push_back({.name = "serial0", .bytes = {1, 2, 3}});
  return s;
}

SectionRef FindSection(std::span<const uint8_t> file, SectionTag tag, size_t index) {
  size_t off = 16;  // magic + version + reserved
  while (off + 16 <= file.size()) {
    uint32_t t;
    uint64_t len;
    std::memcpy(&t, file.data() + off, 4);
    std::memcpy(&len, file.data() + off + 8, 8);
    if (t == static_cast<uint32_t>(tag) && index-- == 0) {
      return {.header_offset = off, .payload_offset = off + 16, .length = len};
    }
    off += 16 + len;
  }
  throw std::runtime_error("FindSection: section not found");
}

void PutU32(std::vector<uint8_t>& b, size_t at, uint32_t v) { std::memcpy(b.data() + at, &v, 4); }
void PutU64(std::vector<uint8_t>& b, size_t at, uint64_t v) { std::memcpy(b.data() + at, &v, 8); }

}  // namespace forkd::snapshot::testing

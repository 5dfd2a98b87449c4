// Writes the harnesses' seed inputs: vmm_fuzz_seeds DIR writes
// DIR/{mmio,virtqueue,vsock,net}/seed-*. Each seed is a short, meaningful
// program in the harness's encoding (a driver bring-up, a connection, a
// frame each way), so libFuzzer starts from deep states. The encoders here
// mirror the reads in each *_fuzz.cc.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "forkd/vmm/devices/virtio/vsock.h"
#include "forkd/vmm/fuzz/fuzz_input.h"

namespace forkd::vmm::fuzz {
namespace {

namespace fs = std::filesystem;

void Write(const fs::path& dir, const std::string& name, const FuzzScript& s) {
  fs::create_directories(dir);
  std::ofstream f(dir / ("seed-" + name), std::ios::binary);
  f.write(reinterpret_cast<const char*>(s.bytes().data()),
          static_cast<std::streamsize>(s.bytes().size()));
}

// --- mmio_fuzz.cc ---------------------------------------------------------
// Indexes into its kRegisters.
enum Reg : uint8_t {
  kMagic = 0,
  kDeviceFeatures = 4,
  kDeviceFeaturesSel = 5,
  kDriverFeatures = 6,
  kDriverFeaturesSel = 7,
  kQueueSel = 8,
  kQueueNum = 10,
  kQueueReady = 11,
  kQueueNotify = 12,
  kInterruptAck = 14,
  kStatus = 15,
  kDescLow = 16,
  kDescHigh = 17,
  kDriverLow = 18,
  kDeviceLow = 20,
  kConfig = 23
};
struct Mmio {
  FuzzScript s;
  explicit Mmio(uint8_t kind) { s.U8(kind); }
  Mmio& W(Reg r, uint64_t v, uint8_t width = 0) {
    s.U8(0).U8(r).U8(width).U64(v);
    return *this;
  }
  Mmio& R(Reg r, uint8_t width = 0) {
    s.U8(1).U8(r).U8(width);
    return *this;
  }
  Mmio& Poke(uint16_t gpa, const std::vector<uint8_t>& b) {
    s.U8(2).U16(gpa).U8(static_cast<uint8_t>(b.size())).Bytes(b);
    return *this;
  }
  Mmio& Kick(uint8_t q) {
    s.U8(3).U8(q);
    return *this;
  }
  Mmio& Bringup(uint8_t size_exp, bool mac) {
    s.U8(4).U8(size_exp).U8(mac ? 1 : 0);
    return *this;
  }
  Mmio& RoundTrip() {
    s.U8(6);
    return *this;
  }
};

std::vector<uint8_t> Le(uint64_t v, int n) {
  std::vector<uint8_t> b;
  for (int i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
  return b;
}

void MmioSeeds(const fs::path& dir) {
  for (uint8_t kind = 0; kind < 3; ++kind) {
    const std::string k = std::to_string(kind);
    // The quick bring-up, a notify, a snapshot round trip, a reset.
    Write(dir, "bringup-" + k,
          Mmio(kind).Bringup(3, kind == 2).Kick(0).Kick(1).RoundTrip().W(kStatus, 0).s);
    // Feature negotiation and queue 0 by hand, one descriptor posted.
    Mmio m(kind);
    m.R(kMagic)
        .W(kStatus, 3)
        .W(kDeviceFeaturesSel, 1)
        .R(kDeviceFeatures)
        .W(kDriverFeaturesSel, 1)
        .W(kDriverFeatures, 1)
        .W(kDriverFeaturesSel, 0)
        .W(kDriverFeatures, kind == 2 ? 0x20 : 0)
        .W(kStatus, 11)
        .W(kQueueSel, 0)
        .W(kQueueNum, 8)
        .W(kDescLow, 0x1000)
        .W(kDriverLow, 0x1400)
        .W(kDeviceLow, 0x1800)
        .W(kQueueReady, 1)
        .W(kStatus, 15);
    // Descriptor 0: 64 device-writable bytes at 0x2000; avail idx 1, ring[0] = 0.
    std::vector<uint8_t> desc = Le(0x2000, 8);
    for (uint8_t b : Le(64, 4)) desc.push_back(b);
    for (uint8_t b : Le(2, 2)) desc.push_back(b);
    for (uint8_t b : Le(0, 2)) desc.push_back(b);
    m.Poke(0x1000, desc)
        .Poke(0x1400, {0, 0, 1, 0, 0, 0})
        .W(kQueueNotify, 0)
        .R(kConfig)
        .W(kInterruptAck, 1)
        .RoundTrip();
    Write(dir, "manual-" + k, m.s);
    // Hostile: features not offered, FEATURES_OK before DRIVER, rings
    // outside memory, queue writes after DRIVER_OK, a high address.
    Write(dir, "hostile-" + k,
          Mmio(kind)
              .W(kStatus, 8)
              .W(kStatus, 3)
              .W(kDriverFeatures, 0xffffffff)
              .W(kStatus, 11)
              .W(kDriverFeaturesSel, 1)
              .W(kDriverFeatures, 1)
              .W(kDriverFeaturesSel, 0)
              .W(kDriverFeatures, 0)
              .W(kStatus, 11)
              .W(kQueueNum, 256)
              .W(kDescLow, 0xfff0)
              .W(kDescHigh, 1)
              .W(kQueueReady, 1)
              .W(kQueueNum, 3)
              .W(kQueueReady, 1)
              .W(kStatus, 15)
              .W(kDescLow, 0)
              .W(kQueueNotify, 0)
              .W(kQueueNotify, 0xffffffff)
              .W(kStatus, 0)
              .s);
  }
}

// --- virtqueue_fuzz.cc ----------------------------------------------------
struct Vq {
  FuzzScript s;
  std::vector<uint8_t> image = std::vector<uint8_t>(0x4000, 0);
  // Aligned rings: desc 0x1000, avail 0x1400, used 0x1800.
  Vq(uint8_t size_exp, uint16_t next_avail, uint16_t next_used = 0) {
    s.U16(255).U8(0).U8(size_exp);
    for (uint16_t a : {0x1000, 0x1400, 0x1800}) s.U8(3).U16(a);
    s.U16(next_avail).U16(next_used).U8(255);
  }
  void Desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next) {
    Put(0x1000 + 16 * i, Le(addr, 8));
    Put(0x1000 + 16 * i + 8, Le(len, 4));
    Put(0x1000 + 16 * i + 12, Le(flags, 2));
    Put(0x1000 + 16 * i + 14, Le(next, 2));
  }
  void Avail(uint16_t idx, const std::vector<uint16_t>& ring) {
    Put(0x1402, Le(idx, 2));
    for (size_t i = 0; i < ring.size(); ++i) Put(0x1404 + 2 * i, Le(ring[i], 2));
  }
  void Put(size_t at, const std::vector<uint8_t>& b) {
    std::copy(b.begin(), b.end(), image.begin() + static_cast<std::ptrdiff_t>(at));
  }
  FuzzScript Done() {
    FuzzScript out = s;
    out.Bytes(image);
    return out;
  }
};

void VirtqueueSeeds(const fs::path& dir) {
  {  // two chains: readable + writable, then a single writable
    Vq q(3, 0);
    q.Desc(0, 0x2000, 100, 1, 1);
    q.Desc(1, 0x3000, 50, 2, 0);
    q.Desc(2, 0x3100, 10, 2, 0);
    q.Avail(2, {0, 2});
    Write(dir, "chains", q.Done());
  }
  {  // a next loop
    Vq q(3, 0);
    q.Desc(0, 0x2000, 8, 1, 1);
    q.Desc(1, 0x2000, 8, 1, 0);
    q.Avail(1, {0});
    Write(dir, "loop", q.Done());
  }
  {  // a buffer past the end of memory, a huge length, an indirect table
    Vq q(3, 0);
    q.Desc(0, 0x3ff0, 0x20, 0, 0);
    q.Desc(1, 0x100, 0xffffffff, 0, 0);
    q.Desc(2, 0x2000, 0x40, 4, 0);
    q.Avail(3, {0, 1, 2});
    Write(dir, "out-of-range", q.Done());
  }
  {  // indices that wrap: next_avail 0xfffe, avail idx 1 (3 pending)
    Vq q(2, 0xfffe, 0xfffe);
    q.Desc(0, 0x2000, 8, 2, 0);
    q.Desc(1, 0x2100, 8, 2, 0);
    q.Desc(2, 0x2200, 8, 2, 0);
    q.Avail(1, {2, 0, 0, 1});  // ring[0xfffe % 4 = 2] = 0, ring[3] = 1, ring[0] = 2
    Write(dir, "wrap", q.Done());
  }
  {  // avail idx far ahead of the device
    Vq q(3, 0);
    q.Avail(100, {});
    Write(dir, "ahead", q.Done());
  }
}

// --- vsock_fuzz.cc --------------------------------------------------------
struct VsockSeed {
  FuzzScript s;
  VsockSeed() { s.U8(1).U8(2); }  // unlimited; queues of 1 << (2 + 2) = 16
  // A well-formed guest packet from guest port 5000 (+ guest_port_pick) to
  // host port 1024; ports pick 0 = {1024, 5000}.
  VsockSeed& Tx(uint16_t op, const std::string& payload, uint32_t flags = 0, uint8_t split = 1,
                uint8_t ports = 0) {
    s.U8(0).U8(1).U8(1).U8(ports).U8(static_cast<uint8_t>(op)).U8(1);
    s.U8(static_cast<uint8_t>(flags)).U8(2);  // buf_alloc 256 KiB
    s.U8(0);                                  // fwd_cnt 0
    s.U16(static_cast<uint16_t>(payload.size())).Text(payload);
    s.U8(1).U8(split);  // header len = payload size; split
    if (split == 2) s.U8(10);
    s.U8(1);  // notify by MMIO
    return *this;
  }
  VsockSeed& Rx(uint8_t buffers, uint16_t len = 1024) {
    s.U8(2).U8(static_cast<uint8_t>(buffers - 1));
    for (int i = 0; i < buffers; ++i) s.U8(3).U16(static_cast<uint16_t>(len - 44));
    s.U8(0);  // notify by Kick
    return *this;
  }
  VsockSeed& Event() {
    s.U8(3).U8(0).U8(3).U16(0).U8(1);
    return *this;
  }
  VsockSeed& Host(uint8_t op, uint8_t key = 0) {
    s.U8(4).U8(key).U8(op);
    return *this;
  }
  VsockSeed& Accept() { return Host(0), s.U8(1), *this; }
  VsockSeed& Refuse() { return Host(0), s.U8(0), *this; }
  VsockSeed& Send(uint16_t n) { return Host(2), s.U16(n), *this; }
  VsockSeed& Drain(uint8_t mode) { return Host(3), s.U8(mode), *this; }
  VsockSeed& Clock(uint16_t ms) { return Host(7), s.U16(ms), *this; }
  VsockSeed& SaveRestore() {
    s.U8(7);
    return *this;
  }
};

void VsockSeeds(const fs::path& dir) {
  using namespace virtio;
  // Guest connects, sends, the host drains and answers, both shut down.
  Write(dir, "guest-connect",
        VsockSeed()
            .Rx(4)
            .Tx(kVsockOpRequest, "")
            .Accept()
            .Tx(kVsockOpRw, "hello host", 0, 1)
            .Drain(0)
            .Send(200)
            .Tx(kVsockOpCreditRequest, "")
            .Tx(kVsockOpShutdown, "", 3)
            .Drain(0)
            .Rx(4)
            .s);
  // The host connects, the guest accepts, bytes both ways, host EOF and gone.
  Write(dir, "host-connect",
        VsockSeed()
            .Rx(4)
            .Host(1)
            .Tx(kVsockOpResponse, "")
            .Send(3000)
            .Rx(4, 600)
            .Tx(kVsockOpRw, std::string(700, 'g'), 0, 2)
            .Drain(1)
            .Drain(0)
            .Host(4)
            .Host(5)
            .Clock(2500)
            .Rx(2)
            .s);
  // A refused guest connect; a host connect the guest never answers times
  // out, and its late RESPONSE gets RST.
  Write(dir, "refuse-timeout",
        VsockSeed()
            .Rx(4)
            .Tx(kVsockOpRequest, "", 0, 1, 1)
            .Refuse()
            .Host(1, 2)
            .Clock(2500)
            .Tx(kVsockOpResponse, "", 0, 1, 2)
            .Rx(2)
            .s);
  Write(dir, "rst-and-snapshot",
        VsockSeed()
            .Event()
            .Rx(3)
            .Tx(kVsockOpRequest, "")
            .Accept()
            .Tx(kVsockOpRw, "abc")
            .Tx(kVsockOpRst, "")
            .Host(1, 2)
            .Clock(3000)
            .SaveRestore()
            .Event()
            .Rx(2)
            .Host(6)
            .s);
}

// --- net_fuzz.cc ----------------------------------------------------------
struct NetSeed {
  FuzzScript s;
  NetSeed() { s.U8(1).U8(2); }  // unlimited; queues of 16
  // A header of `hdr_fill` and an Ethernet frame of `len` bytes, in `pieces`.
  NetSeed& Tx(uint16_t len, uint8_t pieces = 1, uint8_t hdr_fill = 0) {
    std::string frame(12, static_cast<char>(hdr_fill));
    frame += std::string(6, '\xff') + "\x02\x00\x00\x00\x00\x01" + "\x88\xb5";
    frame.resize(12 + len, 'n');
    s.U8(0).U8(static_cast<uint8_t>(pieces - 1));
    const size_t per = frame.size() / pieces;
    for (uint8_t i = 0; i < pieces; ++i) {
      const size_t from = i * per;
      const size_t n = i + 1 == pieces ? frame.size() - from : per;
      s.U8(2).U16(static_cast<uint16_t>(n)).Text(frame.substr(from, n));
    }
    s.U8(1);  // notify by MMIO
    return *this;
  }
  NetSeed& Rx(uint8_t buffers, bool small = false) {
    s.U8(3).U8(static_cast<uint8_t>(buffers - 1));
    for (int i = 0; i < buffers; ++i) {
      if (small) {
        s.U8(4).U16(64);  // 64 bytes
      } else {
        s.U8(3).U16(0);  // 1526 bytes
      }
    }
    s.U8(0);
    return *this;
  }
  NetSeed& Inject(uint16_t len) {
    s.U8(4).U8(1).U16(len);
    std::string frame(len, 'w');
    for (size_t i = 0; i < 12 && i < frame.size(); ++i) frame[i] = 0;
    s.Text(frame);
    return *this;
  }
};

void NetSeeds(const fs::path& dir) {
  Write(dir, "both-ways", NetSeed().Rx(2).Tx(60).Tx(1514, 3, 0xee).Inject(74).Inject(1526).s);
  Write(dir, "sizes", NetSeed().Tx(13).Tx(1519).Tx(14).Rx(3, true).Inject(200).Inject(10).s);
  NetSeed r;
  r.Rx(4).Inject(100).Tx(100);
  r.s.U8(6).U8(3).U8(1);     // reset, queues of 8
  r.s.U8(7).U8(1).U8(0x42);  // snapshot, restored with another MAC
  r.Rx(1).Inject(64).Tx(64, 2);
  Write(dir, "reset-restore", r.s);
  NetSeed l;
  l.s = FuzzScript();
  l.s.U8(0).U16(3000).U16(1600).U8(2).U8(1).U16(3000).U16(1600).U8(2).U8(1).U8(2);  // limited
  l.Tx(1000).Tx(1000).Tx(1000).Rx(4).Inject(1000).Inject(1000);
  l.s.U8(5).U16(1000).U8(1);  // a second later, retry tx
  l.s.U8(5).U16(1000).U8(0);  // and rx
  Write(dir, "rate-limited", l.s);
}

}  // namespace
}  // namespace forkd::vmm::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  forkd::vmm::fuzz::MmioSeeds(dir / "mmio");
  forkd::vmm::fuzz::VirtqueueSeeds(dir / "virtqueue");
  forkd::vmm::fuzz::VsockSeeds(dir / "vsock");
  forkd::vmm::fuzz::NetSeeds(dir / "net");
  return 0;
}

// Harness (a): virtio-mmio register reads and writes in any order against
// rng, vsock or net (the first byte picks the device), over a real bounded
// guest memory. Operations: a register write or read at a known register or
// any offset (config space included) with any width; a guest write into its
// own RAM (rings, descriptors); a notify by Kick; a scripted driver
// bring-up with fuzzed queue size and ring addresses (so deep states are
// reached quickly); a restore of a fuzzed device state; a save + restore
// round trip into a fresh transport.
//
// Promises checked after every operation: Magic/Version/DeviceID read right;
// FEATURES_OK is never set with features outside the offer or without
// VERSION_1; DRIVER_OK never without FEATURES_OK; a live (ready) queue's
// rings lie inside guest memory... unless a restore put them there, which
// Pop then refuses; a state the transport saved restores and saves back
// identically. No failure is a host failure (rng's entropy and the net tap
// work here). ASan/UBSan check every access.
#include <sys/socket.h>

#include <array>
#include <memory>
#include <string>

#include "forkd/vmm/devices/virtio/mmio_transport.h"
#include "forkd/vmm/devices/virtio/net.h"
#include "forkd/vmm/devices/virtio/rng.h"
#include "forkd/vmm/devices/virtio/vsock.h"
#include "forkd/vmm/fuzz/check.h"
#include "forkd/vmm/fuzz/entries.h"
#include "forkd/vmm/fuzz/fuzz_input.h"
#include "forkd/vmm/fuzz/guest_arena.h"
#include "forkd/vmm/fuzz/ring_driver.h"

namespace forkd::vmm::fuzz {
namespace {

using namespace virtio;

constexpr uint64_t kMemSize = 64 * 1024;

constexpr std::array<uint64_t, 25> kRegisters = {
    reg::kMagic,          reg::kVersion,           reg::kDeviceId,         reg::kVendorId,
    reg::kDeviceFeatures, reg::kDeviceFeaturesSel, reg::kDriverFeatures,   reg::kDriverFeaturesSel,
    reg::kQueueSel,       reg::kQueueNumMax,       reg::kQueueNum,         reg::kQueueReady,
    reg::kQueueNotify,    reg::kInterruptStatus,   reg::kInterruptAck,     reg::kStatus,
    reg::kQueueDescLow,   reg::kQueueDescHigh,     reg::kQueueDriverLow,   reg::kQueueDriverHigh,
    reg::kQueueDeviceLow, reg::kQueueDeviceHigh,   reg::kConfigGeneration, reg::kConfig,
    reg::kConfig + 4};

struct NullBackend : VsockBackend {
  void OnConnected(VsockConnKey) override {}
  void OnGuestConnect(VsockConnKey) override {}
  void OnActivity() override {}
  void OnClosed(VsockConnKey) override {}
};

// One device behind its transport; the net device's tap is a socketpair
// whose far end nobody reads (a full tap drops frames, as a real one does;
// net_fuzz.cc checks what reaches it).
struct Rig {
  int kind = 0;
  NullBackend backend;
  UniqueFd tap_peer;
  uint64_t irqs = 0;
  bool host_failure = false;
  std::unique_ptr<MmioTransport> t;

  Rig(int k, const GuestMemory& mem) : kind(k) {
    std::unique_ptr<VirtioDevice> dev;
    std::string name;
    switch (kind) {
      case 0:
        dev = std::make_unique<Rng>();
        name = Rng::kName;
        break;
      case 1:
        dev = std::make_unique<Vsock>(3, &backend);
        name = Vsock::kName;
        break;
      default: {
        int sv[2];
        FORKD_FUZZ_CHECK(
            ::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
            "socketpair");
        tap_peer.reset(sv[1]);
        dev = std::make_unique<Net>(UniqueFd(sv[0]), MacAddress{2, 0, 0, 0, 0, 1});
        name = Net::kName;
      }
    }
    t = std::make_unique<MmioTransport>(name, mem, std::move(dev), [this] { ++irqs; });
    t->set_error_handler([this](const absl::Status&, bool host) { host_failure |= host; });
    t->set_retry([](size_t, std::chrono::nanoseconds) {});
  }
};

uint64_t Offset(FuzzInput& in) {
  const uint8_t pick = in.U8();
  if (pick < 0xe0) return kRegisters[pick % kRegisters.size()];
  return in.U16();  // anything in the window, config space included
}

void CheckInvariants(Rig& rig, const GuestMemory& mem, bool restored) {
  RingDriver d(mem, rig.t.get());
  FORKD_FUZZ_CHECK(d.R(reg::kMagic) == kMagicValue, "magic");
  FORKD_FUZZ_CHECK(d.R(reg::kVersion) == kMmioVersion, "version");
  const TransportState s = rig.t->save();
  const uint32_t id = d.R(reg::kDeviceId);
  FORKD_FUZZ_CHECK(id == (rig.kind == 0   ? Rng::kDeviceId
                          : rig.kind == 1 ? Vsock::kDeviceId
                                          : Net::kDeviceId),
                   "device id");
  FORKD_FUZZ_CHECK(!rig.host_failure, "a guest made the device report a host failure");
  if (restored) return;  // a fuzzed snapshot may hold any status
  const uint64_t offered = kFeatureVersion1 | (rig.kind == 2 ? kNetFeatureMac : 0);
  if (s.status & kStatusFeaturesOk) {
    FORKD_FUZZ_CHECK((s.driver_features & ~offered) == 0, "FEATURES_OK with unoffered features");
    FORKD_FUZZ_CHECK(s.driver_features & kFeatureVersion1, "FEATURES_OK without VERSION_1");
  }
  if (s.status & kStatusDriverOk) {
    ++reached().live_devices;
    FORKD_FUZZ_CHECK(s.status & kStatusFeaturesOk, "DRIVER_OK without FEATURES_OK");
  }
  for (const auto& q : s.queues) {
    if (!q.ready) continue;
    virtio::Queue probe(q.max_size);
    probe.state() = q;
    FORKD_FUZZ_CHECK(probe.Validate(mem).ok(), "a ready queue whose rings do not fit");
  }
}

}  // namespace

int MmioOneInput(const uint8_t* data, size_t size) {
  const GuestMemory& mem = FreshGuestMemory<kMemSize>();
  FuzzInput in(data, size);
  auto rig = std::make_unique<Rig>(in.U8() % 3, mem);
  bool restored = false;
  for (int ops = 0; !in.empty() && ops < 512; ++ops) {
    switch (in.U8() % 7) {
      case 0: {  // register write
        const uint64_t off = Offset(in);
        uint8_t buf[8];
        const size_t width = std::array<size_t, 6>{4, 4, 4, 1, 2, 8}[in.U8() % 6];
        const uint64_t v = in.U64();
        std::memcpy(buf, &v, 8);
        rig->t->Write(off, {buf, width});
        break;
      }
      case 1: {  // register read
        const uint64_t off = Offset(in);
        uint8_t buf[8];
        const size_t width = std::array<size_t, 4>{4, 1, 2, 8}[in.U8() % 4];
        rig->t->Read(off, {buf, width});
        break;
      }
      case 2: {  // the guest writes its RAM
        const uint64_t gpa = in.U16() % kMemSize;
        const auto bytes = in.Bytes(in.U8());
        (void)mem.Write(gpa, bytes.subspan(0, std::min<size_t>(bytes.size(), kMemSize - gpa)));
        break;
      }
      case 3:  // the notifier thread's path; an index past the queues too
        rig->t->Kick(in.U8() % 5);
        break;
      case 4: {  // a well-behaved bring-up with fuzzed size and rings
        RingDriver d(mem, rig->t.get());
        const uint16_t qsize = static_cast<uint16_t>(1u << (in.U8() % 7));
        d.Init(rig->t->queue_count(), qsize,
               in.U8() % 2 ? static_cast<uint32_t>(kNetFeatureMac) : 0);
        break;
      }
      case 5: {  // a fuzzed snapshot of the device
        DeviceState st{rig->t->name(), {}};
        const auto bytes = in.Bytes(in.U8());
        st.bytes.assign(bytes.begin(), bytes.end());
        auto fresh = std::make_unique<Rig>(rig->kind, mem);
        if (fresh->t->RestoreDevice(st).ok()) {
          rig = std::move(fresh);
          restored = true;
        }
        break;
      }
      default: {  // save, restore into a fresh transport, save again
        const DeviceState st = rig->t->SaveDevice();
        auto fresh = std::make_unique<Rig>(rig->kind, mem);
        const absl::Status restore = fresh->t->RestoreDevice(st);
        if (!restore.ok()) std::fprintf(stderr, "%s\n", restore.ToString().c_str());
        FORKD_FUZZ_CHECK(restore.ok(), "a saved state did not restore");
        const DeviceState again = fresh->t->SaveDevice();
        // vsock's restore queues a TRANSPORT_RESET; the saved bytes do not
        // carry it, so the round trip must be exact.
        FORKD_FUZZ_CHECK(again.bytes == st.bytes, "save -> restore -> save differs");
        rig = std::move(fresh);
        break;
      }
    }
    CheckInvariants(*rig, mem, restored);
  }
  return 0;
}

}  // namespace forkd::vmm::fuzz

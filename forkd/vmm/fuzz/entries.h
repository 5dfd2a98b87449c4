// The device harnesses' entry points. Each takes one input and runs it
// against a fresh device; a broken promise aborts (check.h). libfuzzer_main.cc
// turns one of them into LLVMFuzzerTestOneInput; fuzz_replay_test.cc runs
// each over its corpus in the normal build.
#pragma once

#include <cstddef>
#include <cstdint>

namespace forkd::vmm::fuzz {

// virtio-mmio register reads/writes in any order against rng, vsock or net
// (mmio_fuzz.cc).
int MmioOneInput(const uint8_t* data, size_t size);
// A split virtqueue from fuzzed guest memory through Queue::Pop/PushUsed
// (virtqueue_fuzz.cc).
int VirtqueueOneInput(const uint8_t* data, size_t size);
// vsock tx packets and rx buffers, with a synchronous host side
// (vsock_fuzz.cc).
int VsockOneInput(const uint8_t* data, size_t size);
// virtio-net tx frames and rx buffers against a socketpair tap (net_fuzz.cc).
int NetOneInput(const uint8_t* data, size_t size);

// How far the inputs got: counts of the promises each harness checked on a
// real result (not a refusal). The replay test requires the corpus to reach
// them, so a corpus that only exercises the error paths fails.
struct Reached {
  uint64_t chains_popped = 0;     // virtqueue: valid chains checked
  uint64_t live_devices = 0;      // mmio: operations on a device at DRIVER_OK
  uint64_t vsock_rx_packets = 0;  // vsock: packets the guest received, checked
  uint64_t vsock_drained = 0;     // vsock: guest bytes the host socket took
  uint64_t net_tx_frames = 0;     // net: frames the tap got, checked
  uint64_t net_rx_frames = 0;     // net: frames the guest got, checked
};
Reached& reached();

}  // namespace forkd::vmm::fuzz

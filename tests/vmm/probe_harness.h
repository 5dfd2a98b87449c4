// Test harness for running the probe guest: serial pipes, a collector that
// drains guest output on its own thread (so a slow test never stalls a vCPU
// in write()), and line waits with generous hang-guard timeouts.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "forkd/vmm/builder.h"
#include "forkd/vmm/machine.h"

namespace forkd::vmm::testing {

// Hang guard only: every wait normally finishes in milliseconds.
inline constexpr std::chrono::seconds kHangGuard{60};

inline std::string ProbeGuestPath() { return FORKD_PROBE_GUEST_PATH; }

// Reads everything written to a pipe into a string, on a thread.
class OutputCollector {
 public:
  OutputCollector();
  ~OutputCollector();
  int write_fd() const { return write_.get(); }
  std::string text() const;
  // Waits until the output contains `needle` at or after byte `from`;
  // returns the offset just past the complete line holding it.
  std::optional<size_t> WaitFor(const std::string& needle, size_t from = 0,
                                std::chrono::milliseconds timeout = kHangGuard) const;
  // Once nothing else writes to the pipe (the VM stopped): everything that
  // was written, guaranteed complete (a marker is sent through the pipe
  // and waited for, then removed).
  std::string DrainedText();
  // Complete lines that start with `prefix`.
  std::vector<std::string> Lines(const std::string& prefix) const;

 private:
  void Run();
  UniqueFd read_, write_;
  UniqueFd stop_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::string text_;
  std::thread thread_;
};

// A pipe whose read end the VMM polls as serial input.
struct InputPipe {
  UniqueFd read, write;
  static InputPipe Make();
  void Send(const std::string& s) const;
};

// One probe-guest VM with its serial plumbing.
struct ProbeVm {
  std::unique_ptr<OutputCollector> out = std::make_unique<OutputCollector>();
  InputPipe in = InputPipe::Make();
  std::unique_ptr<Machine> machine;
};

std::shared_ptr<const Kvm> SharedKvm();
absl::StatusOr<ProbeVm> BootProbe(const std::string& cmdline, uint64_t mem_size = 64 << 20,
                                  int vcpus = 1, VirtioConfig virtio = {});
// "PROBE count N" values in output order.
std::vector<uint64_t> Counts(const OutputCollector& out);

}  // namespace forkd::vmm::testing

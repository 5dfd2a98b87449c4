// Runs forkd-vmm as a child process (one VMM per VM, as forkd will) with a
// control socket, a serial-output collector and a serial-input pipe.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "tests/vmm/probe_harness.h"

namespace forkd::vmm::testing {

inline std::string ForkdVmmPath() { return FORKD_VMM_BINARY_PATH; }

// The guest pin for a boot (docs/guest-pin.md): when `args` boot a --kernel (and maybe an
// --initrd) without --kernel-sha256 or --insecure-skip-guest-verify, the
// `--kernel-sha256 HEX [--initrd-sha256 HEX]` of those files, hashed now -- what forkd does with
// the digests an operator pinned. Empty otherwise (a restore, or a test that pins itself).
absl::StatusOr<std::vector<std::string>> PinArgsFor(const std::vector<std::string>& args);

class VmmProcess {
 public:
  // `args` follow the binary name; --control-fd/--serial-* and PinArgsFor(args) are added.
  static absl::StatusOr<std::unique_ptr<VmmProcess>> Spawn(const std::vector<std::string>& args);
  // The same with another build of the VMM (benchmarks compare builds).
  static absl::StatusOr<std::unique_ptr<VmmProcess>> SpawnBinary(
      const std::string& binary, const std::vector<std::string>& args);
  ~VmmProcess();

  pid_t pid() const { return pid_; }
  OutputCollector& serial() { return *out_; }
  const InputPipe& input() const { return in_; }
  void Send(const std::string& line) const;
  // The supervisor going away: the VMM must stop its VM and exit.
  void CloseControl() { control_.reset(); }
  // Next control line (hang-guarded), or nullopt on EOF/timeout.
  std::optional<std::string> ReadLine();
  // Waits for the process; returns its exit code (or -signal).
  int Wait();
  // SNAPSHOT into `dir`, then STOP: OK only when the snapshot was written and
  // the VMM stopped cleanly (its EXIT line and exit code 0).
  absl::Status SnapshotAndStop(const std::string& dir);
  // Hands the child over to whoever reaps it (e.g. gate::Reap through a
  // pidfd): this object will neither kill nor wait for it any more, since
  // once someone else waited for it the pid may belong to another process.
  pid_t Release() {
    const pid_t pid = pid_;
    pid_ = -1;
    return pid;
  }

 private:
  pid_t pid_ = -1;
  UniqueFd control_;
  std::unique_ptr<OutputCollector> out_ = std::make_unique<OutputCollector>();
  InputPipe in_ = InputPipe::Make();
  std::string buf_;
};

}  // namespace forkd::vmm::testing

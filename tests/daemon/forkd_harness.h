// Runs the real forkd binary as a child process on a temporary data dir and
// unix socket, with a gRPC stub to it, and checks that nothing of a sandbox
// outlives it: VMM processes, pinned namespaces, mounts, files, journal
// records.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "forkd/api/forkd.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace forkd::testing {

// The VMM the daemon tests run: the stand-in (tests/daemon/standin_vmm.cc)
// or the real forkd-vmm with the probe guest (kvm tier).
std::string TestVmmBinary();
bool UsingRealVmm();

class ForkdProcess {
 public:
  // `dir` holds data/ and forkd.sock; `extra` flags follow the defaults.
  ForkdProcess(std::filesystem::path dir, std::vector<std::string> extra = {},
               std::map<std::string, std::string> env = {});
  ~ForkdProcess();

  // The --vmm forkd runs (default TestVmmBinary()); before Start().
  void set_vmm(std::string vmm) { vmm_ = std::move(vmm); }
  // Starts forkd and waits until its health service answers SERVING.
  ::testing::AssertionResult Start();
  // SIGTERM and wait: a clean stop.
  int Stop();
  // SIGKILL and wait: a crash.
  void Kill();
  // Waits for the process to end by itself; returns its wait status.
  int WaitExit();
  bool Healthy();

  forkd::v1::Forkd::Stub& api() { return *stub_; }
  const std::filesystem::path& data() const { return data_; }
  std::string socket() const { return (dir_ / "forkd.sock").string(); }
  std::string Log() const;
  pid_t pid() const { return pid_; }

 private:
  std::filesystem::path dir_, data_;
  std::vector<std::string> extra_;
  std::map<std::string, std::string> env_;
  std::string vmm_ = TestVmmBinary();
  pid_t pid_ = -1;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<forkd::v1::Forkd::Stub> stub_;
};

// Live (non-zombie) VMM processes serving `data_dir`.
std::vector<pid_t> VmmProcessesOf(const std::filesystem::path& data_dir);
// Everything a stopped or restarted forkd must not have left of its
// sandboxes: empty string when clean, else what is left.
std::string Leftovers(const std::filesystem::path& data_dir);

// Builds template `id` (probe guest / stand-in) and returns the final status.
grpc::Status CreateProbeTemplate(forkd::v1::Forkd::Stub& api, const std::string& id,
                                 const std::string& agent_mode = "honest");

}  // namespace forkd::testing

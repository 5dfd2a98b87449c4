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

// The cgroup parent a test's forkd makes its VMs' cgroups in (empty: no
// cgroup2 mount).
std::string CgroupParentOf(const std::filesystem::path& data_dir);

// Live (non-zombie) VMM processes serving `data_dir`, and their keepers
// (forkd/sandbox/keeper).
std::vector<pid_t> VmmProcessesOf(const std::filesystem::path& data_dir);
std::vector<pid_t> KeeperProcessesOf(const std::filesystem::path& data_dir);
// Live keeper and VMM processes of a template build in `data_dir`.
std::vector<pid_t> BuildProcessesOf(const std::filesystem::path& data_dir);
// Everything a stopped or restarted forkd must not have left of its
// sandboxes (processes, files, journal records, pinned namespaces, VM
// cgroups): empty string when clean, else what is left.
std::string Leftovers(const std::filesystem::path& data_dir);

// A host as forkd is deployed on, made in this process's own mount namespace
// (which forkd inherits; the host's mounts are never touched): a root file
// system that is a real mount (the emulated-SVM tier's L1 runs from its
// initramfs, where pivot_root, and so the VMM's jail, is refused) and a
// cgroup2 hierarchy at /sys/fs/cgroup (L1 mounts none). `scratch` (a test's
// temporary directory) holds the root's mount point. Call it while the
// process has one thread.
::testing::AssertionResult MakeHostLike(const std::filesystem::path& scratch);

// A hang guard for one call (never a timing assertion): a forkd that stops
// answering fails the test with its log instead of hanging it until the
// tier's per-test kill, which shows nothing.
void GuardRpc(grpc::ClientContext& ctx);

// Builds template `id` (probe guest / stand-in) and returns the final status.
grpc::Status CreateProbeTemplate(forkd::v1::Forkd::Stub& api, const std::string& id,
                                 const std::string& agent_mode = "honest");

}  // namespace forkd::testing

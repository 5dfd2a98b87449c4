// forkd on real VMs, jailed: the real forkd with the real forkd-vmm and the
// in-tree probe guest, each VMM in its jail (own uid/gid, no capabilities,
// own root) and its own cgroup, in real network namespaces:
//   CreateTemplate -> Fork 4 -> Exec in each -> ForkRunning 2 -> Exec in the
//   children -> kill -9 of forkd: the six jailed VMMs live on (their parent
//   is their keeper, forkd/sandbox/keeper) -> a restart adopts all six, each
//   answers an Exec -> Terminate all -> capacity back -> nothing left
//   (processes, namespaces with their taps and chains, files, journal,
//   cgroups).
// Needs /dev/kvm (kvm label): on PVM development hosts it runs inside the
// emulated-SVM tier's L1 (docs/testing-tiers.md).
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "forkd/api/forkd.grpc.pb.h"
#include "forkd/sandbox/cgroup.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/daemon/forkd_harness.h"
#include "tests/support/requirements.h"
#include "tests/support/temp_dir.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);
FORKD_TEST_REQUIRES(forkd::testing::Requirement::kKvm);

namespace forkd::testing {
namespace {

namespace fs = std::filesystem;

struct Vmm {
  std::string uid_line, cap_eff, cgroup;
};
Vmm Inspect(pid_t pid) {
  Vmm v;
  std::ifstream st("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(st, line)) {
    if (line.rfind("Uid:", 0) == 0) v.uid_line = line.substr(4);
    if (line.rfind("CapEff:", 0) == 0) v.cap_eff = line.substr(7);
  }
  std::ifstream cg("/proc/" + std::to_string(pid) + "/cgroup");
  while (std::getline(cg, line)) {
    if (line.rfind("0::", 0) == 0) v.cgroup = line.substr(3);
  }
  return v;
}
std::string Squash(const std::string& s) {
  std::istringstream in(s);
  std::string out, w;
  while (in >> w) out += (out.empty() ? "" : " ") + w;
  return out;
}

TEST(RealVmmTest, JailedForksOfTheProbeGuestLiveAndLeaveNothing) {
  ASSERT_TRUE(UsingRealVmm());
  TempDir tmp("forkd_real");
  ASSERT_TRUE(MakeHostLike(tmp.path()));
  ForkdProcess forkd(tmp.path(), {"--max-sandboxes", "16"});
  ASSERT_TRUE(forkd.Start()) << forkd.Log();
  // The forkd the test talks to: `forkd`, then the restarted one.
  v1::Forkd::Stub* api_now = &forkd.api();
  {
    grpc::Status s = CreateProbeTemplate(*api_now, "probe");
    ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << forkd.Log();
  }
  auto exec = [&](const std::string& id, std::vector<std::string> argv) {
    grpc::ClientContext ctx;
    GuardRpc(ctx);
    v1::ExecRequest req;
    req.set_sandbox_id(id);
    for (auto& a : argv) req.add_argv(a);
    v1::ExecResponse resp;
    grpc::Status s = api_now->Exec(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << id << ": " << s.error_message();
    return resp;
  };
  const std::string mount = *sandbox::Cgroup2Mount();
  const std::string cg_parent = CgroupParentOf(forkd.data());
  std::vector<std::string> ids;
  std::set<std::string> uids, prngs;
  auto check_vm = [&](const v1::Sandbox& sb) {
    ids.push_back(sb.sandbox_id());
    EXPECT_EQ(exec(sb.sandbox_id(), {"echo", sb.sandbox_id()}).stdout(), sb.sandbox_id() + "\n");
    prngs.insert(exec(sb.sandbox_id(), {"prng"}).stdout());
    const Vmm v = Inspect(sb.vmm_pid());
    // Jailed: every uid the same unprivileged one, no capability.
    std::istringstream u(v.uid_line);
    std::string a, b, c, d;
    u >> a >> b >> c >> d;
    EXPECT_TRUE(a == b && b == c && c == d && a != "0")
        << sb.sandbox_id() << ": Uid:" << v.uid_line;
    uids.insert(a);
    EXPECT_EQ(Squash(v.cap_eff), "0000000000000000") << sb.sandbox_id();
    // In the cgroup forkd made for it.
    EXPECT_EQ(mount + v.cgroup, cg_parent + "/forkd-vm-" + sb.sandbox_id());
  };
  v1::ForkRequest req;
  req.set_template_id("probe");
  req.set_count(4);
  {
    grpc::ClientContext ctx;
    GuardRpc(ctx);
    v1::ForkResponse resp;
    grpc::Status s = api_now->Fork(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << forkd.Log();
    ASSERT_EQ(resp.sandboxes_size(), 4);
    for (const auto& sb : resp.sandboxes()) check_vm(sb);
  }
  {
    grpc::ClientContext ctx;
    GuardRpc(ctx);
    v1::ForkRunningRequest fr;
    fr.set_sandbox_id(ids[0]);
    fr.set_count(2);
    v1::ForkResponse resp;
    grpc::Status s = api_now->ForkRunning(&ctx, fr, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << forkd.Log();
    ASSERT_EQ(resp.sandboxes_size(), 2);
    for (const auto& sb : resp.sandboxes()) check_vm(sb);
  }
  EXPECT_EQ(uids.size(), 6u) << "VMs share a uid";
  EXPECT_EQ(prngs.size(), 6u) << "two forks have the same PRNG state: not reseeded";
  {
    grpc::ClientContext ctx;
    GuardRpc(ctx);
    v1::Capacity c;
    ASSERT_TRUE(api_now->GetCapacity(&ctx, {}, &c).ok());
    EXPECT_EQ(c.live_sandboxes(), 6u);
  }
  // kill -9 of forkd: the jailed VMMs' parent-death signal follows their
  // keepers, so all six live on, and the restart adopts them.
  auto sorted = [](std::vector<pid_t> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  const std::vector<pid_t> vmms = sorted(VmmProcessesOf(forkd.data()));
  EXPECT_EQ(vmms.size(), 6u);
  const std::string first_log = forkd.Log();
  forkd.Kill();
  EXPECT_EQ(sorted(VmmProcessesOf(forkd.data())), vmms) << "VMMs died with forkd";
  ForkdProcess again(tmp.path(), {"--max-sandboxes", "16"});
  ASSERT_TRUE(again.Start()) << again.Log();
  api_now = &again.api();
  {
    grpc::ClientContext ctx;
    GuardRpc(ctx);
    v1::ListSandboxesResponse all;
    ASSERT_TRUE(api_now->ListSandboxes(&ctx, {}, &all).ok());
    std::vector<pid_t> adopted;
    for (const auto& sb : all.sandboxes()) adopted.push_back(sb.vmm_pid());
    EXPECT_EQ(sorted(adopted), vmms) << again.Log();
  }
  // Adopted and still itself: each answers with its own id.
  for (const auto& id : ids) EXPECT_EQ(exec(id, {"echo", id}).stdout(), id + "\n");
  // The parent goes first: its children run on from their own snapshot.
  for (const auto& id : ids) {
    grpc::ClientContext ctx;
    GuardRpc(ctx);
    v1::TerminateRequest t;
    t.set_sandbox_id(id);
    v1::TerminateResponse r;
    EXPECT_TRUE(api_now->Terminate(&ctx, t, &r).ok()) << id;
  }
  {
    grpc::ClientContext ctx;
    GuardRpc(ctx);
    v1::Capacity c;
    ASSERT_TRUE(api_now->GetCapacity(&ctx, {}, &c).ok());
    EXPECT_EQ(c.live_sandboxes(), 0u);
    EXPECT_EQ(c.free_slots(), 16u);
  }
  EXPECT_EQ(Leftovers(again.data()), "") << again.Log();
  EXPECT_TRUE(fs::is_empty(again.data() / "running"));
  again.Stop();
  EXPECT_EQ(Leftovers(again.data()), "");
  std::cout << first_log << again.Log();
}

}  // namespace
}  // namespace forkd::testing

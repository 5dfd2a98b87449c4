// forkd end to end over its real unix socket: the forkd binary, its journal,
// namespaces, taps, nftables chains, the reseed gate and the agent protocol.
// Built twice (tests/daemon/CMakeLists.txt): against the stand-in VMM
// (netns tier: runs where /dev/kvm is missing) and against the real
// forkd-vmm with the probe guest (kvm tier).
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include "forkd/api/forkd.grpc.pb.h"
#include "forkd/sandbox/cgroup.h"
#include "forkd/sandbox/process_identity.h"
#include "gtest/gtest.h"
#include "netfilter/links.h"
#include "netfilter/netns.h"
#include "netfilter/nftables.h"
#include "nlohmann/json.hpp"
#include "tests/daemon/forkd_harness.h"
#include "tests/support/requirements.h"
#include "tests/support/temp_dir.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);
#ifdef FORKD_DAEMON_TEST_REAL_VMM
FORKD_TEST_REQUIRES(forkd::testing::Requirement::kKvm);
// Real VMMs are jailed: the host must let them (forkd_harness.h).
namespace {
class HostLike : public ::testing::Environment {
 public:
  void SetUp() override { ASSERT_TRUE(forkd::testing::MakeHostLike(dir_.path())); }
  forkd::testing::TempDir dir_{"forkd_hostlike"};
};
const auto* const kHostLike = ::testing::AddGlobalTestEnvironment(new HostLike);
}  // namespace
#endif

namespace forkd::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using v1::Sandbox;

// The journal record of sandbox `id`.
nlohmann::json ReadRecordOf(const fs::path& data, const std::string& id) {
  std::ifstream in(data / "journal" / (id + ".json"));
  return nlohmann::json::parse(in, nullptr, false);
}

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(tmp_.path().empty());
    forkd_ = std::make_unique<ForkdProcess>(tmp_.path(), ExtraFlags());
    ASSERT_TRUE(forkd_->Start());
  }
  void TearDown() override {
    if (forkd_) {
      // Whatever a failed test left is terminated, then nothing may remain.
      grpc::ClientContext ctx;
      v1::ListSandboxesResponse all;
      if (forkd_->pid() > 0 && forkd_->api().ListSandboxes(&ctx, {}, &all).ok()) {
        for (const auto& sb : all.sandboxes()) Terminate(sb.sandbox_id());
      }
      forkd_->Stop();
      EXPECT_EQ(Leftovers(forkd_->data()), "") << forkd_->Log();
    }
  }
  virtual std::vector<std::string> ExtraFlags() { return {"--max-sandboxes", "64"}; }

  v1::Forkd::Stub& api() { return forkd_->api(); }

  absl::StatusOr<v1::ForkResponse> Fork(const v1::ForkRequest& req) {
    grpc::ClientContext ctx;
    v1::ForkResponse resp;
    grpc::Status s = api().Fork(&ctx, req, &resp);
    if (!s.ok())
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
    return resp;
  }
  absl::StatusOr<v1::ForkResponse> ForkN(const std::string& tmpl, uint32_t n) {
    v1::ForkRequest req;
    req.set_template_id(tmpl);
    req.set_count(n);
    return Fork(req);
  }
  grpc::Status Terminate(const std::string& id) {
    grpc::ClientContext ctx;
    v1::TerminateRequest req;
    req.set_sandbox_id(id);
    v1::TerminateResponse resp;
    return api().Terminate(&ctx, req, &resp);
  }
  absl::StatusOr<v1::ExecResponse> Exec(const std::string& id, std::vector<std::string> argv) {
    grpc::ClientContext ctx;
    v1::ExecRequest req;
    req.set_sandbox_id(id);
    for (auto& a : argv) req.add_argv(a);
    v1::ExecResponse resp;
    grpc::Status s = api().Exec(&ctx, req, &resp);
    if (!s.ok())
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
    return resp;
  }
  v1::Capacity Capacity() {
    grpc::ClientContext ctx;
    v1::Capacity c;
    EXPECT_TRUE(api().GetCapacity(&ctx, {}, &c).ok());
    return c;
  }
  absl::StatusOr<Sandbox> Get(const std::string& id) {
    grpc::ClientContext ctx;
    v1::GetSandboxRequest req;
    req.set_sandbox_id(id);
    Sandbox sb;
    grpc::Status s = api().GetSandbox(&ctx, req, &sb);
    if (!s.ok())
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
    return sb;
  }

  TempDir tmp_{"forkd_daemon"};
  std::unique_ptr<ForkdProcess> forkd_;
};

TEST_F(DaemonTest, LifecycleForkFourExecTerminate) {
  const v1::Capacity before = Capacity();
  EXPECT_EQ(before.live_sandboxes(), 0u);
  EXPECT_EQ(before.max_sandboxes(), 64u);
  ASSERT_TRUE(CreateProbeTemplate(api(), "base").ok());
  auto forked = ForkN("base", 4);
  ASSERT_TRUE(forked.ok()) << forked.status() << forkd_->Log();
  ASSERT_EQ(forked->sandboxes_size(), 4);
  std::set<std::string> ips;
  for (const auto& sb : forked->sandboxes()) {
    EXPECT_EQ(sb.state(), Sandbox::READY);
    EXPECT_GT(sb.vmm_pid(), 0);
    EXPECT_TRUE(fs::exists(sb.vsock_path())) << sb.vsock_path();
    EXPECT_GT(sb.timings().restore_us(), 0u);
    EXPECT_GT(sb.timings().gate_us(), 0u);
    ips.insert(sb.guest_ipv4());
    // The agent answers through forkd: "ping" each sandbox with a command.
    auto r = Exec(sb.sandbox_id(), {"echo", "hello", sb.sandbox_id()});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->exit_code(), 0);
    EXPECT_EQ(r->stdout(), "hello " + sb.sandbox_id() + "\n");
    auto f = Exec(sb.sandbox_id(), {"false"});
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ(f->exit_code(), 1);
  }
  EXPECT_EQ(ips.size(), 4u) << "guest addresses must differ";
  const v1::Capacity during = Capacity();
  EXPECT_EQ(during.live_sandboxes(), 4u);
  EXPECT_EQ(during.free_slots(), 60u);
  EXPECT_GT(during.sandboxes_pss_bytes(), 0u);
  for (const auto& sb : forked->sandboxes()) EXPECT_TRUE(Terminate(sb.sandbox_id()).ok());
  const v1::Capacity after = Capacity();
  EXPECT_EQ(after.live_sandboxes(), 0u);
  EXPECT_EQ(after.free_slots(), 64u);
  EXPECT_EQ(Leftovers(forkd_->data()), "");
  // A terminated sandbox is gone.
  EXPECT_EQ(Terminate(forked->sandboxes(0).sandbox_id()).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(DaemonTest, BadInputGetsItsCodeAndTheDaemonStaysHealthy) {
  ASSERT_TRUE(CreateProbeTemplate(api(), "base").ok());
  auto with = [](auto edit) {
    v1::ForkRequest r;
    r.set_template_id("base");
    r.set_count(1);
    edit(r);
    return r;
  };
  const struct {
    const char* what;
    v1::ForkRequest req;
    absl::StatusCode code;
  } cases[] = {
      {"id with ../", with([](v1::ForkRequest& r) { r.mutable_spec()->set_sandbox_id("../etc"); }),
       absl::StatusCode::kInvalidArgument},
      {"65-char id",
       with([](v1::ForkRequest& r) { r.mutable_spec()->set_sandbox_id(std::string(65, 'a')); }),
       absl::StatusCode::kInvalidArgument},
      {"template ../", with([](v1::ForkRequest& r) { r.set_template_id("../base"); }),
       absl::StatusCode::kInvalidArgument},
      {"unknown template", with([](v1::ForkRequest& r) { r.set_template_id("nope"); }),
       absl::StatusCode::kNotFound},
      {"count 0", with([](v1::ForkRequest& r) { r.set_count(0); }),
       absl::StatusCode::kInvalidArgument},
      {"count over the limit", with([](v1::ForkRequest& r) { r.set_count(65); }),
       absl::StatusCode::kResourceExhausted},
      {"count over the per-call cap", with([](v1::ForkRequest& r) { r.set_count(100000); }),
       absl::StatusCode::kInvalidArgument},
      {"malformed CIDR", with([](v1::ForkRequest& r) {
         r.mutable_spec()->mutable_egress()->add_allow()->set_cidr("300.0.0.0/8");
       }),
       absl::StatusCode::kInvalidArgument},
      {"host bits in CIDR", with([](v1::ForkRequest& r) {
         r.mutable_spec()->mutable_egress()->add_allow()->set_cidr("203.0.113.1/24");
       }),
       absl::StatusCode::kInvalidArgument},
      {"port 70000", with([](v1::ForkRequest& r) {
         auto* a = r.mutable_spec()->mutable_egress()->add_allow();
         a->set_cidr("203.0.113.0/24");
         a->add_ports()->set_first(70000);
       }),
       absl::StatusCode::kInvalidArgument},
      {"inverted ports", with([](v1::ForkRequest& r) {
         auto* a = r.mutable_spec()->mutable_egress()->add_allow();
         a->set_cidr("203.0.113.0/24");
         auto* p = a->add_ports();
         p->set_first(90);
         p->set_last(80);
       }),
       absl::StatusCode::kInvalidArgument},
      {"duplicate ids", with([](v1::ForkRequest& r) {
         r.set_count(0);
         r.add_sandboxes()->set_sandbox_id("dup");
         r.add_sandboxes()->set_sandbox_id("dup");
       }),
       absl::StatusCode::kInvalidArgument},
      {"netns path not a namespace",
       with([](v1::ForkRequest& r) { r.mutable_spec()->set_netns_path("/etc/hostname"); }),
       absl::StatusCode::kInvalidArgument},
      {"cgroup outside cgroup2",
       with([](v1::ForkRequest& r) { r.mutable_spec()->set_cgroup_path("/tmp"); }),
       absl::StatusCode::kInvalidArgument},
      {"DNS names without --dns-upstream", with([](v1::ForkRequest& r) {
         r.mutable_spec()->mutable_egress()->add_allow_dns("example.com");
       }),
       absl::StatusCode::kFailedPrecondition},
      {"a bad DNS name", with([](v1::ForkRequest& r) {
         r.mutable_spec()->mutable_egress()->add_allow_dns("bad..example.com");
       }),
       absl::StatusCode::kInvalidArgument},
  };
  for (const auto& c : cases) {
    auto r = Fork(c.req);
    EXPECT_EQ(r.status().code(), c.code) << c.what << ": " << r.status();
    EXPECT_TRUE(forkd_->Healthy()) << "unhealthy after " << c.what;
  }
  // Secret env values never reach a message or the log.
  auto secret = Fork(with([](v1::ForkRequest& r) {
    auto* e = r.mutable_spec()->add_env();
    e->set_name("TOKEN");
    e->set_value(std::string("s3cr3t-value\0", 13));
    e->set_secret(true);
  }));
  EXPECT_EQ(secret.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(secret.status().message()).find("s3cr3t"), std::string::npos);
  // Positive control: the same template forks fine with valid input, and an
  // existing id is ALREADY_EXISTS.
  auto ok = Fork(with([](v1::ForkRequest& r) {
    r.mutable_spec()->set_sandbox_id("good");
    auto* a = r.mutable_spec()->mutable_egress()->add_allow();
    a->set_cidr("203.0.113.0/24");
    a->set_protocol(v1::EgressRule::TCP);
    a->add_ports()->set_first(443);
  }));
  ASSERT_TRUE(ok.ok()) << ok.status();
  auto again = Fork(with([](v1::ForkRequest& r) { r.mutable_spec()->set_sandbox_id("good"); }));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists) << again.status();
  EXPECT_EQ(forkd_->Log().find("s3cr3t"), std::string::npos) << "a secret reached the log";
  // Template ids and a second build of the same id.
  EXPECT_EQ(CreateProbeTemplate(api(), "../x").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(CreateProbeTemplate(api(), "base").error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(CreateProbeTemplate(api(), "m", "bogus").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // Deleting a template with live forks needs force.
  {
    grpc::ClientContext ctx;
    v1::DeleteTemplateRequest d;
    d.set_template_id("base");
    v1::DeleteTemplateResponse resp;
    EXPECT_EQ(api().DeleteTemplate(&ctx, d, &resp).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }
  {
    grpc::ClientContext ctx;
    v1::DeleteTemplateRequest d;
    d.set_template_id("base");
    d.set_force(true);
    v1::DeleteTemplateResponse resp;
    ASSERT_TRUE(api().DeleteTemplate(&ctx, d, &resp).ok());
    EXPECT_EQ(resp.terminated(), 1u);
  }
  EXPECT_TRUE(forkd_->Healthy());
}

TEST_F(DaemonTest, AForkThatFailsTheGateIsReapedNeverReady) {
  ASSERT_TRUE(CreateProbeTemplate(api(), "liar", "refuse").ok());
  v1::ForkRequest req;
  req.set_template_id("liar");
  req.add_sandboxes()->set_sandbox_id("l1");
  auto r = Fork(req);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_NE(std::string(r.status().message()).find("reaped"), std::string::npos) << r.status();
  auto sb = Get("l1");
  ASSERT_TRUE(sb.ok()) << sb.status();
  EXPECT_EQ(sb->state(), Sandbox::REAPED);
  EXPECT_NE(sb->reap_cause().find("gate"), std::string::npos) << sb->reap_cause();
  EXPECT_EQ(Capacity().live_sandboxes(), 0u);
  auto e = Exec("l1", {"echo", "x"});
  EXPECT_EQ(e.status().code(), absl::StatusCode::kFailedPrecondition) << e.status();
  EXPECT_EQ(Leftovers(forkd_->data()), "");
  // Positive control: an honest template of the same build forks.
  ASSERT_TRUE(CreateProbeTemplate(api(), "honest").ok());
  auto ok = ForkN("honest", 1);
  ASSERT_TRUE(ok.ok()) << ok.status();
}

TEST_F(DaemonTest, ExitWatcherReapsAVmmKilledFromOutside) {
  ASSERT_TRUE(CreateProbeTemplate(api(), "base").ok());
  grpc::ClientContext wctx;
  auto watch = api().WatchEvents(&wctx, {});
  watch->WaitForInitialMetadata();
  auto r = ForkN("base", 2);
  ASSERT_TRUE(r.ok()) << r.status();
  const Sandbox victim = r->sandboxes(0), other = r->sandboxes(1);
  ASSERT_EQ(::kill(victim.vmm_pid(), SIGKILL), 0);
  v1::Event e;
  bool reaped = false;
  while (!reaped && watch->Read(&e)) {
    reaped = e.kind() == v1::Event::REAPED && e.sandbox_id() == victim.sandbox_id();
  }
  ASSERT_TRUE(reaped);
  // Its keeper, forkd's child, reported how it ended.
  EXPECT_EQ(e.cause(), "vmm killed by signal 9");
  auto sb = Get(victim.sandbox_id());
  ASSERT_TRUE(sb.ok());
  EXPECT_EQ(sb->state(), Sandbox::REAPED);
  EXPECT_EQ(Capacity().live_sandboxes(), 1u);
  EXPECT_EQ(Exec(victim.sandbox_id(), {"true"}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // The other one is untouched.
  auto ok = Exec(other.sandbox_id(), {"echo", "alive"});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->stdout(), "alive\n");
  EXPECT_FALSE(fs::exists(forkd_->data() / "netns" / victim.sandbox_id()));
  EXPECT_FALSE(fs::exists(forkd_->data() / "sandboxes" / victim.sandbox_id()));
  wctx.TryCancel();
}

// Killing a VMM's keeper (forkd/sandbox/keeper, the VMM's parent) kills
// the jailed VMM (its PR_SET_PDEATHSIG follows the keeper), and the exit
// watcher reaps the sandbox with the keeper's death as its cause. Positive
// control: before, it answers; the other sandbox still does after.
TEST_F(DaemonTest, KillingAVmmsKeeperKillsItAndReapsItsSandbox) {
  ASSERT_TRUE(CreateProbeTemplate(api(), "base").ok());
  grpc::ClientContext wctx;
  auto watch = api().WatchEvents(&wctx, {});
  watch->WaitForInitialMetadata();
  auto r = ForkN("base", 2);
  ASSERT_TRUE(r.ok()) << r.status();
  const Sandbox victim = r->sandboxes(0), other = r->sandboxes(1);
  ASSERT_TRUE(Exec(victim.sandbox_id(), {"true"}).ok());
  auto keeper = sandbox::ParentOf(victim.vmm_pid());
  ASSERT_TRUE(keeper.ok()) << keeper.status();
  ASSERT_NE(*keeper, forkd_->pid()) << "the VMM is forkd's own child";
  EXPECT_EQ(sandbox::ParentOf(*keeper).value_or(-1), forkd_->pid());
  const int vmm_pidfd = static_cast<int>(::syscall(SYS_pidfd_open, victim.vmm_pid(), 0));
  ASSERT_GE(vmm_pidfd, 0) << std::strerror(errno);
  ASSERT_EQ(::kill(*keeper, SIGKILL), 0);
  v1::Event e;
  bool reaped = false;
  while (!reaped && watch->Read(&e)) {
    reaped = e.kind() == v1::Event::REAPED && e.sandbox_id() == victim.sandbox_id();
  }
  ASSERT_TRUE(reaped);
  EXPECT_EQ(e.cause(), "vmm keeper killed by signal 9 (the vmm died with it)");
  pollfd p{vmm_pidfd, POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 1) << "the VMM outlived its keeper";
  ::close(vmm_pidfd);
  auto sb = Get(victim.sandbox_id());
  ASSERT_TRUE(sb.ok());
  EXPECT_EQ(sb->state(), Sandbox::REAPED);
  auto ok = Exec(other.sandbox_id(), {"echo", "alive"});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->stdout(), "alive\n");
  EXPECT_EQ(VmmProcessesOf(forkd_->data()), std::vector<pid_t>{other.vmm_pid()});
  wctx.TryCancel();
}

// Every VMM runs jailed as its own uid (the jail's uid is what /proc shows
// as its file-system uid: the real forkd-vmm has it as every uid, the
// stand-in only there), its socket directory is that uid's alone, and it
// sits in a cgroup forkd made for it with the limits written; everything
// goes at Terminate.
TEST_F(DaemonTest, EachVmmRunsAsItsOwnUidInItsOwnCgroup) {
  ASSERT_TRUE(CreateProbeTemplate(api(), "base").ok());
  auto r = ForkN("base", 2);
  ASSERT_TRUE(r.ok()) << r.status();
  std::set<uint32_t> uids;
  const std::string parent = CgroupParentOf(forkd_->data());
  for (const auto& sb : r->sandboxes()) {
    std::ifstream rec(forkd_->data() / "journal" / (sb.sandbox_id() + ".json"));
    const auto j = nlohmann::json::parse(rec);
    const uint32_t uid = j.value("uid", 0u);
    EXPECT_GE(uid, 100000u) << j.dump();
    uids.insert(uid);
    // The process: its fs uid is the jail's (field 4 of Uid:).
    std::ifstream st("/proc/" + std::to_string(sb.vmm_pid()) + "/status");
    std::string line, fsuid;
    while (std::getline(st, line)) {
      if (line.rfind("Uid:", 0) == 0) {
        std::istringstream in(line.substr(4));
        std::string a, b, c;
        in >> a >> b >> c >> fsuid;
      }
    }
    EXPECT_EQ(fsuid, std::to_string(uid)) << sb.sandbox_id();
    // Its socket directory: that uid's, 0700, and the socket in it.
    struct stat d {};
    const fs::path vm_dir = fs::path(sb.vsock_path()).parent_path();
    ASSERT_EQ(::stat(vm_dir.c_str(), &d), 0) << vm_dir;
    EXPECT_EQ(d.st_uid, uid);
    EXPECT_EQ(d.st_mode & 0777, 0700u);
    // Its cgroup: forkd's, named after it, with it inside.
    const std::string cg = j.value("vm_cgroup", "");
    EXPECT_EQ(cg, parent + "/forkd-vm-" + sb.sandbox_id());
    std::ifstream procs(cg + "/cgroup.procs");
    std::string pid;
    bool inside = false;
    while (procs >> pid) inside = inside || pid == std::to_string(sb.vmm_pid());
    EXPECT_TRUE(inside) << cg;
    auto ctrl = sandbox::ControllersOf(cg);
    if (ctrl.ok() && ctrl->count("memory")) {  // hosts whose cgroup2 has the controllers
      std::ifstream mem(cg + "/memory.max");
      uint64_t max = 0;
      mem >> max;
      EXPECT_EQ(max, (uint64_t{64} << 20) + (uint64_t{64} << 20)) << cg;
    }
  }
  EXPECT_EQ(uids.size(), 2u) << "two VMs share a uid";
  for (const auto& sb : r->sandboxes()) ASSERT_TRUE(Terminate(sb.sandbox_id()).ok());
  EXPECT_EQ(Leftovers(forkd_->data()), "");
}

// A Fork naming `cgroup_path` (the caller's cgroup: a Kubernetes pod's)
// gets its VM's cgroup made under that path, with the VMM in it (not in the
// given one), and only the VM's cgroup goes at Terminate. Where the host's
// cgroup2 has the memory controller (not this development host: hugetlb
// only, run with the waiver), forkd enabled it in the given cgroup and the
// VM's limit is written. Positive control: a Fork without it goes under
// forkd's --vmm-cgroup-parent.
TEST_F(DaemonTest, AForkNamingACgroupPathGetsItsVmCgroupUnderIt) {
  const std::string parent = CgroupParentOf(forkd_->data());
  if (parent.empty()) GTEST_SKIP() << "no cgroup2 mount on this host: nothing to place";
  const std::string pod = parent + "/pod-caller";
  ASSERT_EQ(::mkdir(pod.c_str(), 0755), 0) << pod << ": " << std::strerror(errno);
  ASSERT_TRUE(CreateProbeTemplate(api(), "base").ok());
  v1::ForkRequest req;
  req.set_template_id("base");
  auto* in_pod = req.add_sandboxes();
  in_pod->set_sandbox_id("in-pod");
  in_pod->set_cgroup_path(pod);
  req.add_sandboxes()->set_sandbox_id("plain");
  auto r = Fork(req);
  ASSERT_TRUE(r.ok()) << r.status() << forkd_->Log();
  auto cgroup_of = [](pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/cgroup");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("0::", 0) == 0) return line.substr(3);
    }
    return std::string();
  };
  const std::string mount = *sandbox::Cgroup2Mount();
  for (const auto& sb : r->sandboxes()) {
    const std::string want =
        (sb.sandbox_id() == "in-pod" ? pod : parent) + "/forkd-vm-" + sb.sandbox_id();
    const auto j = ReadRecordOf(forkd_->data(), sb.sandbox_id());
    EXPECT_EQ(j.value("vm_cgroup", ""), want) << j.dump();
    EXPECT_EQ(mount + cgroup_of(sb.vmm_pid()), want) << sb.sandbox_id();
  }
  EXPECT_EQ(r->sandboxes(0).cgroup_path(), pod);
  {
    std::ifstream procs(pod + "/cgroup.procs");
    std::string any;
    EXPECT_FALSE(procs >> any) << "a process in the given cgroup itself: " << any;
  }
  auto ctrl = sandbox::ControllersOf(pod);
  if (ctrl.ok() && ctrl->count("memory")) {
    std::ifstream sub(pod + "/cgroup.subtree_control");
    std::string enabled((std::istreambuf_iterator<char>(sub)), std::istreambuf_iterator<char>());
    EXPECT_NE(enabled.find("memory"), std::string::npos) << enabled;
    std::ifstream mem(pod + "/forkd-vm-in-pod/memory.max");
    uint64_t max = 0;
    mem >> max;
    EXPECT_EQ(max, (uint64_t{64} << 20) + (uint64_t{64} << 20));
  } else {
    std::cout << "NOTE: this host's cgroup2 lacks the memory controller: placement checked, "
                 "limits not\n";
  }
  for (const auto& sb : r->sandboxes()) ASSERT_TRUE(Terminate(sb.sandbox_id()).ok());
  EXPECT_FALSE(fs::exists(pod + "/forkd-vm-in-pod"));
  EXPECT_TRUE(fs::is_directory(pod)) << "forkd removed the caller's cgroup";
  ASSERT_EQ(::rmdir(pod.c_str()), 0) << std::strerror(errno);
}

// A template build's VMM runs in its own VM cgroup, as a fork's does, and the
// cgroup goes when the build ends. The build's init command checks from
// inside: it fails the build unless its own cgroup is the one named. Control:
// the same check for another build's cgroup fails that build, and that
// failed build leaves no cgroup either.
TEST_F(DaemonTest, ATemplateBuildRunsInItsOwnVmCgroupWhichGoesAfterwards) {
  const std::string parent = CgroupParentOf(forkd_->data());
  if (parent.empty()) GTEST_SKIP() << "no cgroup2 mount on this host: nothing to place";
  if (UsingRealVmm()) {
    GTEST_SKIP() << "the probe guest's agent runs no shell; the stand-in VMM's runs it on the host";
  }
  const std::string mount = *sandbox::Cgroup2Mount();
  auto build = [&](const std::string& id, const std::string& expected_cgroup) {
    grpc::ClientContext ctx;
    GuardRpc(ctx);
    v1::CreateTemplateRequest req;
    req.set_template_id(id);
    req.mutable_probe()->set_agent_mode("honest");
    auto* cmd = req.add_init_commands();
    for (const char* a : {"/bin/sh", "-c", "grep -qx \"$0\" /proc/self/cgroup"}) cmd->add_argv(a);
    cmd->add_argv("0::" + expected_cgroup.substr(mount.size()));
    auto reader = forkd_->api().CreateTemplate(&ctx, req);
    v1::TemplateProgress p;
    while (reader->Read(&p)) {
    }
    return reader->Finish();
  };
  const std::string placed = parent + "/forkd-vm-build-placed";
  grpc::Status s = build("placed", placed);
  EXPECT_TRUE(s.ok()) << s.error_message() << "\n" << forkd_->Log();
  EXPECT_FALSE(fs::exists(placed)) << "the build's cgroup outlived the build";
  s = build("control", placed);
  EXPECT_FALSE(s.ok()) << "the init command did not see its own cgroup";
  EXPECT_NE(s.error_message().find("exited 1"), std::string::npos) << s.error_message();
  EXPECT_FALSE(fs::exists(parent + "/forkd-vm-build-control"));
}

// ForkRunning: a live fork of a running sandbox into N children, each a
// sandbox of its own (netns, tap, chains, gate), all from one snapshot owned
// by a hidden template that goes with its last child.
TEST_F(DaemonTest, ForkRunningMakesChildrenAndItsSnapshotGoesWithTheLast) {
  ASSERT_TRUE(CreateProbeTemplate(api(), "base").ok());
  auto parent = ForkN("base", 1);
  ASSERT_TRUE(parent.ok()) << parent.status();
  const std::string pid = parent->sandboxes(0).sandbox_id();
  auto fork_running = [&](const std::string& id, uint32_t n) -> absl::StatusOr<v1::ForkResponse> {
    grpc::ClientContext ctx;
    v1::ForkRunningRequest req;
    req.set_sandbox_id(id);
    req.set_count(n);
    v1::ForkResponse resp;
    grpc::Status s = api().ForkRunning(&ctx, req, &resp);
    if (!s.ok())
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
    return resp;
  };
  // Bad input, typed.
  EXPECT_EQ(fork_running("nobody", 2).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(fork_running(pid, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fork_running(pid, 17).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fork_running("../x", 1).status().code(), absl::StatusCode::kInvalidArgument);

  auto kids = fork_running(pid, 2);
  ASSERT_TRUE(kids.ok()) << kids.status();
  ASSERT_EQ(kids->sandboxes_size(), 2);
  const std::string hidden = kids->sandboxes(0).template_id();
  EXPECT_NE(hidden, "base");
  EXPECT_EQ(kids->sandboxes(1).template_id(), hidden);
  EXPECT_NE(kids->sandboxes(0).tap(), kids->sandboxes(1).tap());
  EXPECT_NE(kids->sandboxes(0).netns_path(), kids->sandboxes(1).netns_path());
  EXPECT_EQ(Capacity().live_sandboxes(), 3u);
  // The parent and both children answer.
  for (const std::string& id :
       {pid, kids->sandboxes(0).sandbox_id(), kids->sandboxes(1).sandbox_id()}) {
    auto e = Exec(id, {"echo", id});
    ASSERT_TRUE(e.ok()) << id << ": " << e.status();
    EXPECT_EQ(e->stdout(), id + "\n");
  }
  // The hidden template is not listed, and its snapshot is root's, read-only.
  {
    grpc::ClientContext ctx;
    v1::ListTemplatesResponse ts;
    ASSERT_TRUE(api().ListTemplates(&ctx, {}, &ts).ok());
    ASSERT_EQ(ts.templates_size(), 1);
    EXPECT_EQ(ts.templates(0).template_id(), "base");
  }
  const fs::path snap_dir = forkd_->data() / "running" / hidden;
  ASSERT_TRUE(fs::exists(snap_dir / "snap"));
  struct stat st {};
  ASSERT_EQ(::stat((snap_dir / "snap").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
  // The parent goes; the children and the snapshot stay.
  ASSERT_TRUE(Terminate(pid).ok());
  ASSERT_TRUE(Terminate(kids->sandboxes(0).sandbox_id()).ok());
  EXPECT_TRUE(fs::exists(snap_dir)) << "the snapshot went with a child still using it";
  auto e = Exec(kids->sandboxes(1).sandbox_id(), {"echo", "last"});
  ASSERT_TRUE(e.ok()) << e.status();
  // ... and with the last child, the snapshot and its record.
  ASSERT_TRUE(Terminate(kids->sandboxes(1).sandbox_id()).ok());
  EXPECT_FALSE(fs::exists(snap_dir));
  EXPECT_FALSE(fs::exists(forkd_->data() / "journal" / (hidden + ".json")));
  EXPECT_EQ(Capacity().live_sandboxes(), 0u);
  // A parent that is gone is typed too.
  EXPECT_EQ(fork_running(pid, 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Leftovers(forkd_->data()), "");
}

// A fork taken from the standby pool keeps the pooled VMM's uid and cgroup,
// and they go with it (a pool fill that forgot them would leak both).
class StandbyDaemonTest : public DaemonTest {
  std::vector<std::string> ExtraFlags() override {
    auto f = DaemonTest::ExtraFlags();
    f.insert(f.end(), {"--standby", "1"});
    return f;
  }
};

TEST_F(StandbyDaemonTest, APooledForkKeepsItsJailAndCgroupAndLeavesNothing) {
  ASSERT_TRUE(CreateProbeTemplate(api(), "base").ok());
  // The pool fills in the background; this waits for it (a hang guard, not
  // a timing claim).
  for (int i = 0; i < 600; i++) {
    const auto c = Capacity();
    if (c.standby_size() == 1 && c.standby(0).ready() == 1) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(Capacity().standby(0).ready(), 1u);
  auto r = ForkN("base", 1);
  ASSERT_TRUE(r.ok()) << r.status();
  const Sandbox sb = r->sandboxes(0);
  ASSERT_TRUE(sb.timings().from_standby());
  // Its record (under the pooled fork's key) names its uid and cgroup.
  std::string key;
  for (const auto& e : fs::directory_iterator(forkd_->data() / "journal")) {
    std::ifstream in(e.path());
    const auto j = nlohmann::json::parse(in);
    if (j.value("sandbox_id", "") == sb.sandbox_id()) {
      EXPECT_GE(j.value("uid", 0u), 100000u) << j.dump();
      EXPECT_NE(j.value("vm_cgroup", ""), "") << j.dump();
      key = j.value("key", "");
    }
  }
  ASSERT_FALSE(key.empty());
  EXPECT_TRUE(fs::exists(CgroupParentOf(forkd_->data()) + "/forkd-vm-" + key));
  auto e = Exec(sb.sandbox_id(), {"echo", "pooled"});
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_TRUE(Terminate(sb.sandbox_id()).ok());
  EXPECT_FALSE(fs::exists(CgroupParentOf(forkd_->data()) + "/forkd-vm-" + key));
}

TEST_F(DaemonTest, GivenNamespaceKeepsOnlyWhatItHadAfterTerminate) {
  ASSERT_TRUE(CreateProbeTemplate(api(), "base").ok());
  auto ns = netfilter::CreateNetns();
  ASSERT_TRUE(ns.ok());
  const std::string path =
      "/proc/" + std::to_string(::getpid()) + "/fd/" + std::to_string(ns->get());
  v1::ForkRequest req;
  req.set_template_id("base");
  auto* s = req.add_sandboxes();
  s->set_sandbox_id("pod1");
  s->set_netns_path(path);
  auto r = Fork(req);
  ASSERT_TRUE(r.ok()) << r.status() << forkd_->Log();
  const std::string tap = r->sandboxes(0).tap();
  auto rt = netfilter::RtNetlink::Open(ns->get());
  ASSERT_TRUE(rt.ok());
  EXPECT_TRUE(rt->LinkExists(tap));
  auto nft = netfilter::Nftables::Open(ns->get(), 1);
  ASSERT_TRUE(nft.ok());
  auto taps = nft->ListTaps();
  ASSERT_TRUE(taps.ok());
  EXPECT_EQ(*taps, std::vector<std::string>{tap});
  ASSERT_TRUE(Terminate("pod1").ok());
  EXPECT_FALSE(rt->LinkExists(tap));
  taps = nft->ListTaps();
  ASSERT_TRUE(taps.ok());
  EXPECT_TRUE(taps->empty());
}

TEST_F(DaemonTest, ConcurrentForksAndTerminatesLeakNothing) {
  ASSERT_TRUE(CreateProbeTemplate(api(), "base").ok());
  const int rounds = UsingRealVmm() ? 100 : 100;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < rounds; i++) {
        v1::ForkRequest req;
        req.set_template_id("base");
        req.add_sandboxes()->set_sandbox_id("c" + std::to_string(t) + "-" + std::to_string(i));
        auto r = Fork(req);
        if (!r.ok()) {
          failures++;
          ADD_FAILURE() << r.status();
          continue;
        }
        if (!Terminate(r->sandboxes(0).sandbox_id()).ok()) failures++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(Capacity().live_sandboxes(), 0u);
  EXPECT_TRUE(forkd_->Healthy());
  EXPECT_EQ(Leftovers(forkd_->data()), "");
}

// An adopted sandbox `id` of a restarted forkd answers an Exec and terminates
// cleanly; then forkd stops and nothing of it is left.
void ExpectAdoptedAnswersThenLeavesNothing(ForkdProcess& again, const std::string& id) {
  {
    grpc::ClientContext c;
    GuardRpc(c);
    v1::ExecRequest req;
    req.set_sandbox_id(id);
    req.add_argv("echo");
    req.add_argv("adopted");
    v1::ExecResponse resp;
    grpc::Status s = again.api().Exec(&c, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message() << again.Log();
    EXPECT_EQ(resp.stdout(), "adopted\n");
  }
  {
    grpc::ClientContext c;
    GuardRpc(c);
    v1::TerminateRequest req;
    req.set_sandbox_id(id);
    v1::TerminateResponse resp;
    ASSERT_TRUE(again.api().Terminate(&c, req, &resp).ok());
  }
  again.Stop();
  EXPECT_EQ(Leftovers(again.data()), "") << again.Log();
}

// Crash recovery: forkd SIGKILLs itself at each named point of Fork; a
// restart adopts the sandbox that was live before and removes everything of
// the one that was being made. Every forkd here is jailed: a jailed VMM's
// parent is its keeper, not forkd, so it outlives the crash.
class CrashRecoveryTest : public ::testing::TestWithParam<const char*> {};

TEST_P(CrashRecoveryTest, RestartAdoptsTheLiveAndRemovesTheRest) {
  TempDir tmp("forkd_crash");
  {
    ForkdProcess first(tmp.path());
    ASSERT_TRUE(first.Start());
    ASSERT_TRUE(CreateProbeTemplate(first.api(), "base").ok());
    grpc::ClientContext ctx;
    v1::ForkRequest req;
    req.set_template_id("base");
    req.add_sandboxes()->set_sandbox_id("keep");
    v1::ForkResponse resp;
    ASSERT_TRUE(first.api().Fork(&ctx, req, &resp).ok());
    first.Kill();  // a crash with a live sandbox
  }
  {
    ForkdProcess faulty(tmp.path(), {"--test-fault-point", GetParam()},
                        {{"FORKD_ENABLE_TEST_FAULTS", "1"}});
    ASSERT_TRUE(faulty.Start());
    grpc::ClientContext ctx;
    v1::ForkRequest req;
    req.set_template_id("base");
    req.add_sandboxes()->set_sandbox_id("doomed");
    v1::ForkResponse resp;
    grpc::Status s = faulty.api().Fork(&ctx, req, &resp);
    EXPECT_FALSE(s.ok()) << "forkd should have died at " << GetParam();
    const int st = faulty.WaitExit();
    EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << st << faulty.Log();
  }
  ForkdProcess again(tmp.path());
  ASSERT_TRUE(again.Start());
  grpc::ClientContext ctx;
  v1::ListSandboxesResponse all;
  ASSERT_TRUE(again.api().ListSandboxes(&ctx, {}, &all).ok());
  ASSERT_EQ(all.sandboxes_size(), 1) << again.Log();
  EXPECT_EQ(all.sandboxes(0).sandbox_id(), "keep");
  EXPECT_FALSE(fs::exists(again.data() / "netns" / "doomed"));
  EXPECT_FALSE(fs::exists(again.data() / "sandboxes" / "doomed"));
  EXPECT_FALSE(fs::exists(again.data() / "journal" / "doomed.json"));
  // The adopted one still answers, and terminates cleanly.
  ExpectAdoptedAnswersThenLeavesNothing(again, "keep");
}

// A jailed VMM survives `kill -9` of forkd (its parent is its keeper, so the
// jail's PR_SET_PDEATHSIG does not fire), and the next start adopts it: it
// answers an Exec and terminates cleanly. The same holds with --no-jail.
TEST(JailedVmmTest, SurvivesAKillOfForkdAndIsAdoptedByTheRestart) {
  for (const bool jailed : {true, false}) {
    SCOPED_TRACE(jailed ? "jailed" : "--no-jail");
    TempDir tmp("forkd_adopt");
    std::vector<std::string> flags;
    if (!jailed) flags.push_back("--no-jail");
    pid_t vmm = 0, keeper = 0;
    {
      ForkdProcess first(tmp.path(), flags);
      ASSERT_TRUE(first.Start());
      ASSERT_TRUE(CreateProbeTemplate(first.api(), "base").ok());
      grpc::ClientContext ctx;
      v1::ForkRequest req;
      req.set_template_id("base");
      req.add_sandboxes()->set_sandbox_id("live");
      v1::ForkResponse resp;
      ASSERT_TRUE(first.api().Fork(&ctx, req, &resp).ok());
      vmm = resp.sandboxes(0).vmm_pid();
      keeper = sandbox::ParentOf(vmm).value_or(-1);
      const nlohmann::json rec = ReadRecordOf(first.data(), "live");
      EXPECT_EQ(rec.value("keeper_pid", 0), keeper) << rec.dump();
      EXPECT_TRUE(rec.contains("keeper_start_ticks")) << rec.dump();
      first.Kill();
      // Still there once forkd is gone (and reaped), with its keeper.
      EXPECT_EQ(VmmProcessesOf(first.data()), std::vector<pid_t>{vmm});
      EXPECT_EQ(KeeperProcessesOf(first.data()), std::vector<pid_t>{keeper});
    }
    ForkdProcess again(tmp.path(), flags);
    ASSERT_TRUE(again.Start());
    grpc::ClientContext ctx;
    v1::ListSandboxesResponse all;
    ASSERT_TRUE(again.api().ListSandboxes(&ctx, {}, &all).ok());
    ASSERT_EQ(all.sandboxes_size(), 1) << again.Log();
    EXPECT_EQ(all.sandboxes(0).vmm_pid(), vmm);
    ExpectAdoptedAnswersThenLeavesNothing(again, "live");
  }
}

// An adopted VMM that dies later is reaped with an unknown status (its
// keeper is no longer forkd's child), and a REAPED event.
TEST(JailedVmmTest, AnAdoptedVmmThatDiesIsReapedWithAnUnknownStatus) {
  TempDir tmp("forkd_adopt_exit");
  pid_t vmm = 0;
  {
    ForkdProcess first(tmp.path());
    ASSERT_TRUE(first.Start());
    ASSERT_TRUE(CreateProbeTemplate(first.api(), "base").ok());
    grpc::ClientContext ctx;
    v1::ForkRequest req;
    req.set_template_id("base");
    req.add_sandboxes()->set_sandbox_id("live");
    v1::ForkResponse resp;
    ASSERT_TRUE(first.api().Fork(&ctx, req, &resp).ok());
    vmm = resp.sandboxes(0).vmm_pid();
    first.Kill();
  }
  ForkdProcess again(tmp.path());
  ASSERT_TRUE(again.Start());
  grpc::ClientContext wctx;
  auto watch = again.api().WatchEvents(&wctx, {});
  watch->WaitForInitialMetadata();
  ASSERT_EQ(::kill(vmm, SIGKILL), 0);
  v1::Event e;
  bool reaped = false;
  while (!reaped && watch->Read(&e)) {
    reaped = e.kind() == v1::Event::REAPED && e.sandbox_id() == "live";
  }
  ASSERT_TRUE(reaped);
  EXPECT_EQ(e.cause(), "vmm exited (status unknown: adopted after a forkd restart)");
  wctx.TryCancel();
  again.Stop();
  EXPECT_EQ(Leftovers(again.data()), "") << again.Log();
}

// A template build dies with the forkd that ran it (kill -9 in the middle):
// its VMM stops by itself (a build's control socket has no duplicate, so it
// reaches EOF), and what the build leaves, its VM cgroup and work directory,
// the next start removes.
TEST(JailedVmmTest, ABuildCutShortByAKillOfForkdLeavesNothingAfterTheRestart) {
  TempDir tmp("forkd_build_kill");
  std::string cgroup;
  {
    ForkdProcess first(tmp.path(), {});
    ASSERT_TRUE(first.Start());
    if (const std::string parent = CgroupParentOf(first.data()); !parent.empty()) {
      cgroup = parent + "/forkd-vm-build-slow";
    }
    std::atomic<bool> agent_ready{false};
    std::thread build([&] {
      grpc::ClientContext ctx;
      GuardRpc(ctx);
      v1::CreateTemplateRequest req;
      req.set_template_id("slow");
      req.mutable_probe()->set_agent_mode("honest");
      auto* cmd = req.add_init_commands();
      for (const char* a : {"sleep", "600"}) cmd->add_argv(a);
      auto reader = first.api().CreateTemplate(&ctx, req);
      v1::TemplateProgress p;
      while (reader->Read(&p)) {
        if (p.stage() == v1::TemplateProgress::AGENT_READY) agent_ready = true;
      }
      (void)reader->Finish();  // forkd is killed under it
    });
    const auto guard = std::chrono::steady_clock::now() + std::chrono::minutes(2);
    while (!agent_ready && std::chrono::steady_clock::now() < guard) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_TRUE(agent_ready) << first.Log();
    first.Kill();
    build.join();
    // The positive control: the build left its cgroup and work directory.
    if (!cgroup.empty()) {
      EXPECT_TRUE(fs::is_directory(cgroup));
    }
    EXPECT_TRUE(fs::is_directory(first.data() / "templates" / ".build-slow"));
  }
  ForkdProcess again(tmp.path(), {});
  ASSERT_TRUE(again.Start());
  EXPECT_TRUE(BuildProcessesOf(again.data()).empty()) << again.Log();
  if (!cgroup.empty()) {
    EXPECT_FALSE(fs::exists(cgroup)) << again.Log();
  }
  EXPECT_FALSE(fs::exists(again.data() / "templates" / ".build-slow"));
  again.Stop();
  EXPECT_EQ(Leftovers(again.data()), "") << again.Log();
}

// A record whose pids name other processes (a recycled pid, or a forged
// record) is not adopted and those processes are never signalled; the VMM
// and keeper it once named, now unaccounted for, are killed as strays.
// Positive control: the unforged sandbox of the same restart is adopted and
// answers.
TEST(JailedVmmTest, ARecordNamingAnotherProcessIsNotAdopted) {
  TempDir tmp("forkd_forged");
  // Two bystanders the forged record names instead of the VMM and keeper.
  pid_t bystanders[2] = {0, 0};
  for (pid_t& b : bystanders) {
    b = ::fork();
    ASSERT_GE(b, 0);
    if (b == 0) {
      ::execl("/bin/sleep", "sleep", "1000000", nullptr);
      _exit(127);
    }
  }
  pid_t forged_vmm = 0;
  {
    ForkdProcess first(tmp.path());
    ASSERT_TRUE(first.Start());
    ASSERT_TRUE(CreateProbeTemplate(first.api(), "base").ok());
    grpc::ClientContext ctx;
    v1::ForkRequest req;
    req.set_template_id("base");
    req.add_sandboxes()->set_sandbox_id("forged");
    req.add_sandboxes()->set_sandbox_id("honest");
    v1::ForkResponse resp;
    ASSERT_TRUE(first.api().Fork(&ctx, req, &resp).ok());
    forged_vmm = resp.sandboxes(0).vmm_pid();
    first.Kill();
    nlohmann::json rec = ReadRecordOf(first.data(), "forged");
    ASSERT_TRUE(rec.contains("start_ticks") && rec.contains("keeper_start_ticks")) << rec.dump();
    rec["pid"] = bystanders[0];
    rec["keeper_pid"] = bystanders[1];
    std::ofstream(first.data() / "journal" / "forged.json") << rec.dump();
  }
  ForkdProcess again(tmp.path());
  ASSERT_TRUE(again.Start());
  grpc::ClientContext ctx;
  v1::ListSandboxesResponse all;
  ASSERT_TRUE(again.api().ListSandboxes(&ctx, {}, &all).ok());
  ASSERT_EQ(all.sandboxes_size(), 1) << again.Log();
  EXPECT_EQ(all.sandboxes(0).sandbox_id(), "honest");
  for (pid_t b : bystanders) {
    EXPECT_EQ(::waitpid(b, nullptr, WNOHANG), 0) << "bystander " << b << " was signalled";
    ::kill(b, SIGKILL);
    ::waitpid(b, nullptr, 0);
  }
  // The forged record's real VMM (and keeper) died as strays; only the
  // honest sandbox's are left.
  EXPECT_NE(again.Log().find("killed stray forkd-vmm"), std::string::npos) << again.Log();
  const pid_t honest_vmm = all.sandboxes(0).vmm_pid();
  EXPECT_NE(honest_vmm, forged_vmm);
  EXPECT_EQ(VmmProcessesOf(again.data()), std::vector<pid_t>{honest_vmm});
  EXPECT_EQ(KeeperProcessesOf(again.data()),
            std::vector<pid_t>{sandbox::ParentOf(honest_vmm).value_or(-1)});
  {
    grpc::ClientContext c;
    v1::ExecRequest req;
    req.set_sandbox_id("honest");
    req.add_argv("true");
    v1::ExecResponse resp;
    grpc::Status s = again.api().Exec(&c, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  {
    grpc::ClientContext c;
    v1::TerminateRequest req;
    req.set_sandbox_id("honest");
    v1::TerminateResponse resp;
    ASSERT_TRUE(again.api().Terminate(&c, req, &resp).ok());
  }
  again.Stop();
  EXPECT_EQ(Leftovers(again.data()), "") << again.Log();
}

INSTANTIATE_TEST_SUITE_P(AtEachPoint, CrashRecoveryTest,
                         ::testing::Values("after-journal", "after-netns", "after-tap",
                                           "after-chains", "after-spawn", "after-gate"),
                         [](const auto& p) {
                           std::string n = p.param;
                           for (auto& c : n) c = c == '-' ? '_' : c;
                           return n;
                         });

}  // namespace
}  // namespace forkd::testing

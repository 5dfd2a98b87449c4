#include "forkd/templates/builder.h"

#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "agent/client.h"
#include "agent/vsock_connect.h"
#include "common/errno_status.h"
#include "forkd/sandbox/vmm_child.h"
#include "kernel-stage/digest.h"
#include "netfilter/links.h"
#include "netfilter/netns.h"
#include "netfilter/tap_name.h"
#include "spdlog/spdlog.h"

namespace forkd::templates {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr uint32_t kAgentPort = 1024;
// Hang guards: the probe boots in milliseconds, a Linux guest on hardware
// virtualization in about a second.
constexpr auto kReadyTimeout = 30s;
constexpr auto kAgentTimeout = 120s;
constexpr auto kSnapshotTimeout = 120s;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Kills and waits for the build VMM on every exit path.
struct BuildVm {
  std::optional<sandbox::VmmChild> vmm;
  ~BuildVm() {
    if (!vmm) return;
    if (absl::Status s = vmm->KillAndReap(); !s.ok()) {
      spdlog::error("template build: {}", s.ToString());
    }
  }
};

absl::Status WaitForAgent(const std::string& uds, const std::string& serial) {
  const auto deadline = std::chrono::steady_clock::now() + kAgentTimeout;
  absl::Status last = absl::UnavailableError("no attempt");
  while (std::chrono::steady_clock::now() < deadline) {
    auto conn = agent::ConnectVsockMux(uds, kAgentPort, agent::DeadlineIn(2s));
    if (conn.ok()) {
      agent::AgentClient client(std::move(*conn));
      auto pong = client.Ping(agent::DeadlineIn(2s));
      if (pong.ok()) return absl::OkStatus();
      last = pong.status();
    } else {
      last = conn.status();
    }
    std::this_thread::sleep_for(20ms);
  }
  return absl::DeadlineExceededError("the guest agent never answered Ping: " + last.ToString() +
                                     "; serial: " + sandbox::FileTail(serial));
}

absl::Status RunInit(const std::string& uds, const v1::InitCommand& cmd) {
  FORKD_ASSIGN_OR_RETURN(UniqueFd conn,
                         agent::ConnectVsockMux(uds, kAgentPort, agent::DeadlineIn(10s)));
  agent::AgentClient client(std::move(conn));
  agent::v1::ExecRequest req;
  for (const auto& a : cmd.argv()) req.add_argv(a);
  for (const auto& e : cmd.env()) req.add_env(e.name() + "=" + e.value());
  FORKD_ASSIGN_OR_RETURN(agent::v1::ExecResponse resp, client.Exec(req, agent::DeadlineIn(600s)));
  const std::string what = "init command '" + (cmd.argv().empty() ? "" : cmd.argv(0)) + "'";
  if (!resp.error().empty()) return absl::FailedPreconditionError(what + ": " + resp.error());
  if (resp.has_signal()) {
    return absl::FailedPreconditionError(what + " killed by signal " +
                                         std::to_string(resp.signal()));
  }
  if (resp.exit_code() != 0) {
    return absl::FailedPreconditionError(what + " exited " + std::to_string(resp.exit_code()) +
                                         ": " + resp.stderr().substr(0, 400));
  }
  return absl::OkStatus();
}

uint32_t MemoryMibOf(const v1::CreateTemplateRequest& request) {
  if (request.memory_mib() != 0) return request.memory_mib();
  return request.has_linux() ? 256 : 64;
}

absl::StatusOr<TemplateMeta> Build(const BuildEnv& env, const v1::CreateTemplateRequest& request,
                                   const ProgressFn& progress, const fs::path& work,
                                   const std::string& cgroup) {
  const bool linux_guest = request.has_linux();
  const uint32_t mem = MemoryMibOf(request);
  const std::string uds = (work / "build.sock").string();
  const std::string serial = (work / "serial.log").string();

  // The guest pin, re-verified before anything of the build exists.
  FORKD_RETURN_IF_ERROR(env.guests->VerifyForBuild(linux_guest));
  if (linux_guest && env.guests->insecure_skip_guest_verify()) {
    spdlog::warn(
        "--insecure-skip-guest-verify: template {} boots kernel {} (sha256 {}) unverified; its "
        "snapshot is stamped unpinned and pinned daemons refuse it",
        request.template_id(), env.guests->config().kernel, env.guests->kernel_hex());
  }

  // A scratch namespace and tap for the template's NIC; both go away with
  // the namespace handle when this function returns.
  FORKD_ASSIGN_OR_RETURN(UniqueFd netns, netfilter::CreateNetns());
  const std::string tap =
      netfilter::BuildTapName(static_cast<uint32_t>(::getpid()) ^ static_cast<uint32_t>(NowMs()));
  FORKD_RETURN_IF_ERROR(netfilter::CreateTap(netns.get(), {.name = tap,
                                                           .owner = env.vmm_uid,
                                                           .group = env.vmm_uid,
                                                           .persistent = true,
                                                           .vnet_hdr = true})
                            .status());
  const std::string netns_path =
      "/proc/" + std::to_string(::getpid()) + "/fd/" + std::to_string(netns.get());

  sandbox::VmmSpawnOptions o;
  o.keeper = env.keeper_binary;
  o.binary = env.vmm_binary;
  o.serial_out = serial;
  o.keep_control = false;
  o.cgroup_dir = cgroup;
  std::string cmdline;
  FORKD_ASSIGN_OR_RETURN(o.args, sandbox::PrepareBuildJail(env.jail, env.vmm_uid, work));
  const GuestFilesConfig& files = env.guests->config();
  if (linux_guest) {
    // Verified above; forkd-vmm then checks the bytes it loads against the
    // same digests, so nothing can be swapped in between (docs/guest-pin.md).
    if (env.guests->insecure_skip_guest_verify()) {
      o.args.emplace_back("--insecure-skip-guest-verify");
    } else {
      o.args.insert(o.args.end(), {"--kernel-sha256", env.guests->kernel_hex()});
      if (!files.initrd.empty()) {
        o.args.insert(o.args.end(), {"--initrd-sha256", env.guests->initrd_hex()});
      }
    }
    o.args.insert(o.args.end(), {"--kernel", files.kernel});
    if (!files.initrd.empty()) o.args.insert(o.args.end(), {"--initrd", files.initrd});
    cmdline = "console=ttyS0 reboot=k panic=-1 quiet " + request.linux().extra_cmdline();
  } else {
    // The in-tree probe guest, pinned to its own digest at daemon start.
    o.args.insert(o.args.end(),
                  {"--kernel", files.probe_guest, "--kernel-sha256", env.guests->probe_hex()});
    const std::string mode =
        request.probe().agent_mode().empty() ? "honest" : request.probe().agent_mode();
    cmdline = "probe.scenario=agent probe.agent=" + mode;
  }
  o.args.insert(o.args.end(), {"--cmdline", cmdline, "--mem-mib", std::to_string(mem), "--vcpus",
                               std::to_string(request.vcpus() ? request.vcpus() : 1), "--vsock-cid",
                               "3", "--vsock-uds", uds, "--net-tap", tap, "--net-netns", netns_path,
                               "--net-mac", "02:00:00:00:00:01"});
  BuildVm vm;
  FORKD_ASSIGN_OR_RETURN(vm.vmm, sandbox::VmmChild::Spawn(o));
  FORKD_RETURN_IF_ERROR(vm.vmm->Expect("READY", kReadyTimeout, serial));
  progress(v1::TemplateProgress::BOOT,
           "guest booting (forkd-vmm pid " + std::to_string(vm.vmm->pid()) + ")");
  FORKD_RETURN_IF_ERROR(WaitForAgent(uds, serial));
  progress(v1::TemplateProgress::AGENT_READY, "agent answered Ping");
  for (const auto& cmd : request.init_commands()) {
    FORKD_RETURN_IF_ERROR(RunInit(uds, cmd));
    progress(v1::TemplateProgress::INIT_COMMAND, "ran " + cmd.argv(0));
  }
  TemplateMeta meta;
  meta.id = request.template_id();
  meta.guest = linux_guest ? "linux" : "probe";
  meta.memory_mib = mem;
  meta.kernel_sha256 = linux_guest ? env.guests->kernel_hex() : env.guests->probe_hex();
  meta.created_unix_ms = NowMs();
  const fs::path snap = work / "snap";
  FORKD_RETURN_IF_ERROR(vm.vmm->Send("SNAPSHOT " + snap.string()));
  FORKD_RETURN_IF_ERROR(vm.vmm->Expect("OK", kSnapshotTimeout, serial));
  FORKD_RETURN_IF_ERROR(vm.vmm->Send("STOP"));
  (void)vm.vmm->ReadLine(10s);  // EXIT ...; the destructor reaps the process
  progress(v1::TemplateProgress::SNAPSHOT, "snapshot written");
  return meta;
}

}  // namespace

bool IsProbeAgentMode(const std::string& mode) {
  return mode.empty() || mode == "honest" || mode == "refuse" || mode == "silent" ||
         mode == "late" || mode == "garbage";
}

absl::StatusOr<TemplateMeta> BuildTemplate(const BuildEnv& env,
                                           const v1::CreateTemplateRequest& request,
                                           const ProgressFn& progress) {
  const fs::path work = env.templates_dir / (".build-" + request.template_id());
  const fs::path final_dir = env.templates_dir / request.template_id();
  std::error_code ec;
  fs::remove_all(work, ec);
  fs::create_directories(work, ec);
  if (ec) return absl::InternalError("create " + work.string() + ": " + ec.message());
  std::string cgroup;
  if (env.cgroups != nullptr && env.cgroups->policy().enabled) {
    cgroup = env.cgroups->PathFor("build-" + request.template_id(), "");
    // An empty one left by an earlier build of this id goes; one that still
    // holds a process is an error.
    absl::Status made = sandbox::RemoveVmCgroup(cgroup);
    if (made.ok()) {
      made = env.cgroups->Create(cgroup, "", env.cgroups->LimitsFor(MemoryMibOf(request)));
    }
    if (!made.ok()) {  // Create leaves nothing behind on error
      fs::remove_all(work, ec);
      return made;
    }
  }
  auto meta = Build(env, request, progress, work, cgroup);
  // Build returned: its VMM and keeper are reaped; nothing else belongs there.
  if (absl::Status removed = sandbox::KillAndRemoveVmCgroup(cgroup); !removed.ok()) {
    // The template is good; forkd's next start removes unowned VM cgroups.
    spdlog::warn("template {}: build cgroup left behind: {}", request.template_id(),
                 removed.ToString());
  }
  if (meta.ok()) {
    fs::remove(work / "serial.log", ec);
    fs::remove(work / "build.sock", ec);
    meta->dir = final_dir;
    fs::rename(work, final_dir, ec);
    if (ec) {
      meta = absl::InternalError("rename " + work.string() + ": " + ec.message());
    } else if (absl::Status s = WriteMeta(*meta); !s.ok()) {
      meta = s;
      fs::remove_all(final_dir, ec);
    }
  }
  if (!meta.ok()) fs::remove_all(work, ec);
  return meta;
}

}  // namespace forkd::templates

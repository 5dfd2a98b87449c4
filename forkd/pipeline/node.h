// The node: forkd's templates and sandboxes, and the fork pipeline
//   journal -> netns (created or given) -> tap -> chains -> forkd-vmm
//   --restore into that netns and cgroup -> reseed gate -> ready
// with a journal record written before each side effect, an exit watcher
// (pidfd) that reaps a VM dying while live, and recovery at start: live VMMs
// are adopted, everything of dead or unfinished ones is removed.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "forkd/api/forkd.pb.h"
#include "forkd/dns/proxy_metrics.h"
#include "forkd/gate/fork_resources.h"
#include "forkd/journal/journal.h"
#include "forkd/pipeline/fault_point.h"
#include "forkd/pipeline/sandbox_dns.h"
#include "forkd/sandbox/cgroup.h"
#include "forkd/sandbox/events.h"
#include "forkd/sandbox/jail_args.h"
#include "forkd/sandbox/vmm_child.h"
#include "forkd/templates/pinned_guests.h"
#include "forkd/templates/template_meta.h"

namespace forkd::pipeline {

struct NodeConfig {
  std::filesystem::path data_dir = "/var/lib/forkd";
  std::string vmm_binary;
  std::string keeper_binary;  // forkd-vmm-keeper: every VMM's parent (sandbox/vmm_child.h)
  std::string probe_guest;
  std::string kernel, initrd, kernel_sha256, initrd_sha256;
  bool insecure_skip_guest_verify = false;  // Linux snapshots stamped unpinned
  // The pinned guest images (required): re-verified before each build, and
  // what every restore expects (forkd/pipeline/restore_pin.h).
  std::shared_ptr<templates::PinnedGuests> guests;
  uint32_t max_sandboxes = 64;
  uint64_t memory_reserve_bytes = 0;
  uint32_t standby = 0;  // per template
  bool pvm_host = false;
  std::chrono::milliseconds gate_deadline{2000};
  // Where sandboxes' DNS proxies forward (--dns-upstream); unset: a Fork
  // naming DNS names is FAILED_PRECONDITION.
  std::optional<DnsUpstream> dns_upstream;
  FaultPoint fault = FaultPoint::kNone;  // test builds only (fault_point.h)
  // How every forkd-vmm is jailed and placed (forkd/sandbox/jail_args.h,
  // forkd/sandbox/cgroup.h).
  sandbox::JailPolicy jail;
  sandbox::CgroupPolicy cgroup;
  uint32_t max_fork_running = 16;  // children of one ForkRunning call
};

// What a restart found and did; logged by the daemon.
struct RecoveryReport {
  std::vector<std::string> adopted;
  std::vector<std::string> removed;  // sandboxes whose remains were removed
  std::vector<std::string> notes;    // strays killed, stale pins, interrupted builds
  std::string cgroup_warning;        // controllers missing and allowed (cgroup.h)
};

class Node {
 public:
  static absl::StatusOr<std::unique_ptr<Node>> Start(NodeConfig config, RecoveryReport* report);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Terminates every sandbox and the standby pools (a clean stop of the
  // node); without it, live sandboxes survive forkd and are adopted again.
  absl::Status TerminateAll();

  using ProgressFn = std::function<void(const v1::TemplateProgress&)>;
  absl::StatusOr<v1::Template> CreateTemplate(const v1::CreateTemplateRequest& request,
                                              const ProgressFn& progress);
  absl::StatusOr<v1::DeleteTemplateResponse> DeleteTemplate(
      const v1::DeleteTemplateRequest& request);
  v1::ListTemplatesResponse ListTemplates();

  absl::StatusOr<v1::ForkResponse> Fork(const v1::ForkRequest& request);
  absl::StatusOr<v1::ForkResponse> ForkRunning(const v1::ForkRunningRequest& request);

  absl::StatusOr<v1::ExecResponse> Exec(const v1::ExecRequest& request);
  absl::StatusOr<v1::ReadFileResponse> ReadFile(const v1::ReadFileRequest& request);
  absl::StatusOr<v1::WriteFileResponse> WriteFile(const v1::WriteFileRequest& request);

  absl::Status Terminate(const std::string& sandbox_id);
  absl::StatusOr<v1::ListSandboxesResponse> ListSandboxes(const v1::ListSandboxesRequest& request);
  absl::StatusOr<v1::Sandbox> GetSandbox(const std::string& sandbox_id);
  v1::Capacity GetCapacity();

  // The DNS proxies' counters, summed over every sandbox since the start
  // (live proxies and stopped ones), and how many proxies serve now.
  dns::ProxyMetrics DnsMetrics(uint32_t* live_proxies = nullptr);

  sandbox::EventHub& events() { return events_; }
  const NodeConfig& config() const { return config_; }

  // Metrics hooks (the daemon's Prometheus registry observes these).
  struct Observer {
    virtual ~Observer() = default;
    virtual void ForkDone(const v1::StageTimings& timings) = 0;
    virtual void Reaped(const std::string& cause) = 0;
  };
  void SetObserver(Observer* observer) { observer_ = observer; }

 private:
  struct Sandbox;
  struct Template {
    templates::TemplateMeta meta;
    v1::Template::State state = v1::Template::BUILDING;
    std::string error;
  };
  struct Pooled;

  explicit Node(NodeConfig config, journal::Journal journal);
  absl::Status Recover(RecoveryReport* report);

  absl::StatusOr<std::vector<std::shared_ptr<Sandbox>>> Reserve(
      const std::string& template_id, const std::vector<v1::SandboxSpec>& specs,
      templates::TemplateMeta* meta);
  absl::Status RunPipeline(Sandbox& sb, const templates::TemplateMeta& meta,
                           const v1::SandboxSpec& spec, bool allow_standby);
  absl::Status RestoreCold(Sandbox& sb, const templates::TemplateMeta& meta,
                           const v1::SandboxSpec& spec, v1::StageTimings& t);
  absl::Status Admit(Sandbox& sb, v1::StageTimings& t);
  // The VMM's jail and cgroup: PlanVm picks the uid and names the cgroup
  // (before the journal record that names them), MakeVm creates the
  // directories and the cgroup and returns forkd-vmm's jail flags,
  // ReleaseVm removes the cgroup and frees the uid once the VMM is reaped.
  absl::Status PlanVm(Sandbox& sb, const std::string& given_cgroup);
  absl::StatusOr<std::vector<std::string>> MakeVm(Sandbox& sb, const std::string& given_cgroup,
                                                  uint32_t memory_mib);
  absl::Status ReleaseVm(Sandbox& sb);
  // Removes a hidden ForkRunning template once it has no sandbox left.
  void MaybeDropHiddenTemplate(const std::string& template_id);
  // The sandbox's DNS proxy (sandbox_dns.h), when it names DNS names; its
  // names and ports are in `sb` (set from the spec, or from the journal).
  absl::Status StartDns(Sandbox& sb);
  // Stops it (before its tap goes) and keeps its counters.
  void StopDns(Sandbox& sb);
  // Removes everything of `sb` (its lock held) and records why.
  void Dispose(Sandbox& sb, v1::Sandbox::State state, const std::string& cause);
  void Forget(const std::string& id, uint32_t slot);
  absl::Status JournalPut(const Sandbox& sb, const std::string& state);
  absl::StatusOr<std::shared_ptr<Sandbox>> Find(const std::string& id, bool ready_only);
  void Watch(const std::shared_ptr<Sandbox>& sb);
  void WatchLoop();
  void OnExit(const std::string& id);
  void Publish(v1::Event::Kind kind, const std::string& sandbox, const std::string& tmpl,
               const std::string& cause);

  // Standby pool (per template).
  void RefillLoop();
  std::shared_ptr<Sandbox> TakeStandby(const std::string& template_id);
  void DrainPool(const std::string& template_id);

  NodeConfig config_;
  journal::Journal journal_;
  sandbox::EventHub events_;
  Observer* observer_ = nullptr;

  std::mutex mu_;
  std::map<std::string, Template> templates_;
  std::set<std::string> building_;
  std::map<std::string, std::shared_ptr<Sandbox>> sandboxes_;
  std::map<std::string, v1::Sandbox> gone_;  // recently reaped/exited, for GetSandbox
  std::vector<std::string> gone_order_;
  dns::ProxyMetrics dns_retired_;  // counters of stopped proxies
  std::set<uint32_t> slots_;
  std::map<std::string, std::vector<std::shared_ptr<Sandbox>>> pools_;
  uint32_t pool_filling_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<uint64_t> next_auto_id_{0};

  std::unique_ptr<sandbox::UidPool> uids_;
  std::optional<sandbox::CgroupPlacer> cgroups_;
  std::set<std::string> hidden_templates_;  // ForkRunning snapshots (under mu_)

  UniqueFd epoll_, wake_;
  std::map<int, std::string> watched_;  // pidfd dup -> sandbox id (under mu_)
  std::atomic<bool> stopping_{false};
  std::thread watcher_;
  std::thread refiller_;
  std::condition_variable refill_cv_;
};

}  // namespace forkd::pipeline

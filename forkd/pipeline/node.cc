#include "forkd/pipeline/node.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>

#include "agent/client.h"
#include "agent/vsock_connect.h"
#include "common/errno_status.h"
#include "forkd/gate/reseed_gate.h"
#include "forkd/pipeline/fork_running.h"
#include "forkd/pipeline/restore_pin.h"
#include "forkd/pipeline/spec.h"
#include "forkd/sandbox/ids.h"
#include "forkd/sandbox/netns_pin.h"
#include "forkd/sandbox/process_identity.h"
#include "forkd/sandbox/vmm_exit.h"
#include "forkd/templates/builder.h"
#include "netfilter/links.h"
#include "netfilter/netns.h"
#include "netfilter/nftables.h"
#include "netfilter/sysctl.h"
#include "netfilter/tap_name.h"
#include "spdlog/spdlog.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace forkd::pipeline {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint32_t kAgentPort = 1024;
constexpr uint32_t kMaxPerCall = 1000;
constexpr size_t kGoneKept = 1024;
constexpr auto kReadyTimeout = 30s;  // hang guard: a restore takes milliseconds
// Hang guard: a keeper exits as soon as it has reaped its VMM.
constexpr auto kKeeperExitWait = std::chrono::milliseconds(5000);

uint64_t Us(Clock::time_point a, Clock::time_point b) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(b - a).count());
}
int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Each sandbox owns a /30 out of 10.192.0.0/10 picked by its slot: the tap
// (host side, also the guest's resolver) is .1, the guest .2. Slots also
// name taps (netfilter/tap_name.h: the fail-closed guard's naming).
netfilter::IpAddress SlotAddress(uint32_t slot, uint32_t host) {
  const uint32_t a = (10u << 24) | (192u << 16) | (slot * 4 + host);
  return netfilter::IpAddress::V4(static_cast<uint8_t>(a >> 24), static_cast<uint8_t>(a >> 16),
                                  static_cast<uint8_t>(a >> 8), static_cast<uint8_t>(a));
}
std::string SlotTap(uint32_t slot) { return netfilter::SandboxTapName(slot); }
std::string SlotMac(uint32_t slot) {
  char mac[32];
  (void)std::snprintf(mac, sizeof mac, "02:fd:00:%02x:%02x:%02x", (slot >> 16) & 0xff,
                      (slot >> 8) & 0xff, slot & 0xff);
  return mac;
}
std::string Ip(const netfilter::IpAddress& a) {
  return std::to_string(a.bytes[0]) + "." + std::to_string(a.bytes[1]) + "." +
         std::to_string(a.bytes[2]) + "." + std::to_string(a.bytes[3]);
}

// The tap's owner: the jailed VMM's uid (and gid), which alone may attach it.
template <typename S>
std::optional<uint32_t> TapOwner(const S& sb) {
  return sb.uid != 0 ? std::optional<uint32_t>(sb.uid) : std::nullopt;
}

std::string CauseOf(const absl::Status& s) {
  if (auto c = gate::ReapCauseOf(s)) return std::string("gate: ") + gate::ReapCauseName(*c);
  return std::string(absl::StatusCodeToString(s.code()));
}

}  // namespace

// One sandbox (or a standby fork waiting in a pool). `key` names its files,
// journal record and pinned namespace; `info.sandbox_id` is what callers see
// (the same, except for a fork taken from a pool).
struct Node::Sandbox {
  std::mutex mu;
  std::string key;
  uint32_t slot = 0;
  v1::Sandbox info;
  gate::ForkResources res;
  std::optional<sandbox::VmmChild> vmm;
  std::string netns_pin;  // non-empty: forkd created (and removes) this namespace
  std::vector<v1::EnvVar> env;
  bool standby = false;
  fs::path dir;
  std::string serial;
  uint32_t uid = 0;       // the VMM's uid and gid (jail_args.h); 0: not jailed
  pid_t keeper_pid = 0;   // the VMM's keeper (journaled with its identity); 0: unknown
  std::string vm_cgroup;  // the cgroup forkd made for the VMM (cgroup.h)
  // DNS: the names it may resolve and the ports their addresses are pinned
  // with (journaled, so an adopted sandbox gets its proxy back), and the proxy.
  std::vector<std::string> allow_dns;
  std::vector<uint16_t> dns_ports;
  std::unique_ptr<dns::DnsProxy> dns;
};

Node::Node(NodeConfig config, journal::Journal journal)
    : config_(std::move(config)), journal_(std::move(journal)) {}

absl::StatusOr<std::unique_ptr<Node>> Node::Start(NodeConfig config, RecoveryReport* report) {
  if (!config.guests) return absl::InvalidArgumentError("NodeConfig.guests is required");
  std::error_code ec;
  for (const char* sub : {"templates", "sandboxes", "netns", "running"}) {
    fs::create_directories(config.data_dir / sub, ec);
    if (ec)
      return absl::InternalError("create " + (config.data_dir / sub).string() + ": " +
                                 ec.message());
  }
  FORKD_ASSIGN_OR_RETURN(journal::Journal j, journal::Journal::Open(config.data_dir / "journal"));
  std::unique_ptr<Node> node(new Node(std::move(config), std::move(j)));
  node->epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!node->epoll_) return ErrnoStatus(errno, "epoll_create1");
  node->wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!node->wake_) return ErrnoStatus(errno, "eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = node->wake_.get();
  if (::epoll_ctl(node->epoll_.get(), EPOLL_CTL_ADD, node->wake_.get(), &ev) != 0) {
    return ErrnoStatus(errno, "epoll_ctl eventfd");
  }
  RecoveryReport local;
  if (!report) report = &local;
  node->uids_ = std::make_unique<sandbox::UidPool>(node->config_.jail);
  FORKD_ASSIGN_OR_RETURN(
      auto placer, sandbox::CgroupPlacer::Init(node->config_.cgroup, &report->cgroup_warning));
  node->cgroups_.emplace(std::move(placer));
  FORKD_RETURN_IF_ERROR(node->Recover(report));
  node->watcher_ = std::thread([n = node.get()] { n->WatchLoop(); });
  node->refiller_ = std::thread([n = node.get()] { n->RefillLoop(); });
  return node;
}

Node::~Node() {
  stopping_ = true;
  const uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
  refill_cv_.notify_all();
  if (watcher_.joinable()) watcher_.join();
  if (refiller_.joinable()) refiller_.join();
  // Standby forks were never handed out: they do not outlive the node.
  std::vector<std::string> tmpls;
  {
    std::lock_guard lock(mu_);
    for (const auto& [t, _] : pools_) tmpls.push_back(t);
  }
  for (const auto& t : tmpls) DrainPool(t);
}

void Node::Publish(v1::Event::Kind kind, const std::string& sandbox, const std::string& tmpl,
                   const std::string& cause) {
  v1::Event e;
  e.set_kind(kind);
  e.set_sandbox_id(sandbox);
  e.set_template_id(tmpl);
  e.set_cause(cause);
  events_.Publish(std::move(e));
}

// ---- journal -------------------------------------------------------------------

absl::Status Node::JournalPut(const Sandbox& sb, const std::string& state) {
  nlohmann::json j = {{"key", sb.key},
                      {"sandbox_id", sb.info.sandbox_id()},
                      {"template_id", sb.info.template_id()},
                      {"state", state},
                      {"slot", sb.slot},
                      {"tap", SlotTap(sb.slot)},
                      {"netns_path", sb.info.netns_path()},
                      {"netns_pin", sb.netns_pin},
                      {"dir", sb.dir.string()},
                      {"vsock", sb.info.vsock_path()},
                      {"guest_ipv4", sb.info.guest_ipv4()},
                      {"cgroup", sb.info.cgroup_path()},
                      {"created_unix_ms", sb.info.created_unix_ms()},
                      {"generation", sb.info.generation()},
                      {"standby", sb.standby},
                      {"uid", sb.uid},
                      {"vm_cgroup", sb.vm_cgroup}};
  if (sb.info.vmm_pid() > 0) {
    j["pid"] = sb.info.vmm_pid();
    if (auto id = sandbox::IdentityOf(sb.info.vmm_pid()); id.ok()) {
      j["exe"] = id->exe;
      j["start_ticks"] = id->start_ticks;
    }
  }
  if (sb.keeper_pid > 0) {
    j["keeper_pid"] = sb.keeper_pid;
    if (auto id = sandbox::IdentityOf(sb.keeper_pid); id.ok()) {
      j["keeper_exe"] = id->exe;
      j["keeper_start_ticks"] = id->start_ticks;
    }
  }
  if (!sb.allow_dns.empty()) {
    j["allow_dns"] = sb.allow_dns;
    j["dns_ports"] = sb.dns_ports;
  }
  nlohmann::json labels = nlohmann::json::object();
  for (const auto& [k, v] : sb.info.labels()) labels[k] = v;
  j["labels"] = labels;
  return journal_.Put(sb.key, j);
}

// ---- recovery ------------------------------------------------------------------

absl::Status Node::Recover(RecoveryReport* report) {
  std::vector<std::string> removed_builds;
  FORKD_ASSIGN_OR_RETURN(auto tmpls,
                         templates::LoadTemplates(config_.data_dir / "templates", &removed_builds));
  for (auto& r : removed_builds) report->notes.push_back("removed interrupted template build " + r);
  for (auto& m : tmpls) {
    Template t;
    t.meta = m;
    t.state = v1::Template::READY;
    // The guest pin of its snapshot (restore_pin.h): a template this daemon
    // may not restore is kept, FAILED with the reason (Fork names it too).
    if (auto pin = RestorePinArgs(*config_.guests, m, false); !pin.ok()) {
      t.state = v1::Template::FAILED;
      t.error = std::string(pin.status().message());
      report->notes.push_back("template " + m.id + " refused: " + t.error);
    }
    templates_.emplace(m.id, std::move(t));
  }

  std::error_code ec;
  const std::string vmm_real = fs::weakly_canonical(config_.vmm_binary, ec).string();
  const std::string keeper_real = fs::weakly_canonical(config_.keeper_binary, ec).string();
  std::set<pid_t> adopted_pids, adopted_keepers;
  std::vector<std::shared_ptr<Sandbox>> to_remove;
  std::set<std::string> kept_keys;
  FORKD_ASSIGN_OR_RETURN(auto records, journal_.LoadAll());
  // ForkRunning's hidden templates first: an adopted child needs its template.
  std::vector<std::pair<std::string, templates::TemplateMeta>> hidden;
  for (auto& [key, rec] : records) {
    if (!IsHiddenTemplateRecord(rec)) continue;
    templates::TemplateMeta m = HiddenTemplateFromRecord(key, rec);
    hidden.emplace_back(key, m);
    Template t;
    t.meta = m;
    t.state = v1::Template::READY;
    templates_.emplace(m.id, std::move(t));
    hidden_templates_.insert(m.id);
  }
  for (auto& [key, rec] : records) {
    if (IsHiddenTemplateRecord(rec)) continue;
    auto sb = std::make_shared<Sandbox>();
    sb->key = key;
    sb->slot = rec.value("slot", 0u);
    sb->netns_pin = rec.value("netns_pin", "");
    sb->dir = rec.value("dir", "");
    sb->standby = rec.value("standby", false);
    sb->uid = rec.value("uid", 0u);
    sb->vm_cgroup = rec.value("vm_cgroup", "");
    sb->info.set_sandbox_id(rec.value("sandbox_id", key));
    sb->info.set_template_id(rec.value("template_id", ""));
    sb->info.set_netns_path(rec.value("netns_path", ""));
    sb->info.set_vsock_path(rec.value("vsock", ""));
    sb->info.set_guest_ipv4(rec.value("guest_ipv4", ""));
    sb->info.set_cgroup_path(rec.value("cgroup", ""));
    sb->info.set_created_unix_ms(rec.value("created_unix_ms", int64_t{0}));
    sb->info.set_generation(rec.value("generation", uint64_t{0}));
    // The tap the record names (taps were once named otherwise), else the
    // slot's.
    std::string tap = rec.value("tap", SlotTap(sb->slot));
    if (!netfilter::ValidateName("tap", tap, netfilter::kMaxTapNameLength).ok()) {
      tap = SlotTap(sb->slot);
    }
    sb->info.set_tap(tap);
    if (rec.contains("labels") && rec["labels"].is_object()) {
      for (auto& [k, v] : rec["labels"].items()) {
        if (v.is_string()) (*sb->info.mutable_labels())[k] = v.get<std::string>();
      }
    }
    if (rec.contains("allow_dns") && rec["allow_dns"].is_array()) {
      for (const auto& n : rec["allow_dns"]) {
        if (n.is_string()) sb->allow_dns.push_back(n.get<std::string>());
      }
      for (const auto& p : rec.value("dns_ports", nlohmann::json::array())) {
        if (p.is_number_unsigned() && p.get<uint32_t>() >= 1 && p.get<uint32_t>() <= 65535) {
          sb->dns_ports.push_back(static_cast<uint16_t>(p.get<uint32_t>()));
        }
      }
    }
    sb->res.fork_id = sb->info.sandbox_id();
    if (!sb->dir.empty()) sb->res.paths = {sb->dir};
    const bool key_ok = sandbox::ValidateId("journal key", key).ok() && sb->slot > 0;
    // The VMM, when the record names one and that pid is still the same
    // process (executable and start time), never a recycled pid.
    const pid_t pid = rec.value("pid", 0);
    bool vmm_alive = false;
    if (pid > 0 && rec.contains("start_ticks")) {
      auto id = sandbox::IdentityOf(pid);
      if (id.ok() && id->exe == rec.value("exe", "") &&
          id->start_ticks == rec.value("start_ticks", uint64_t{0})) {
        auto pidfd = gate::OpenPidfd(pid);
        if (pidfd.ok()) {
          sb->res.vmm_pidfd = std::move(*pidfd);
          sb->info.set_vmm_pid(pid);
          vmm_alive = true;
        }
      }
    }
    // Its keeper, by the same identity check: no longer forkd's child, so
    // its status is unknown, but it is waited for (and killed, when its VMM
    // is gone and it is not) with the rest of the sandbox.
    const pid_t keeper = rec.value("keeper_pid", 0);
    if (keeper > 0 && rec.contains("keeper_start_ticks")) {
      auto id = sandbox::IdentityOf(keeper);
      if (id.ok() && id->exe == rec.value("keeper_exe", "") &&
          id->start_ticks == rec.value("keeper_start_ticks", uint64_t{0})) {
        if (auto pidfd = gate::OpenPidfd(keeper); pidfd.ok()) {
          sb->res.keeper_pidfd = std::move(*pidfd);
          sb->keeper_pid = keeper;
        }
      }
    }
    // Its namespace: the pin forkd made, or the one it was given.
    const std::string ns_path = !sb->netns_pin.empty() ? sb->netns_pin : sb->info.netns_path();
    if (!ns_path.empty() && sandbox::IsNetnsPath(ns_path)) {
      if (auto ns = netfilter::OpenNetns(ns_path); ns.ok()) sb->res.netns = std::move(*ns);
    }
    if (sb->res.netns) sb->res.tap = sb->info.tap();

    bool adopt = key_ok && vmm_alive && rec.value("state", "") == "ready" && !sb->standby &&
                 templates_.count(sb->info.template_id()) != 0;
    // Its DNS proxy died with the old forkd (sockets and threads are the
    // process's; its pins live on in the tap's sets until they expire). A
    // sandbox whose resolver cannot be served again is not adopted: the
    // guest must never be left with a resolver that is not there.
    if (adopt && !sb->allow_dns.empty()) {
      if (absl::Status d = StartDns(*sb); !d.ok()) {
        report->notes.push_back(
            "sandbox " + sb->info.sandbox_id() +
            " not adopted: its DNS proxy did not start: " + std::string(d.message()));
        adopt = false;
      }
    }
    if (adopt) {
      auto vmm = sandbox::VmmChild::Adopt(pid, sb->res.vmm_pidfd.get());
      if (vmm.ok()) sb->vmm.emplace(std::move(*vmm));
      sb->info.set_state(v1::Sandbox::READY);
      sandboxes_.emplace(sb->info.sandbox_id(), sb);
      slots_.insert(sb->slot);
      if (sb->uid != 0) uids_->MarkUsed(sb->uid);
      adopted_pids.insert(pid);
      // Its parent is its keeper (a jailed VMM dies with it), whatever the
      // record says.
      if (auto parent = sandbox::ParentOf(pid); parent.ok()) adopted_keepers.insert(*parent);
      if (sb->keeper_pid > 0) adopted_keepers.insert(sb->keeper_pid);
      kept_keys.insert(key);
      report->adopted.push_back(sb->info.sandbox_id());
      continue;
    }
    // Everything else of it goes, once the strays are dead (below: a VMM
    // its record no longer identifies still sits in the record's cgroup).
    to_remove.push_back(sb);
  }

  // Strays: forkd-vmm processes serving this data dir that no kept record
  // names (a crash between spawn and its journal write cannot leave one,
  // but a VMM whose record was lost must not run on unaccounted), and
  // keepers of such VMMs (a keeper's command line holds its VMM's). Also a
  // template build's: a build VMM has no control duplicate, so it stops by
  // itself when the forkd that ran the build dies, but one still on its way
  // out is reaped here, before its VM cgroup goes with the unowned ones below.
  const std::string marker = (config_.data_dir / "sandboxes").string() + "/";
  const std::string build_marker = (config_.data_dir / "templates" / ".build-").string();
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    const pid_t pid = std::stoi(name);
    if (adopted_pids.count(pid) || adopted_keepers.count(pid)) continue;
    auto id = sandbox::IdentityOf(pid);
    if (!id.ok() || (id->exe != vmm_real && id->exe != keeper_real)) continue;
    const bool is_keeper = id->exe == keeper_real;
    auto cmd = sandbox::CommandLineOf(pid);
    if (!cmd.ok()) continue;
    const bool ours = std::any_of(cmd->begin(), cmd->end(), [&](const std::string& a) {
      return a.rfind(marker, 0) == 0 || a.rfind(build_marker, 0) == 0;
    });
    if (!ours) continue;
    gate::ForkResources stray;
    stray.fork_id = std::string(is_keeper ? "stray-keeper-" : "stray-vmm-") + name;
    auto pidfd = gate::OpenPidfd(pid);
    if (!pidfd.ok()) continue;  // already gone
    (is_keeper ? stray.keeper_pidfd : stray.vmm_pidfd) = std::move(*pidfd);
    FORKD_RETURN_IF_ERROR(gate::Reap(stray));
    report->notes.push_back(std::string("killed stray ") +
                            (is_keeper ? "forkd-vmm-keeper" : "forkd-vmm") + " pid " + name);
  }
  // Records not adopted: process, tap, chains, files, namespace, cgroup.
  for (const auto& sb : to_remove) {
    absl::Status s = gate::Reap(sb->res);
    if (!sb->netns_pin.empty()) {
      sb->res.netns.reset();
      absl::Status p = sandbox::RemovePinnedNetns(sb->netns_pin);
      if (s.ok()) s = p;
    }
    if (s.ok()) s = ReleaseVm(*sb);
    if (!s.ok()) return Annotate(s, "recovery of sandbox " + sb->info.sandbox_id());
    FORKD_RETURN_IF_ERROR(journal_.Remove(sb->key));
    report->removed.push_back(sb->info.sandbox_id());
  }
  // Files and pins no kept record owns.
  for (const char* sub : {"sandboxes", "netns"}) {
    for (const auto& entry : fs::directory_iterator(config_.data_dir / sub, ec)) {
      const std::string k = entry.path().filename().string();
      if (kept_keys.count(k)) continue;
      if (std::string(sub) == "netns") {
        FORKD_RETURN_IF_ERROR(sandbox::RemovePinnedNetns(entry.path().string()));
      } else {
        fs::remove_all(entry.path(), ec);
      }
      report->notes.push_back("removed unowned " + entry.path().string());
    }
  }
  // Hidden templates no adopted sandbox uses, and running/ entries no
  // record names.
  std::set<std::string> kept_hidden;
  for (auto& [key, m] : hidden) {
    bool used = false;
    for (const auto& [id, sb] : sandboxes_) used = used || sb->info.template_id() == m.id;
    if (used) {
      kept_hidden.insert(m.dir.filename().string());
      continue;
    }
    templates_.erase(m.id);
    hidden_templates_.erase(m.id);
    if (!m.dir.empty()) fs::remove_all(m.dir, ec);
    FORKD_RETURN_IF_ERROR(journal_.Remove(key));
    report->notes.push_back("removed the snapshot of ForkRunning " + m.id + " (no child left)");
  }
  for (const auto& entry : fs::directory_iterator(config_.data_dir / "running", ec)) {
    if (kept_hidden.count(entry.path().filename().string())) continue;
    fs::remove_all(entry.path(), ec);
    report->notes.push_back("removed unowned " + entry.path().string());
  }
  // VM cgroups in forkd's parent that no kept record names (their VMMs are
  // gone: a stray was killed above; anything else still in one, e.g. a
  // process a build's VMM left, is killed with it: the cgroup is forkd's).
  if (cgroups_->policy().enabled) {
    std::set<std::string> kept_cgroups;
    for (const auto& [id, sb] : sandboxes_) kept_cgroups.insert(sb->vm_cgroup);
    for (const auto& entry : fs::directory_iterator(cgroups_->parent(), ec)) {
      const std::string n = entry.path().filename().string();
      if (n.rfind("forkd-vm-", 0) != 0 || kept_cgroups.count(entry.path().string())) continue;
      FORKD_RETURN_IF_ERROR(sandbox::KillAndRemoveVmCgroup(entry.path().string()));
      report->notes.push_back("removed unowned cgroup " + entry.path().string());
    }
  }
  for (auto& [id, sb] : sandboxes_) Watch(sb);
  return absl::OkStatus();
}

// ---- exit watcher --------------------------------------------------------------

void Node::Watch(const std::shared_ptr<Sandbox>& sb) {
  // Called with sb->mu held or before sharing; takes mu_.
  UniqueFd dup(::fcntl(sb->res.vmm_pidfd.get(), F_DUPFD_CLOEXEC, 0));
  if (!dup) {
    spdlog::error("exit watcher: dup pidfd of {}: {}", sb->info.sandbox_id(), std::strerror(errno));
    return;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = dup.get();
  std::lock_guard lock(mu_);
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, dup.get(), &ev) != 0) {
    spdlog::error("exit watcher: epoll_ctl {}: {}", sb->info.sandbox_id(), std::strerror(errno));
    return;
  }
  watched_[dup.release()] = sb->info.sandbox_id();
}

void Node::WatchLoop() {
  epoll_event evs[16];
  while (!stopping_) {
    const int n = ::epoll_wait(epoll_.get(), evs, 16, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::critical("exit watcher: epoll_wait: {}", std::strerror(errno));
      return;
    }
    for (int i = 0; i < n; i++) {
      const int fd = evs[i].data.fd;
      if (fd == wake_.get()) continue;
      std::string id;
      {
        std::lock_guard lock(mu_);
        auto it = watched_.find(fd);
        if (it == watched_.end()) continue;
        id = it->second;
        watched_.erase(it);
        (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
        ::close(fd);
      }
      OnExit(id);
    }
  }
}

void Node::OnExit(const std::string& id) {
  std::shared_ptr<Sandbox> sb;
  {
    std::lock_guard lock(mu_);
    auto it = sandboxes_.find(id);
    if (it == sandboxes_.end()) return;
    sb = it->second;
  }
  std::lock_guard lock(sb->mu);
  if (sb->info.state() != v1::Sandbox::READY) return;  // terminated meanwhile
  // The VMM is its keeper's child; the keeper (forkd's child unless the
  // sandbox was adopted after a restart) exits with its status.
  const sandbox::VmmExit exit = sandbox::KeeperReport(sb->res.keeper_pidfd.get(), kKeeperExitWait);
  const std::string cause = exit.Describe();
  const v1::Sandbox::State state =
      exit.kind == sandbox::VmmExit::Kind::kExited ? v1::Sandbox::EXITED : v1::Sandbox::REAPED;
  spdlog::warn("sandbox {}: {}; reaping it", id, cause);
  Dispose(*sb, state, cause);
}

// ---- disposal ------------------------------------------------------------------

void Node::Dispose(Sandbox& sb, v1::Sandbox::State state, const std::string& cause) {
  StopDns(sb);
  absl::Status s = gate::Reap(sb.res);
  sb.vmm.reset();
  if (!sb.netns_pin.empty()) {
    sb.res.netns.reset();
    absl::Status p = sandbox::RemovePinnedNetns(sb.netns_pin);
    if (s.ok()) s = p;
  }
  if (s.ok()) s = ReleaseVm(sb);
  if (s.ok()) {
    s = journal_.Remove(sb.key);
  } else {
    // The record stays, so the next start retries what failed here.
    spdlog::error("sandbox {}: removal incomplete: {}", sb.info.sandbox_id(), s.ToString());
  }
  sb.info.set_state(state);
  sb.info.set_reap_cause(cause);
  if (observer_ && state == v1::Sandbox::REAPED) observer_->Reaped(cause);
  if (!sb.standby) {
    Publish(state == v1::Sandbox::EXITED ? v1::Event::EXITED : v1::Event::REAPED,
            sb.info.sandbox_id(), sb.info.template_id(), cause);
  }
  {
    std::lock_guard lock(mu_);
    if (!sb.standby) {
      gone_[sb.info.sandbox_id()] = sb.info;
      gone_order_.push_back(sb.info.sandbox_id());
      if (gone_order_.size() > kGoneKept) {
        gone_.erase(gone_order_.front());
        gone_order_.erase(gone_order_.begin());
      }
      sandboxes_.erase(sb.info.sandbox_id());
    }
    slots_.erase(sb.slot);
  }
  if (!sb.standby) MaybeDropHiddenTemplate(sb.info.template_id());
}

void Node::MaybeDropHiddenTemplate(const std::string& template_id) {
  fs::path dir;
  {
    std::lock_guard lock(mu_);
    if (!hidden_templates_.count(template_id)) return;
    for (const auto& [id, sb] : sandboxes_) {
      if (sb->info.template_id() == template_id) return;  // a child is left
    }
    auto it = templates_.find(template_id);
    if (it != templates_.end()) {
      dir = it->second.meta.dir;
      templates_.erase(it);
    }
    hidden_templates_.erase(template_id);
  }
  std::error_code ec;
  if (!dir.empty()) fs::remove_all(dir, ec);
  absl::Status s = ec ? absl::InternalError("remove " + dir.string() + ": " + ec.message())
                      : journal_.Remove(template_id);
  if (!s.ok()) {
    // Its record stays, so the next start retries the removal.
    spdlog::error("ForkRunning snapshot {}: removal incomplete: {}", template_id, s.ToString());
  }
}

void Node::Forget(const std::string& id, uint32_t slot) {
  std::lock_guard lock(mu_);
  sandboxes_.erase(id);
  slots_.erase(slot);
}

// ---- templates -----------------------------------------------------------------

absl::StatusOr<v1::Template> Node::CreateTemplate(const v1::CreateTemplateRequest& request,
                                                  const ProgressFn& progress) {
  FORKD_RETURN_IF_ERROR(sandbox::ValidateId("template id", request.template_id()));
  const bool linux_guest = request.has_linux();
  if (!linux_guest && !request.has_probe()) {
    return absl::InvalidArgumentError("template " + request.template_id() +
                                      ": choose a guest (probe or linux)");
  }
  if (linux_guest) {
    if (config_.kernel.empty()) {
      return absl::FailedPreconditionError(
          "a Linux template needs forkd started with --kernel and --kernel-sha256");
    }
    if (config_.pvm_host && !request.force()) {
      return absl::FailedPreconditionError(
          "this host's /dev/kvm is PVM (software virtualization, no vmx/svm): a Linux guest "
          "boots in about 12 minutes and then cannot serve system calls at a usable speed, so "
          "it is not a template; build a probe template, or set force to build anyway");
    }
  } else if (!templates::IsProbeAgentMode(request.probe().agent_mode())) {
    return absl::InvalidArgumentError("probe.agent_mode '" +
                                      sandbox::Printable(request.probe().agent_mode()) +
                                      "' is not one of honest, refuse, silent, late, garbage");
  }
  if (request.memory_mib() != 0 && (request.memory_mib() < 16 || request.memory_mib() > 3072)) {
    return absl::InvalidArgumentError("memory_mib must be 16..3072");
  }
  if (request.vcpus() > 1) {
    return absl::InvalidArgumentError("vcpus: templates have 1 vCPU on this build");
  }
  for (int i = 0; i < request.init_commands_size(); i++) {
    if (request.init_commands(i).argv_size() == 0) {
      return absl::InvalidArgumentError("init_commands[" + std::to_string(i) + "] has no argv");
    }
  }
  {
    std::lock_guard lock(mu_);
    if (building_.count(request.template_id())) {
      return absl::AlreadyExistsError("template " + request.template_id() +
                                      " is being built by another call");
    }
    if (templates_.count(request.template_id())) {
      return absl::AlreadyExistsError("template " + request.template_id() + " exists");
    }
    building_.insert(request.template_id());
    Template t;
    t.meta.id = request.template_id();
    t.meta.guest = linux_guest ? "linux" : "probe";
    t.state = v1::Template::BUILDING;
    templates_.emplace(request.template_id(), std::move(t));
  }
  const auto start = Clock::now();
  auto emit = [&](v1::TemplateProgress::Stage stage, const std::string& msg) {
    v1::TemplateProgress p;
    p.set_stage(stage);
    p.set_message(msg);
    p.set_elapsed_us(Us(start, Clock::now()));
    if (progress) progress(p);
  };
  templates::BuildEnv env{.vmm_binary = config_.vmm_binary,
                          .keeper_binary = config_.keeper_binary,
                          .templates_dir = config_.data_dir / "templates",
                          .guests = config_.guests.get()};
  env.jail = config_.jail;
  if (cgroups_) env.cgroups = &*cgroups_;
  absl::Status uid_status;
  if (config_.jail.enabled) {
    auto uid = uids_->Acquire();
    if (uid.ok()) env.vmm_uid = *uid;
    uid_status = uid.status();
  }
  absl::StatusOr<templates::TemplateMeta> meta =
      uid_status.ok() ? templates::BuildTemplate(env, request, emit)
                      : absl::StatusOr<templates::TemplateMeta>(uid_status);
  if (env.vmm_uid) uids_->Release(*env.vmm_uid);
  if (meta.ok()) {
    // The build VMM's uid wrote the snapshot: it becomes root's and
    // read-only to the forks' uids (jail_args.h); its jail root goes.
    std::error_code ec;
    fs::remove(meta->dir / "jail", ec);
    absl::Status sealed = sandbox::SealSnapshotDir(meta->dir);
    if (!sealed.ok()) {
      fs::remove_all(meta->dir, ec);
      meta = sealed;
    }
  }
  v1::Template out;
  {
    std::lock_guard lock(mu_);
    building_.erase(request.template_id());
    if (!meta.ok()) {
      templates_.erase(request.template_id());
      return Annotate(meta.status(), "build template " + request.template_id());
    }
    Template& t = templates_[request.template_id()];
    t.meta = *meta;
    t.state = v1::Template::READY;
    out.set_template_id(t.meta.id);
    out.set_state(v1::Template::READY);
    out.set_guest(t.meta.guest);
    out.set_memory_mib(t.meta.memory_mib);
    out.set_kernel_sha256(t.meta.kernel_sha256);
    out.set_created_unix_ms(t.meta.created_unix_ms);
  }
  refill_cv_.notify_all();
  Publish(v1::Event::TEMPLATE_READY, "", request.template_id(), "");
  v1::TemplateProgress done;
  done.set_stage(v1::TemplateProgress::DONE);
  done.set_message("template ready");
  done.set_elapsed_us(Us(start, Clock::now()));
  *done.mutable_template_() = out;
  if (progress) progress(done);
  return out;
}

absl::StatusOr<v1::DeleteTemplateResponse> Node::DeleteTemplate(
    const v1::DeleteTemplateRequest& request) {
  FORKD_RETURN_IF_ERROR(sandbox::ValidateId("template id", request.template_id()));
  std::vector<std::string> live;
  fs::path dir;
  {
    std::lock_guard lock(mu_);
    auto it = templates_.find(request.template_id());
    if (it == templates_.end()) {
      return absl::NotFoundError("no template " + request.template_id());
    }
    if (it->second.state == v1::Template::BUILDING) {
      return absl::UnavailableError("template " + request.template_id() + " is still building");
    }
    for (const auto& [id, sb] : sandboxes_) {
      if (sb->info.template_id() == request.template_id()) live.push_back(id);
    }
    if (!live.empty() && !request.force()) {
      return absl::FailedPreconditionError("template " + request.template_id() + " has " +
                                           std::to_string(live.size()) + " live fork(s) (e.g. " +
                                           live.front() + "); terminate them or set force");
    }
    it->second.state = v1::Template::BUILDING;  // no new forks while it goes
    dir = it->second.meta.dir;
  }
  DrainPool(request.template_id());
  v1::DeleteTemplateResponse resp;
  for (const auto& id : live) {
    absl::Status s = Terminate(id);
    if (s.ok())
      resp.set_terminated(resp.terminated() + 1);
    else if (s.code() != absl::StatusCode::kNotFound)
      return s;
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (ec) return absl::InternalError("remove " + dir.string() + ": " + ec.message());
  {
    std::lock_guard lock(mu_);
    templates_.erase(request.template_id());
  }
  Publish(v1::Event::TEMPLATE_DELETED, "", request.template_id(), "");
  return resp;
}

v1::ListTemplatesResponse Node::ListTemplates() {
  v1::ListTemplatesResponse out;
  std::lock_guard lock(mu_);
  for (const auto& [id, t] : templates_) {
    if (hidden_templates_.count(id)) continue;  // a ForkRunning snapshot
    v1::Template* p = out.add_templates();
    p->set_template_id(id);
    p->set_state(t.state);
    p->set_guest(t.meta.guest);
    p->set_memory_mib(t.meta.memory_mib);
    p->set_kernel_sha256(t.meta.kernel_sha256);
    p->set_created_unix_ms(t.meta.created_unix_ms);
    p->set_error(t.error);
    uint32_t live = 0;
    for (const auto& [sid, sb] : sandboxes_) live += sb->info.template_id() == id ? 1 : 0;
    p->set_live_forks(live);
    auto pit = pools_.find(id);
    p->set_standby(pit == pools_.end() ? 0 : static_cast<uint32_t>(pit->second.size()));
  }
  return out;
}

// ---- fork ----------------------------------------------------------------------

absl::StatusOr<std::vector<std::shared_ptr<Node::Sandbox>>> Node::Reserve(
    const std::string& template_id, const std::vector<v1::SandboxSpec>& specs,
    templates::TemplateMeta* meta) {
  std::lock_guard lock(mu_);
  auto it = templates_.find(template_id);
  if (it == templates_.end()) return absl::NotFoundError("no template " + template_id);
  if (it->second.state == v1::Template::BUILDING) {
    return absl::UnavailableError("template " + template_id +
                                  " is building; retry when it is ready");
  }
  *meta = it->second.meta;
  const size_t live = sandboxes_.size();
  if (live + specs.size() > config_.max_sandboxes) {
    return absl::ResourceExhaustedError(
        "fork of " + std::to_string(specs.size()) + " would exceed --max-sandboxes " +
        std::to_string(config_.max_sandboxes) + " (" + std::to_string(live) + " in use)");
  }
  if (config_.memory_reserve_bytes > 0) {
    std::ifstream in("/proc/meminfo");
    std::string key;
    uint64_t kib = 0;
    std::string unit;
    uint64_t avail = 0;
    while (in >> key >> kib >> unit) {
      if (key == "MemAvailable:") avail = kib * 1024;
    }
    if (avail < config_.memory_reserve_bytes) {
      return absl::ResourceExhaustedError(
          "host MemAvailable " + std::to_string(avail >> 20) + " MiB is below --memory-reserve " +
          std::to_string(config_.memory_reserve_bytes >> 20) + " MiB");
    }
  }
  std::set<std::string> ids;
  for (const auto& s : specs) {
    if (s.sandbox_id().empty()) continue;
    if (!ids.insert(s.sandbox_id()).second) {
      return absl::InvalidArgumentError("sandbox id " + s.sandbox_id() +
                                        " appears twice in the request");
    }
    if (sandboxes_.count(s.sandbox_id())) {
      return absl::AlreadyExistsError("sandbox " + s.sandbox_id() + " exists");
    }
  }
  std::vector<std::shared_ptr<Sandbox>> out;
  uint32_t next_slot = 1;
  for (const auto& s : specs) {
    auto sb = std::make_shared<Sandbox>();
    std::string id = s.sandbox_id();
    while (id.empty() || sandboxes_.count(id)) {
      char buf[32];
      (void)std::snprintf(buf, sizeof buf, "sb-%06llx-%llu",
                          static_cast<unsigned long long>(NowMs() & 0xffffff),
                          static_cast<unsigned long long>(next_auto_id_++));
      id = buf;
    }
    while (slots_.count(next_slot)) next_slot++;
    sb->slot = next_slot;
    slots_.insert(next_slot);
    sb->key = id;
    sb->info.set_sandbox_id(id);
    sb->info.set_template_id(template_id);
    sb->info.set_state(v1::Sandbox::STARTING);
    sb->info.set_created_unix_ms(NowMs());
    sandboxes_.emplace(id, sb);
    out.push_back(std::move(sb));
  }
  return out;
}

absl::StatusOr<v1::ForkResponse> Node::Fork(const v1::ForkRequest& request) {
  const auto start = Clock::now();
  FORKD_RETURN_IF_ERROR(sandbox::ValidateId("template id", request.template_id()));
  std::vector<v1::SandboxSpec> specs;
  if (request.sandboxes_size() > 0) {
    if (request.count() != 0 &&
        request.count() != static_cast<uint32_t>(request.sandboxes_size())) {
      return absl::InvalidArgumentError(
          "count " + std::to_string(request.count()) + " disagrees with " +
          std::to_string(request.sandboxes_size()) + " sandboxes given");
    }
    specs.assign(request.sandboxes().begin(), request.sandboxes().end());
  } else {
    if (request.count() == 0) return absl::InvalidArgumentError("count must be at least 1");
    if (request.count() > kMaxPerCall) {
      return absl::InvalidArgumentError("count " + std::to_string(request.count()) +
                                        " is above the per-call limit " +
                                        std::to_string(kMaxPerCall));
    }
    if (request.count() > 1 && !request.spec().sandbox_id().empty()) {
      return absl::InvalidArgumentError("spec.sandbox_id names one sandbox; count is " +
                                        std::to_string(request.count()));
    }
    specs.assign(request.count(), request.spec());
  }
  if (specs.size() > kMaxPerCall) {
    return absl::InvalidArgumentError("more than " + std::to_string(kMaxPerCall) +
                                      " sandboxes in one call");
  }
  uint32_t mem = 0;
  std::optional<templates::TemplateMeta> pin_meta;  // the guest pin, checked before anything
  {
    std::lock_guard lock(mu_);
    auto it = templates_.find(request.template_id());
    if (it == templates_.end()) return absl::NotFoundError("no template " + request.template_id());
    mem = it->second.meta.memory_mib;
    if (it->second.state != v1::Template::BUILDING) pin_meta = it->second.meta;
  }
  if (pin_meta) FORKD_RETURN_IF_ERROR(RestorePinArgs(*config_.guests, *pin_meta, false).status());
  for (size_t i = 0; i < specs.size(); i++) {
    FORKD_RETURN_IF_ERROR(ValidateSpec(specs[i], "sandboxes[" + std::to_string(i) + "]", mem,
                                       config_.dns_upstream.has_value()));
  }
  templates::TemplateMeta meta;
  FORKD_ASSIGN_OR_RETURN(auto sbs, Reserve(request.template_id(), specs, &meta));

  std::vector<absl::Status> results(sbs.size());
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next++) < sbs.size();) {
      results[i] = RunPipeline(*sbs[i], meta, specs[i], !request.cold());
    }
  };
  const size_t nthreads = std::min<size_t>(sbs.size(), 8);
  std::vector<std::thread> threads;
  for (size_t i = 1; i < nthreads; i++) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();

  v1::ForkResponse resp;
  absl::Status first;
  for (size_t i = 0; i < sbs.size(); i++) {
    if (!results[i].ok() && first.ok()) first = results[i];
  }
  if (!first.ok()) {
    // All or nothing: the admitted ones go too, so a failed call leaves nothing.
    for (size_t i = 0; i < sbs.size(); i++) {
      if (results[i].ok()) (void)Terminate(sbs[i]->info.sandbox_id());
    }
    return first;
  }
  for (auto& sb : sbs) {
    std::lock_guard lock(sb->mu);
    *resp.add_sandboxes() = sb->info;
  }
  resp.set_wall_us(Us(start, Clock::now()));
  return resp;
}

absl::StatusOr<v1::ForkResponse> Node::ForkRunning(const v1::ForkRunningRequest& request) {
  FORKD_RETURN_IF_ERROR(sandbox::ValidateId("sandbox id", request.sandbox_id()));
  if (request.count() == 0) return absl::InvalidArgumentError("count must be at least 1");
  if (request.count() > config_.max_fork_running) {
    return absl::InvalidArgumentError("count " + std::to_string(request.count()) +
                                      " is above --max-fork-running " +
                                      std::to_string(config_.max_fork_running));
  }
  if (request.count() > 1 && !request.spec().sandbox_id().empty()) {
    return absl::InvalidArgumentError("spec.sandbox_id names one sandbox; count is " +
                                      std::to_string(request.count()));
  }
  FORKD_ASSIGN_OR_RETURN(auto parent, Find(request.sandbox_id(), true));
  templates::TemplateMeta meta;
  {
    std::lock_guard lock(mu_);
    if (sandboxes_.size() + request.count() > config_.max_sandboxes) {
      return absl::ResourceExhaustedError("ForkRunning of " + std::to_string(request.count()) +
                                          " would exceed --max-sandboxes " +
                                          std::to_string(config_.max_sandboxes) + " (" +
                                          std::to_string(sandboxes_.size()) + " in use)");
    }
    char id[64];
    (void)std::snprintf(id, sizeof id, "running-%llx-%llu",
                        static_cast<unsigned long long>(NowMs()),
                        static_cast<unsigned long long>(next_auto_id_++));
    meta.id = id;
  }
  meta.dir = config_.data_dir / "running" / meta.id;
  meta.created_unix_ms = NowMs();
  fs::path target;
  {
    std::lock_guard lock(parent->mu);
    if (parent->info.state() != v1::Sandbox::READY || !parent->vmm) {
      return absl::FailedPreconditionError("sandbox " + request.sandbox_id() +
                                           " is not running: " + parent->info.reap_cause());
    }
    {
      std::lock_guard l(mu_);
      auto t = templates_.find(parent->info.template_id());
      if (t == templates_.end()) {
        return absl::FailedPreconditionError("sandbox " + request.sandbox_id() +
                                             ": its template is gone");
      }
      meta.guest = t->second.meta.guest;
      meta.memory_mib = t->second.meta.memory_mib;
      meta.kernel_sha256 = t->second.meta.kernel_sha256;
    }
    // Recorded before anything exists, so a crash from here on leaves
    // nothing the next start does not find.
    FORKD_RETURN_IF_ERROR(journal_.Put(meta.id, HiddenTemplateRecord(meta, request.sandbox_id())));
    auto drop = [&](const absl::Status& why) {
      std::error_code ec;
      fs::remove_all(meta.dir, ec);
      if (!target.empty()) fs::remove_all(target, ec);
      (void)journal_.Remove(meta.id);
      return Annotate(why, "ForkRunning of " + request.sandbox_id());
    };
    // The parent VMM writes only its own SNAPSHOT directory (its jail's
    // --jail-rw); the snapshot is then moved out of its reach and sealed.
    target = sandbox::JailLayout(parent->dir, parent->uid).snapshot_dir / meta.id;
    std::error_code ec;
    fs::create_directories(meta.dir, ec);
    if (ec) return drop(absl::InternalError("create " + meta.dir.string() + ": " + ec.message()));
    if (absl::Status s = LiveSnapshot(*parent->vmm, target, kReadyTimeout); !s.ok()) {
      return drop(s);
    }
    fs::rename(target, meta.snapshot(), ec);
    if (ec) {
      return drop(absl::InternalError("move " + target.string() + ": " + ec.message()));
    }
    target.clear();
    if (absl::Status s = sandbox::SealSnapshotDir(meta.dir); !s.ok()) return drop(s);
  }
  {
    std::lock_guard lock(mu_);
    Template t;
    t.meta = meta;
    t.state = v1::Template::READY;
    templates_.emplace(meta.id, std::move(t));
    hidden_templates_.insert(meta.id);
  }
  v1::ForkRequest fork;
  fork.set_template_id(meta.id);
  fork.set_count(request.count());
  *fork.mutable_spec() = request.spec();
  fork.set_cold(true);
  auto resp = Fork(fork);
  // No child (a failed Fork leaves none): the snapshot goes now.
  MaybeDropHiddenTemplate(meta.id);
  if (!resp.ok()) return Annotate(resp.status(), "ForkRunning of " + request.sandbox_id());
  return resp;
}

absl::Status Node::RunPipeline(Sandbox& sb, const templates::TemplateMeta& meta,
                               const v1::SandboxSpec& spec, bool allow_standby) {
  std::unique_lock lock(sb.mu);
  v1::StageTimings t;
  const auto t0 = Clock::now();
  sb.env.assign(spec.env().begin(), spec.env().end());
  sb.allow_dns = DnsNamesOf(spec);
  if (!sb.allow_dns.empty()) sb.dns_ports = DnsPortsOf(spec);
  for (const auto& [k, v] : spec.labels()) (*sb.info.mutable_labels())[k] = v;
  sb.info.set_generation(++generation_ + static_cast<uint64_t>(NowMs()) * 1000);
  absl::Status s;
  std::shared_ptr<Sandbox> pooled;
  if (allow_standby && spec.netns_path().empty() && spec.cgroup_path().empty()) {
    pooled = TakeStandby(meta.id);
  }
  if (pooled) {
    // The pooled fork's namespace, tap and VMM become this sandbox's.
    std::lock_guard pl(pooled->mu);
    const uint32_t my_slot = sb.slot;
    sb.key = pooled->key;
    sb.slot = pooled->slot;
    sb.dir = pooled->dir;
    sb.netns_pin = pooled->netns_pin;
    sb.uid = pooled->uid;
    sb.vm_cgroup = pooled->vm_cgroup;
    sb.res = std::move(pooled->res);
    sb.res.fork_id = sb.info.sandbox_id();
    sb.vmm = std::move(pooled->vmm);
    sb.info.set_tap(pooled->info.tap());
    sb.info.set_guest_ipv4(pooled->info.guest_ipv4());
    sb.info.set_vsock_path(pooled->info.vsock_path());
    sb.info.set_netns_path(pooled->info.netns_path());
    sb.info.set_vmm_pid(pooled->info.vmm_pid());
    sb.keeper_pid = pooled->keeper_pid;
    {
      std::lock_guard l(mu_);
      slots_.erase(my_slot);
    }
    t.set_from_standby(true);
    // Its record stays "standby" until the gate admits it: a crash before
    // that removes it at the next start, which is right for a fork that was
    // never served. One durable write ("ready") is all a take costs.
    if (!spec.egress().allow().empty() || !sb.allow_dns.empty()) {
      auto nft = netfilter::Nftables::Open(sb.res.netns.get(), 1);
      s = nft.ok() ? nft->ReplaceTap(PolicyFor(spec, sb.info.tap(),
                                               *netfilter::IpAddress::Parse(sb.info.guest_ipv4()),
                                               SlotAddress(sb.slot, 1)))
                   : nft.status();
    }
    if (s.ok()) s = StartDns(sb);  // serving before the vCPUs start
    const auto r0 = Clock::now();
    if (s.ok()) s = sb.vmm->Send("GO");
    if (s.ok()) s = sb.vmm->Expect("READY", kReadyTimeout, sb.serial);
    t.set_restore_us(Us(r0, Clock::now()));
  } else {
    s = RestoreCold(sb, meta, spec, t);
  }
  if (s.ok()) s = Admit(sb, t);
  if (s.ok()) {
    MaybeCrash(config_.fault, FaultPoint::kAfterGate);
    s = JournalPut(sb, "ready");
  }
  t.set_total_us(Us(t0, Clock::now()));
  *sb.info.mutable_timings() = t;
  if (!s.ok()) {
    const std::string cause = CauseOf(s) + ": " + std::string(s.message());
    spdlog::warn("sandbox {}: fork failed, reaped: {}", sb.info.sandbox_id(), cause);
    if (sb.info.state() != v1::Sandbox::REAPED) Dispose(sb, v1::Sandbox::REAPED, cause);
    return absl::Status(s.code(), "sandbox " + sb.info.sandbox_id() + " reaped (" + CauseOf(s) +
                                      "): " + std::string(s.message()));
  }
  sb.info.set_state(v1::Sandbox::READY);
  if (observer_) observer_->ForkDone(t);
  std::shared_ptr<Sandbox> shared;
  {
    std::lock_guard l(mu_);
    shared = sandboxes_[sb.info.sandbox_id()];
  }
  lock.unlock();
  Watch(shared);
  Publish(v1::Event::READY, sb.info.sandbox_id(), sb.info.template_id(), "");
  refill_cv_.notify_all();
  return absl::OkStatus();
}

absl::Status Node::RestoreCold(Sandbox& sb, const templates::TemplateMeta& meta,
                               const v1::SandboxSpec& spec, v1::StageTimings& t) {
  auto mark = Clock::now();
  auto lap = [&] {
    const auto now = Clock::now();
    const uint64_t us = Us(mark, now);
    mark = now;
    return us;
  };
  const std::string tap = SlotTap(sb.slot);
  const netfilter::IpAddress gw = SlotAddress(sb.slot, 1), guest = SlotAddress(sb.slot, 2);
  sb.dir = config_.data_dir / "sandboxes" / sb.key;
  sb.serial = "/dev/null";
  if (spec.netns_path().empty()) {
    sb.netns_pin = (config_.data_dir / "netns" / sb.key).string();
    sb.info.set_netns_path(sb.netns_pin);
  } else {
    sb.info.set_netns_path(spec.netns_path());
  }
  sb.info.set_cgroup_path(spec.cgroup_path());
  sb.info.set_tap(tap);
  sb.info.set_guest_ipv4(Ip(guest));
  sb.info.set_vsock_path((sb.dir / "vm" / "vsock.sock").string());
  sb.res.fork_id = sb.info.sandbox_id();
  sb.res.paths = {sb.dir};
  FORKD_RETURN_IF_ERROR(PlanVm(sb, spec.cgroup_path()));
  FORKD_RETURN_IF_ERROR(JournalPut(sb, "starting"));
  std::error_code ec;
  fs::create_directories(sb.dir, ec);
  if (ec) return absl::InternalError("create " + sb.dir.string() + ": " + ec.message());
  FORKD_ASSIGN_OR_RETURN(auto jail_args, MakeVm(sb, spec.cgroup_path(), meta.memory_mib));
  t.set_journal_us(lap());
  MaybeCrash(config_.fault, FaultPoint::kAfterJournal);

  if (!sb.netns_pin.empty()) {
    FORKD_ASSIGN_OR_RETURN(sb.res.netns, sandbox::CreatePinnedNetns(sb.netns_pin));
  } else {
    FORKD_ASSIGN_OR_RETURN(sb.res.netns, netfilter::OpenNetns(spec.netns_path()));
  }
  t.set_netns_us(lap());
  MaybeCrash(config_.fault, FaultPoint::kAfterNetns);

  sb.res.tap = tap;  // owned from before it exists: a half-made tap is removed too
  {
    std::shared_lock no_fork(sandbox::ForkLock());  // vmm_child.h
    FORKD_RETURN_IF_ERROR(netfilter::CreateTap(sb.res.netns.get(), {.name = tap,
                                                                    .owner = TapOwner(sb),
                                                                    .group = TapOwner(sb),
                                                                    .persistent = true,
                                                                    .vnet_hdr = true})
                              .status());
  }
  {
    FORKD_ASSIGN_OR_RETURN(auto rt, netfilter::RtNetlink::Open(sb.res.netns.get()));
    FORKD_RETURN_IF_ERROR(rt.AddAddress(tap, {gw, 30}));
    FORKD_RETURN_IF_ERROR(rt.SetUp(tap));
  }
  // Namespace sysctls (the created namespace or the caller's) before any
  // VMM attaches to the tap.
  FORKD_RETURN_IF_ERROR(netfilter::HardenNamespace(sb.res.netns.get(), tap));
  t.set_tap_us(lap());
  MaybeCrash(config_.fault, FaultPoint::kAfterTap);

  {
    FORKD_ASSIGN_OR_RETURN(auto nft, netfilter::Nftables::Open(sb.res.netns.get(), 1));
    FORKD_RETURN_IF_ERROR(
        nft.EnsureSkeleton({.uplink = std::nullopt, .guest_subnets = {}, .shards = 1}));
    FORKD_RETURN_IF_ERROR(nft.AddTap(PolicyFor(spec, tap, guest, gw)));
  }
  // The resolver serves before the VMM exists (its pins need the tap's sets).
  FORKD_RETURN_IF_ERROR(StartDns(sb));
  t.set_chains_us(lap());
  MaybeCrash(config_.fault, FaultPoint::kAfterChains);

  sandbox::VmmSpawnOptions o;
  o.keeper = config_.keeper_binary;
  o.binary = config_.vmm_binary;
  o.serial_out = sb.serial;
  // forkd's own cgroup for the VM, or (with --no-vmm-cgroup) the given one as is.
  o.cgroup_dir = !sb.vm_cgroup.empty() ? sb.vm_cgroup : spec.cgroup_path();
  o.args = std::move(jail_args);
  o.args.insert(o.args.end(), {"--restore", meta.snapshot().string(), "--vsock-uds",
                               sb.info.vsock_path(), "--net-tap", tap, "--net-netns",
                               sb.info.netns_path(), "--net-mac", SlotMac(sb.slot)});
  {
    FORKD_ASSIGN_OR_RETURN(auto expect, RestorePinArgs(*config_.guests, meta));
    o.args.insert(o.args.end(), expect.begin(), expect.end());
  }
  FORKD_ASSIGN_OR_RETURN(auto vmm, sandbox::VmmChild::Spawn(o));
  sb.info.set_vmm_pid(vmm.pid());
  sb.keeper_pid = vmm.keeper_pid();
  sb.res.vmm_pidfd = vmm.TakePidfd();
  sb.res.keeper_pidfd = vmm.TakeKeeperPidfd();
  sb.vmm.emplace(std::move(vmm));
  FORKD_RETURN_IF_ERROR(JournalPut(sb, "spawned"));
  FORKD_RETURN_IF_ERROR(ExplainRestoreFailure(sb.vmm->Expect("READY", kReadyTimeout),
                                              sb.res.vmm_pidfd.get(), sb.res.keeper_pidfd.get()));
  t.set_restore_us(lap());
  MaybeCrash(config_.fault, FaultPoint::kAfterSpawn);
  return absl::OkStatus();
}

// ---- jail and cgroup of a VMM ----------------------------------------------------

absl::Status Node::PlanVm(Sandbox& sb, const std::string& given_cgroup) {
  if (config_.jail.enabled && sb.uid == 0) {
    FORKD_ASSIGN_OR_RETURN(sb.uid, uids_->Acquire());
  }
  if (cgroups_->policy().enabled) sb.vm_cgroup = cgroups_->PathFor(sb.key, given_cgroup);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> Node::MakeVm(Sandbox& sb, const std::string& given_cgroup,
                                                      uint32_t memory_mib) {
  const sandbox::VmmJail jail = sandbox::JailLayout(sb.dir, sb.uid);
  FORKD_RETURN_IF_ERROR(sandbox::PrepareJailDirs(jail));
  if (!sb.vm_cgroup.empty()) {
    FORKD_RETURN_IF_ERROR(
        cgroups_->Create(sb.vm_cgroup, given_cgroup, cgroups_->LimitsFor(memory_mib)));
  }
  return sandbox::JailArgs(config_.jail, jail);
}

absl::Status Node::ReleaseVm(Sandbox& sb) {
  FORKD_RETURN_IF_ERROR(sandbox::RemoveVmCgroup(sb.vm_cgroup));
  if (sb.uid != 0) uids_->Release(sb.uid);
  return absl::OkStatus();
}

absl::Status Node::Admit(Sandbox& sb, v1::StageTimings& t) {
  const auto g0 = Clock::now();
  agent::v1::Network net;
  net.set_ipv4_cidr(sb.info.guest_ipv4() + "/30");
  net.set_ipv4_gateway(Ip(SlotAddress(sb.slot, 1)));
  net.set_mac(SlotMac(sb.slot));
  absl::Status s = gate::AdmitFork(sb.res,
                                   agent::ConnectVsockMux(sb.info.vsock_path(), kAgentPort,
                                                          agent::DeadlineIn(config_.gate_deadline)),
                                   sb.info.generation(), net,
                                   {.deadline = config_.gate_deadline, .entropy_bytes = 32});
  t.set_gate_us(Us(g0, Clock::now()));
  if (!s.ok()) {
    // AdmitFork reaped the VMM, tap, chains and files; the rest goes in Dispose.
    Dispose(sb, v1::Sandbox::REAPED, CauseOf(s) + ": " + std::string(s.message()));
  }
  return s;
}

// ---- DNS -----------------------------------------------------------------------

absl::Status Node::StartDns(Sandbox& sb) {
  if (sb.allow_dns.empty()) return absl::OkStatus();
  if (!config_.dns_upstream) {
    return absl::FailedPreconditionError("sandbox " + sb.info.sandbox_id() +
                                         " names DNS names and forkd runs without --dns-upstream");
  }
  if (sb.dns_ports.empty()) {
    sb.dns_ports.assign(std::begin(kDefaultDnsPorts), std::end(kDefaultDnsPorts));
  }
  FORKD_ASSIGN_OR_RETURN(
      sb.dns, StartSandboxDns(sb.res.netns.get(), sb.info.tap(), 1, SlotAddress(sb.slot, 1),
                              *config_.dns_upstream, sb.allow_dns, sb.dns_ports));
  return absl::OkStatus();
}

void Node::StopDns(Sandbox& sb) {
  if (!sb.dns) return;
  // A loop that had failed is reported; the sandbox goes anyway.
  if (absl::Status s = sb.dns->Stop(); !s.ok()) {
    spdlog::error("sandbox {}: its DNS proxy had stopped early: {}", sb.info.sandbox_id(),
                  s.ToString());
  }
  const dns::ProxyMetrics m = sb.dns->Metrics();
  sb.dns.reset();
  std::lock_guard lock(mu_);
  dns_retired_ += m;
}

dns::ProxyMetrics Node::DnsMetrics(uint32_t* live_proxies) {
  std::vector<std::shared_ptr<Sandbox>> all;
  dns::ProxyMetrics total;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, sb] : sandboxes_) all.push_back(sb);
    total = dns_retired_;
  }
  uint32_t live = 0;
  for (const auto& sb : all) {
    std::lock_guard lock(sb->mu);
    if (!sb->dns) continue;
    live++;
    total += sb->dns->Metrics();
  }
  if (live_proxies) *live_proxies = live;
  return total;
}

// ---- sandboxes -----------------------------------------------------------------

absl::StatusOr<std::shared_ptr<Node::Sandbox>> Node::Find(const std::string& id, bool ready_only) {
  FORKD_RETURN_IF_ERROR(sandbox::ValidateId("sandbox id", id));
  std::lock_guard lock(mu_);
  auto it = sandboxes_.find(id);
  if (it != sandboxes_.end()) {
    if (ready_only && it->second->info.state() != v1::Sandbox::READY) {
      return absl::UnavailableError("sandbox " + id + " is still starting");
    }
    return it->second;
  }
  if (auto g = gone_.find(id); g != gone_.end()) {
    return absl::FailedPreconditionError(
        "sandbox " + id + " was " +
        (g->second.state() == v1::Sandbox::EXITED ? "exited" : "reaped") + ": " +
        g->second.reap_cause());
  }
  return absl::NotFoundError("no sandbox " + id);
}

absl::Status Node::Terminate(const std::string& sandbox_id) {
  FORKD_ASSIGN_OR_RETURN(auto sb, Find(sandbox_id, true));
  std::lock_guard lock(sb->mu);
  if (sb->info.state() != v1::Sandbox::READY) {
    return absl::NotFoundError("sandbox " + sandbox_id + " is already gone");
  }
  StopDns(*sb);
  absl::Status s = gate::Reap(sb->res);
  sb->vmm.reset();
  if (!sb->netns_pin.empty()) {
    sb->res.netns.reset();
    absl::Status p = sandbox::RemovePinnedNetns(sb->netns_pin);
    if (s.ok()) s = p;
  }
  if (s.ok()) s = ReleaseVm(*sb);
  if (!s.ok()) {
    sb->info.set_state(v1::Sandbox::REAPED);
    sb->info.set_reap_cause("terminate incomplete: " + std::string(s.message()));
    return Annotate(s,
                    "terminate " + sandbox_id + " (its journal record stays for the next start)");
  }
  FORKD_RETURN_IF_ERROR(journal_.Remove(sb->key));
  sb->info.set_state(v1::Sandbox::REAPED);
  Forget(sandbox_id, sb->slot);
  MaybeDropHiddenTemplate(sb->info.template_id());
  Publish(v1::Event::TERMINATED, sandbox_id, sb->info.template_id(), "terminated");
  refill_cv_.notify_all();
  return absl::OkStatus();
}

absl::Status Node::TerminateAll() {
  std::vector<std::string> ids;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, sb] : sandboxes_) ids.push_back(id);
  }
  absl::Status first;
  for (const auto& id : ids) {
    absl::Status s = Terminate(id);
    if (!s.ok() && s.code() != absl::StatusCode::kNotFound && first.ok()) first = s;
  }
  return first;
}

absl::StatusOr<v1::ListSandboxesResponse> Node::ListSandboxes(
    const v1::ListSandboxesRequest& request) {
  if (!request.template_id().empty()) {
    FORKD_RETURN_IF_ERROR(sandbox::ValidateId("template id", request.template_id()));
  }
  std::vector<std::shared_ptr<Sandbox>> all;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, sb] : sandboxes_) all.push_back(sb);
  }
  v1::ListSandboxesResponse out;
  for (const auto& sb : all) {
    std::lock_guard lock(sb->mu);
    if (!request.template_id().empty() && sb->info.template_id() != request.template_id()) continue;
    *out.add_sandboxes() = sb->info;
  }
  return out;
}

absl::StatusOr<v1::Sandbox> Node::GetSandbox(const std::string& sandbox_id) {
  FORKD_RETURN_IF_ERROR(sandbox::ValidateId("sandbox id", sandbox_id));
  std::shared_ptr<Sandbox> sb;
  {
    std::lock_guard lock(mu_);
    auto it = sandboxes_.find(sandbox_id);
    if (it == sandboxes_.end()) {
      if (auto g = gone_.find(sandbox_id); g != gone_.end()) return g->second;
      return absl::NotFoundError("no sandbox " + sandbox_id);
    }
    sb = it->second;
  }
  std::lock_guard lock(sb->mu);
  return sb->info;
}

v1::Capacity Node::GetCapacity() {
  v1::Capacity c;
  std::vector<std::shared_ptr<Sandbox>> all;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, sb] : sandboxes_) all.push_back(sb);
    for (const auto& [t, pool] : pools_) {
      auto* p = c.add_standby();
      p->set_template_id(t);
      p->set_ready(static_cast<uint32_t>(pool.size()));
      p->set_target(config_.standby);
    }
  }
  uint32_t ready = 0;
  for (const auto& sb : all) {
    pid_t pid = 0;
    {
      std::lock_guard lock(sb->mu);
      if (sb->info.state() != v1::Sandbox::READY) continue;
      pid = sb->info.vmm_pid();
    }
    ready++;
    if (auto m = sandbox::MemoryOf(pid); m.ok()) {
      c.set_sandboxes_pss_bytes(c.sandboxes_pss_bytes() + m->pss);
      c.set_sandboxes_rss_bytes(c.sandboxes_rss_bytes() + m->rss);
    }
  }
  c.set_max_sandboxes(config_.max_sandboxes);
  c.set_live_sandboxes(ready);
  c.set_free_slots(config_.max_sandboxes > all.size()
                       ? config_.max_sandboxes - static_cast<uint32_t>(all.size())
                       : 0);
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  uint64_t kib = 0;
  while (in >> key >> kib >> unit) {
    if (key == "MemTotal:") c.set_memory_total_bytes(kib * 1024);
    if (key == "MemAvailable:") c.set_memory_available_bytes(kib * 1024);
  }
  c.set_memory_reserve_bytes(config_.memory_reserve_bytes);
  c.set_kernel_sha256(config_.kernel_sha256);
  c.set_initrd_sha256(config_.initrd_sha256);
  c.set_pvm_host(config_.pvm_host);
  return c;
}

// ---- inside a sandbox ----------------------------------------------------------

namespace {
absl::StatusOr<agent::AgentClient> Connect(const std::string& uds) {
  FORKD_ASSIGN_OR_RETURN(UniqueFd fd,
                         agent::ConnectVsockMux(uds, kAgentPort, agent::DeadlineIn(5s)));
  return agent::AgentClient(std::move(fd));
}
absl::Status AgentError(const std::string& id, const absl::Status& s) {
  return absl::Status(s.code() == absl::StatusCode::kAborted ? absl::StatusCode::kFailedPrecondition
                                                             : absl::StatusCode::kUnavailable,
                      "sandbox " + id + ": agent: " + std::string(s.message()));
}
}  // namespace

absl::StatusOr<v1::ExecResponse> Node::Exec(const v1::ExecRequest& request) {
  if (request.argv_size() == 0) return absl::InvalidArgumentError("argv is empty");
  FORKD_ASSIGN_OR_RETURN(auto sb, Find(request.sandbox_id(), true));
  std::string uds;
  agent::v1::ExecRequest req;
  {
    std::lock_guard lock(sb->mu);
    if (sb->info.state() != v1::Sandbox::READY) {
      return absl::FailedPreconditionError("sandbox " + request.sandbox_id() +
                                           " was reaped: " + sb->info.reap_cause());
    }
    uds = sb->info.vsock_path();
    // The sandbox's environment, then the call's (which wins).
    std::map<std::string, std::string> env;
    for (const auto& e : sb->env) env[e.name()] = e.value();
    for (const auto& e : request.env()) env[e.name()] = e.value();
    for (const auto& [k, v] : env) req.add_env(k + "=" + v);
  }
  for (const auto& a : request.argv()) req.add_argv(a);
  req.set_cwd(request.cwd());
  req.set_stdin(request.stdin());
  req.set_timeout_ms(request.timeout_ms());
  FORKD_ASSIGN_OR_RETURN(auto client, Connect(uds));
  const auto timeout =
      std::chrono::milliseconds(request.timeout_ms() ? request.timeout_ms() : 30000);
  auto resp = client.Exec(req, agent::DeadlineIn(timeout + 5s));
  if (!resp.ok()) return AgentError(request.sandbox_id(), resp.status());
  if (!resp->error().empty()) {
    return absl::FailedPreconditionError("sandbox " + request.sandbox_id() + ": " + resp->error());
  }
  v1::ExecResponse out;
  out.set_exit_code(resp->has_signal() ? 128 + resp->signal() : resp->exit_code());
  out.set_signal(resp->has_signal() ? resp->signal() : 0);
  out.set_timed_out(resp->timed_out());
  out.set_stdout(resp->stdout());
  out.set_stderr(resp->stderr());
  out.set_duration_us(resp->duration_ns() / 1000);
  return out;
}

absl::StatusOr<v1::ReadFileResponse> Node::ReadFile(const v1::ReadFileRequest& request) {
  if (request.path().empty() || request.path()[0] != '/') {
    return absl::InvalidArgumentError("path must be absolute");
  }
  FORKD_ASSIGN_OR_RETURN(auto sb, Find(request.sandbox_id(), true));
  std::string uds;
  {
    std::lock_guard lock(sb->mu);
    uds = sb->info.vsock_path();
  }
  FORKD_ASSIGN_OR_RETURN(auto client, Connect(uds));
  agent::v1::ReadFileRequest req;
  req.set_path(request.path());
  req.set_max_bytes(request.max_bytes());
  auto resp = client.ReadFile(req, agent::DeadlineIn(30s));
  if (!resp.ok()) return AgentError(request.sandbox_id(), resp.status());
  if (!resp->error().empty()) return absl::NotFoundError(resp->error());
  v1::ReadFileResponse out;
  out.set_data(resp->data());
  out.set_truncated(resp->truncated());
  return out;
}

absl::StatusOr<v1::WriteFileResponse> Node::WriteFile(const v1::WriteFileRequest& request) {
  if (request.path().empty() || request.path()[0] != '/') {
    return absl::InvalidArgumentError("path must be absolute");
  }
  FORKD_ASSIGN_OR_RETURN(auto sb, Find(request.sandbox_id(), true));
  std::string uds;
  {
    std::lock_guard lock(sb->mu);
    uds = sb->info.vsock_path();
  }
  FORKD_ASSIGN_OR_RETURN(auto client, Connect(uds));
  agent::v1::WriteFileRequest req;
  req.set_path(request.path());
  req.set_data(request.data());
  req.set_mode(request.mode());
  auto resp = client.WriteFile(req, agent::DeadlineIn(30s));
  if (!resp.ok()) return AgentError(request.sandbox_id(), resp.status());
  if (!resp->error().empty()) return absl::FailedPreconditionError(resp->error());
  return v1::WriteFileResponse();
}

// ---- standby pool --------------------------------------------------------------

std::shared_ptr<Node::Sandbox> Node::TakeStandby(const std::string& template_id) {
  std::lock_guard lock(mu_);
  auto it = pools_.find(template_id);
  if (it == pools_.end() || it->second.empty()) return nullptr;
  auto sb = it->second.back();
  it->second.pop_back();
  refill_cv_.notify_all();
  return sb;
}

void Node::DrainPool(const std::string& template_id) {
  std::vector<std::shared_ptr<Sandbox>> pool;
  {
    std::lock_guard lock(mu_);
    auto it = pools_.find(template_id);
    if (it == pools_.end()) return;
    pool = std::move(it->second);
    pools_.erase(it);
  }
  for (auto& sb : pool) {
    std::lock_guard lock(sb->mu);
    Dispose(*sb, v1::Sandbox::REAPED, "standby pool drained");
  }
}

void Node::RefillLoop() {
  while (!stopping_) {
    std::string want;
    templates::TemplateMeta meta;
    {
      std::unique_lock lock(mu_);
      refill_cv_.wait_for(lock, 1s);
      if (stopping_ || config_.standby == 0) continue;
      for (const auto& [id, t] : templates_) {
        if (t.state != v1::Template::READY || hidden_templates_.count(id)) continue;
        if (pools_[id].size() < config_.standby &&
            sandboxes_.size() + pools_[id].size() < config_.max_sandboxes) {
          want = id;
          meta = t.meta;
          break;
        }
      }
      if (want.empty()) continue;
    }
    auto sb = std::make_shared<Sandbox>();
    sb->standby = true;
    {
      std::lock_guard lock(mu_);
      uint32_t slot = 1;
      while (slots_.count(slot)) slot++;
      slots_.insert(slot);
      sb->slot = slot;
    }
    char key[64];
    (void)std::snprintf(key, sizeof key, "standby-%llu-%u",
                        static_cast<unsigned long long>(NowMs()), sb->slot);
    sb->key = key;
    sb->info.set_sandbox_id(key);
    sb->info.set_template_id(want);
    sb->info.set_state(v1::Sandbox::STARTING);
    v1::SandboxSpec spec;
    v1::StageTimings t;
    std::lock_guard lock(sb->mu);
    absl::Status s = [&]() -> absl::Status {
      // As RestoreCold, but the VMM waits for GO (forkd-vmm --standby).
      const std::string tap = SlotTap(sb->slot);
      const netfilter::IpAddress gw = SlotAddress(sb->slot, 1), guest = SlotAddress(sb->slot, 2);
      sb->dir = config_.data_dir / "sandboxes" / sb->key;
      sb->serial = "/dev/null";
      sb->netns_pin = (config_.data_dir / "netns" / sb->key).string();
      sb->info.set_netns_path(sb->netns_pin);
      sb->info.set_tap(tap);
      sb->info.set_guest_ipv4(Ip(guest));
      sb->info.set_vsock_path((sb->dir / "vm" / "vsock.sock").string());
      sb->res.fork_id = sb->key;
      sb->res.paths = {sb->dir};
      FORKD_RETURN_IF_ERROR(PlanVm(*sb, ""));
      FORKD_RETURN_IF_ERROR(JournalPut(*sb, "starting"));
      std::error_code ec;
      fs::create_directories(sb->dir, ec);
      if (ec) return absl::InternalError("create " + sb->dir.string() + ": " + ec.message());
      FORKD_ASSIGN_OR_RETURN(auto jail_args, MakeVm(*sb, "", meta.memory_mib));
      FORKD_ASSIGN_OR_RETURN(sb->res.netns, sandbox::CreatePinnedNetns(sb->netns_pin));
      sb->res.tap = tap;
      {
        std::shared_lock no_fork(sandbox::ForkLock());  // vmm_child.h
        FORKD_RETURN_IF_ERROR(netfilter::CreateTap(sb->res.netns.get(), {.name = tap,
                                                                         .owner = TapOwner(*sb),
                                                                         .group = TapOwner(*sb),
                                                                         .persistent = true,
                                                                         .vnet_hdr = true})
                                  .status());
      }
      {
        FORKD_ASSIGN_OR_RETURN(auto rt, netfilter::RtNetlink::Open(sb->res.netns.get()));
        FORKD_RETURN_IF_ERROR(rt.AddAddress(tap, {gw, 30}));
        FORKD_RETURN_IF_ERROR(rt.SetUp(tap));
      }
      FORKD_RETURN_IF_ERROR(netfilter::HardenNamespace(sb->res.netns.get(), tap));
      {
        FORKD_ASSIGN_OR_RETURN(auto nft, netfilter::Nftables::Open(sb->res.netns.get(), 1));
        FORKD_RETURN_IF_ERROR(
            nft.EnsureSkeleton({.uplink = std::nullopt, .guest_subnets = {}, .shards = 1}));
        FORKD_RETURN_IF_ERROR(nft.AddTap(PolicyFor(spec, tap, guest, gw)));
      }
      sandbox::VmmSpawnOptions o;
      o.keeper = config_.keeper_binary;
      o.binary = config_.vmm_binary;
      o.serial_out = sb->serial;
      o.cgroup_dir = sb->vm_cgroup;
      o.args = std::move(jail_args);
      o.args.insert(
          o.args.end(),
          {"--restore", meta.snapshot().string(), "--standby", "--vsock-uds", sb->info.vsock_path(),
           "--net-tap", tap, "--net-netns", sb->info.netns_path(), "--net-mac", SlotMac(sb->slot)});
      {
        FORKD_ASSIGN_OR_RETURN(auto expect, RestorePinArgs(*config_.guests, meta));
        o.args.insert(o.args.end(), expect.begin(), expect.end());
      }
      FORKD_ASSIGN_OR_RETURN(auto vmm, sandbox::VmmChild::Spawn(o));
      sb->info.set_vmm_pid(vmm.pid());
      sb->keeper_pid = vmm.keeper_pid();
      sb->res.vmm_pidfd = vmm.TakePidfd();
      sb->res.keeper_pidfd = vmm.TakeKeeperPidfd();
      sb->vmm.emplace(std::move(vmm));
      FORKD_RETURN_IF_ERROR(JournalPut(*sb, "standby"));
      return ExplainRestoreFailure(sb->vmm->Expect("STANDBY", kReadyTimeout),
                                   sb->res.vmm_pidfd.get(), sb->res.keeper_pidfd.get());
    }();
    if (!s.ok()) {
      spdlog::error("standby pool of {}: {}", want, s.ToString());
      Dispose(*sb, v1::Sandbox::REAPED, "standby fill failed: " + std::string(s.message()));
      // Don't spin on a persistent failure.
      std::unique_lock l(mu_);
      refill_cv_.wait_for(l, 5s, [&] { return stopping_.load(); });
      continue;
    }
    bool keep = false;
    {
      std::lock_guard l(mu_);
      auto t_it = templates_.find(want);
      keep = t_it != templates_.end() && t_it->second.state == v1::Template::READY;
      if (keep) pools_[want].push_back(sb);
    }
    if (!keep) Dispose(*sb, v1::Sandbox::REAPED, "template deleted while filling its pool");
  }
}

}  // namespace forkd::pipeline

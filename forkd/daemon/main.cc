// forkd: the node daemon. Parses and checks its flags, verifies the guest
// pin, recovers from its journal (adopting live VMMs, removing the rest),
// serves forkd.v1 + grpc.health.v1 + reflection on its unix socket and/or
// mutual-TLS TCP, exposes Prometheus metrics, tells systemd it is ready, and
// on SIGTERM/SIGINT stops serving (live sandboxes keep running and are
// adopted by the next start; `forkctl rm --all` terminates them).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "forkd/daemon/flags.h"
#include "forkd/daemon/guest_pin.h"
#include "forkd/daemon/logging.h"
#include "forkd/daemon/metrics.h"
#include "forkd/daemon/service.h"
#include "forkd/daemon/unix_listener.h"
#include "forkd/pipeline/node.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "spdlog/spdlog.h"
#include "systemd/sd-daemon.h"

namespace forkd::daemon {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool PvmHost() {
  struct stat st {};
  if (::stat("/sys/module/kvm_pvm", &st) == 0) return true;
  const std::string cpu = ReadFile("/proc/cpuinfo");
  return cpu.find(" vmx") == std::string::npos && cpu.find(" svm") == std::string::npos;
}

int Run(int argc, char** argv) {
  const char* env = std::getenv("FORKD_ENABLE_TEST_FAULTS");
  auto flags = ParseFlags(argc, argv, env != nullptr && std::string(env) == "1");
  if (!flags.ok()) {
    if (flags.status().code() == absl::StatusCode::kCancelled) {
      std::fputs(std::string(flags.status().message()).c_str(), stdout);
      return 0;
    }
    std::fprintf(stderr, "forkd: %s\n", std::string(flags.status().message()).c_str());
    return 2;
  }
  SetUpLogging(flags->log_format);
  ::signal(SIGPIPE, SIG_IGN);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);  // before any thread starts

  pipeline::NodeConfig cfg;
  cfg.data_dir = flags->data_dir;
  cfg.vmm_binary = flags->vmm;
  cfg.keeper_binary = flags->vmm_keeper;
  cfg.probe_guest = flags->probe_guest;
  cfg.max_sandboxes = flags->max_sandboxes;
  cfg.memory_reserve_bytes = flags->memory_reserve_bytes;
  cfg.standby = flags->standby;
  cfg.gate_deadline = std::chrono::milliseconds(flags->gate_deadline_ms);
  cfg.fault = flags->fault;
  cfg.dns_upstream = flags->dns_upstream;
  cfg.pvm_host = PvmHost();
  if (flags->fault != pipeline::FaultPoint::kNone) {
    spdlog::warn("TEST FAULT POINT ARMED: forkd kills itself at {}",
                 pipeline::FaultPointName(flags->fault));
  }
  if (::access(cfg.vmm_binary.c_str(), X_OK) != 0) {
    spdlog::critical("--vmm {} is not executable", cfg.vmm_binary);
    return 1;
  }
  if (::access(cfg.keeper_binary.c_str(), X_OK) != 0) {
    spdlog::critical("--vmm-keeper {} is not executable", cfg.keeper_binary);
    return 1;
  }
  if (::getpid() == 1) {
    // The kernel kills every process of a pid namespace whose init dies: a
    // crash of forkd would take every VM along, and nobody would reap the
    // keepers of a previous forkd (README "Crash safety").
    spdlog::warn(
        "forkd is pid 1 of its pid namespace: its crash kills every VM; run it under an init "
        "that reaps orphans (tini, a pod's pause container)");
  }
  {
    auto guests = OpenGuestPin(*flags);
    if (!guests.ok()) {
      spdlog::critical("guest pin: {}", guests.status().ToString());
      return kGuestPinRefusedExit;
    }
    cfg.guests = std::move(*guests);
  }
  cfg.kernel = flags->kernel;
  cfg.initrd = flags->initrd;
  cfg.kernel_sha256 = cfg.guests->kernel_hex();
  if (!cfg.initrd.empty()) cfg.initrd_sha256 = cfg.guests->initrd_hex();
  if (flags->insecure_skip_guest_verify && !cfg.kernel.empty()) {
    spdlog::warn(
        "--insecure-skip-guest-verify: kernel {} (sha256 {}) and initrd {} not checked; Linux "
        "templates are stamped unpinned and every restore of one is logged",
        cfg.kernel, cfg.kernel_sha256, cfg.initrd.empty() ? "(none)" : cfg.initrd);
  }
  if (cfg.guests->probe_hex().empty()) {
    spdlog::warn("probe guest {} unreadable: probe templates are refused", flags->probe_guest);
  }
  cfg.insecure_skip_guest_verify = flags->insecure_skip_guest_verify;
  cfg.jail = flags->jail;
  cfg.cgroup = flags->cgroup;
  cfg.max_fork_running = flags->max_fork_running;
  if (!cfg.jail.enabled) {
    spdlog::critical(
        "WARNING: --no-jail: every forkd-vmm runs UNJAILED as root with forkd's view of the "
        "host; a guest that escapes its VMM owns this machine. For debugging only.");
  } else {
    spdlog::info("forkd-vmm jail: uid/gid {} {}-{}", cfg.jail.shared ? "shared" : "per VM from",
                 cfg.jail.uid_first, cfg.jail.uid_first + cfg.jail.uid_count - 1);
  }

  pipeline::RecoveryReport report;
  auto node = pipeline::Node::Start(cfg, &report);
  if (!node.ok()) {
    spdlog::critical("start: {}", node.status().ToString());
    return 1;
  }
  for (const auto& id : report.adopted) spdlog::info("recovery: adopted live sandbox {}", id);
  for (const auto& id : report.removed) spdlog::info("recovery: removed remains of sandbox {}", id);
  for (const auto& n : report.notes) spdlog::info("recovery: {}", n);
  if (!report.cgroup_warning.empty()) spdlog::warn("cgroups: {}", report.cgroup_warning);

  std::unique_ptr<Metrics> metrics;
  if (!flags->metrics_listen.empty()) {
    auto m = Metrics::Start(flags->metrics_listen, **node);
    if (!m.ok()) {
      spdlog::critical("{}", m.status().ToString());
      return 1;
    }
    metrics = std::move(*m);
  }

  PeerRegistry peers;
  std::set<std::string> sans(flags->tls_allowed_san.begin(), flags->tls_allowed_san.end());
  Service service(**node, peers, sans, flags->tls());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(8 << 20);
  std::vector<std::unique_ptr<int>> ports;
  for (const auto& l : flags->listen) {
    if (l.kind != Listen::Kind::kTcp) continue;
    std::shared_ptr<grpc::ServerCredentials> creds;
    if (flags->tls()) {
      grpc::SslServerCredentialsOptions o(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
      o.pem_root_certs = ReadFile(flags->tls_ca);
      o.pem_key_cert_pairs.push_back({ReadFile(flags->tls_key), ReadFile(flags->tls_cert)});
      if (o.pem_root_certs.empty() || o.pem_key_cert_pairs[0].private_key.empty() ||
          o.pem_key_cert_pairs[0].cert_chain.empty()) {
        spdlog::critical("TLS: --tls-cert, --tls-key or --tls-ca is empty or unreadable");
        return 1;
      }
      creds = grpc::SslServerCredentials(o);
    } else {
      creds = grpc::InsecureServerCredentials();
    }
    const std::string host = l.host.find(':') != std::string::npos ? "[" + l.host + "]" : l.host;
    ports.push_back(std::make_unique<int>(0));
    builder.AddListeningPort(host + ":" + std::to_string(l.port), creds, ports.back().get());
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    spdlog::critical("gRPC server did not start (a TCP port in use?)");
    return 1;
  }
  size_t pi = 0;
  for (const auto& l : flags->listen) {
    if (l.kind != Listen::Kind::kTcp) continue;
    if (*ports[pi] == 0) {
      spdlog::critical("could not listen on tcp:{}:{}", l.host, l.port);
      return 1;
    }
    spdlog::info("serving on tcp:{}:{} ({})", l.host, *ports[pi],
                 flags->tls() ? "mTLS" : "insecure loopback");
    pi++;
  }
  std::vector<std::unique_ptr<UnixListener>> unix_listeners;
  for (const auto& l : flags->listen) {
    if (l.kind != Listen::Kind::kUnix) continue;
    auto u = UnixListener::Bind(l.path, flags->socket_group);
    if (!u.ok()) {
      spdlog::critical("--listen unix:{}: {}", l.path, u.status().ToString());
      server->Shutdown();
      return 1;
    }
    (*u)->Serve(server.get(), &peers);
    spdlog::info("serving on unix:{} (0660)", l.path);
    unix_listeners.push_back(std::move(*u));
  }
  (void)sd_notify(0, "READY=1\nSTATUS=serving");
  spdlog::info("forkd ready: {} template(s), {} sandbox(es) adopted, pvm_host={}",
               (*node)->ListTemplates().templates_size(), report.adopted.size(), cfg.pvm_host);

  int sig = 0;
  sigwait(&stop, &sig);
  spdlog::info(
      "signal {}: stopping (live sandboxes keep running under their keepers for the "
      "next start)",
      sig);
  (void)sd_notify(0, "STOPPING=1");
  for (auto& u : unix_listeners) u->Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  metrics.reset();
  node->reset();
  unix_listeners.clear();
  return 0;
}

}  // namespace
}  // namespace forkd::daemon

int main(int argc, char** argv) { return forkd::daemon::Run(argc, argv); }

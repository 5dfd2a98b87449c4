// forkctl: the human CLI over forkd's API (forkd/api/forkd.proto).
// Readable tables by default, --json everywhere; one-line errors and a
// non-zero exit on failure; `exec` exits with the command's own code.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "forkd/api/forkd.grpc.pb.h"
#include "forkd/forkctl/dns_ports.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"

namespace {

struct Global {
  std::string socket = "/run/forkd/forkd.sock";
  std::string addr;
  std::string tls_cert, tls_key, tls_ca;
  bool json = false;
};

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::unique_ptr<forkd::v1::Forkd::Stub> Connect(const Global& g) {
  std::shared_ptr<grpc::Channel> ch;
  if (!g.addr.empty()) {
    if (!g.tls_cert.empty() || !g.tls_ca.empty()) {
      grpc::SslCredentialsOptions o;
      o.pem_root_certs = Slurp(g.tls_ca);
      o.pem_private_key = Slurp(g.tls_key);
      o.pem_cert_chain = Slurp(g.tls_cert);
      ch = grpc::CreateChannel(g.addr, grpc::SslCredentials(o));
    } else {
      ch = grpc::CreateChannel(g.addr, grpc::InsecureChannelCredentials());
    }
  } else {
    ch = grpc::CreateChannel("unix:" + g.socket, grpc::InsecureChannelCredentials());
  }
  return forkd::v1::Forkd::NewStub(ch);
}

[[noreturn]] void Fail(const grpc::Status& s) {
  std::string msg = s.error_message();
  for (auto& c : msg) {
    if (c == '\n') c = ' ';
  }
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  const int code = static_cast<int>(s.error_code());
  std::fprintf(stderr, "forkctl: %s: %s\n", code >= 0 && code <= 16 ? kNames[code] : "?",
               msg.c_str());
  std::exit(1);
}

[[noreturn]] void Usage(const std::string& msg) {
  std::fprintf(stderr, "forkctl: %s\n", msg.c_str());
  std::exit(2);
}

std::string Json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

const char* StateName(forkd::v1::Sandbox::State s) {
  switch (s) {
    case forkd::v1::Sandbox::STARTING:
      return "starting";
    case forkd::v1::Sandbox::READY:
      return "ready";
    case forkd::v1::Sandbox::REAPED:
      return "reaped";
    case forkd::v1::Sandbox::EXITED:
      return "exited";
    default:
      return "?";
  }
}

double Ms(uint64_t us) { return static_cast<double>(us) / 1000.0; }

void PrintSandboxes(const google::protobuf::RepeatedPtrField<forkd::v1::Sandbox>& sbs,
                    bool timings) {
  if (timings) {
    std::printf("%-24s %-15s %8s %8s %8s %8s %9s %8s %9s %s\n", "SANDBOX", "GUEST", "journal",
                "netns", "tap", "chains", "restore", "gate", "total", "(ms)");
    for (const auto& s : sbs) {
      const auto& t = s.timings();
      std::printf("%-24s %-15s %8.2f %8.2f %8.2f %8.2f %9.2f %8.2f %9.2f %s\n",
                  s.sandbox_id().c_str(), s.guest_ipv4().c_str(), Ms(t.journal_us()),
                  Ms(t.netns_us()), Ms(t.tap_us()), Ms(t.chains_us()), Ms(t.restore_us()),
                  Ms(t.gate_us()), Ms(t.total_us()), t.from_standby() ? "standby" : "cold");
    }
    return;
  }
  std::printf("%-24s %-16s %-8s %-15s %-8s %s\n", "SANDBOX", "TEMPLATE", "STATE", "GUEST", "PID",
              "NETNS");
  for (const auto& s : sbs) {
    std::printf("%-24s %-16s %-8s %-15s %-8d %s\n", s.sandbox_id().c_str(), s.template_id().c_str(),
                StateName(s.state()), s.guest_ipv4().c_str(), s.vmm_pid(), s.netns_path().c_str());
  }
}

// CIDR[:PORTS][/tcp|/udp], PORTS = P[-Q][,P[-Q]...]; IPv6 as [addr/len]:PORTS.
forkd::v1::EgressRule ParseAllow(const std::string& text) {
  forkd::v1::EgressRule r;
  std::string rest = text;
  std::string proto;
  for (const char* p : {"/tcp", "/udp"}) {
    if (rest.size() > 4 && rest.ends_with(p)) {
      proto = p + 1;
      rest.resize(rest.size() - 4);
    }
  }
  std::string cidr = rest, ports;
  if (!rest.empty() && rest[0] == '[') {
    const size_t close = rest.find(']');
    if (close == std::string::npos) Usage("--allow " + text + ": missing ]");
    cidr = rest.substr(1, close - 1);
    if (close + 1 < rest.size()) {
      if (rest[close + 1] != ':') Usage("--allow " + text + ": expected ]:PORTS");
      ports = rest.substr(close + 2);
    }
  } else if (const size_t colon = rest.find(':');
             colon != std::string::npos && rest.find(':', colon + 1) == std::string::npos) {
    cidr = rest.substr(0, colon);
    ports = rest.substr(colon + 1);
  }
  r.set_cidr(cidr);
  r.set_protocol(proto == "tcp"   ? forkd::v1::EgressRule::TCP
                 : proto == "udp" ? forkd::v1::EgressRule::UDP
                                  : forkd::v1::EgressRule::PROTOCOL_ANY);
  std::stringstream ss(ports);
  std::string item;
  while (!ports.empty() && std::getline(ss, item, ',')) {
    auto* pr = r.add_ports();
    try {
      const size_t dash = item.find('-');
      pr->set_first(static_cast<uint32_t>(std::stoul(item.substr(0, dash))));
      if (dash != std::string::npos)
        pr->set_last(static_cast<uint32_t>(std::stoul(item.substr(dash + 1))));
    } catch (...) {
      Usage("--allow " + text + ": port '" + item + "' is not a number");
    }
  }
  return r;
}

forkd::v1::EnvVar ParseEnv(const std::string& kv, bool secret) {
  const size_t eq = kv.find('=');
  if (eq == std::string::npos || eq == 0) Usage("environment entries are K=V");
  forkd::v1::EnvVar e;
  e.set_name(kv.substr(0, eq));
  e.set_value(kv.substr(eq + 1));
  e.set_secret(secret);
  return e;
}

}  // namespace

int main(int argc, char** argv) {
  Global g;
  CLI::App app{"forkctl: control a forkd node"};
  app.require_subcommand(1);
  app.add_option("--socket", g.socket, "forkd's unix socket")->capture_default_str();
  app.add_option("--addr", g.addr, "HOST:PORT of a TCP forkd (mutual TLS with the --tls-* flags)");
  app.add_option("--tls-cert", g.tls_cert, "client certificate (PEM)");
  app.add_option("--tls-key", g.tls_key, "client key (PEM)");
  app.add_option("--tls-ca", g.tls_ca, "CA of forkd's server certificate (PEM)");
  app.add_flag("--json", g.json, "print JSON");

  // template create|ls|rm
  auto* tmpl = app.add_subcommand("template", "templates")->require_subcommand(1);
  std::string t_id, agent_mode, extra_cmdline;
  bool t_linux = false, t_force = false;
  uint32_t t_mem = 0;
  std::vector<std::string> t_init;
  auto* t_create = tmpl->add_subcommand("create", "build a template (probe guest by default)");
  t_create->add_option("ID", t_id)->required();
  t_create->add_flag("--linux", t_linux, "boot forkd's --kernel/--initrd instead of the probe");
  t_create->add_option("--agent-mode", agent_mode,
                       "probe agent: honest|refuse|silent|late|garbage");
  t_create->add_option("--memory-mib", t_mem);
  t_create->add_option("--cmdline", extra_cmdline, "extra kernel command line (Linux)");
  t_create->add_option("--init", t_init,
                       "init command run before the snapshot (repeatable; split on spaces)");
  t_create->add_flag("--force", t_force, "build a Linux template even on a PVM host");
  auto* t_ls = tmpl->add_subcommand("ls", "list templates");
  auto* t_rm = tmpl->add_subcommand("rm", "delete a template");
  t_rm->add_option("ID", t_id)->required();
  t_rm->add_flag("--force", t_force, "terminate its live forks first");

  // fork
  auto* fork = app.add_subcommand("fork", "fork sandboxes from a template");
  std::string f_tmpl, f_netns, f_cgroup;
  uint32_t f_count = 1;
  std::vector<std::string> f_ids, f_allow, f_dns, f_dns_ports, f_env, f_secret;
  bool f_cold = false, f_timings = false;
  fork->add_option("TEMPLATE", f_tmpl)->required();
  fork->add_option("--count", f_count, "how many sandboxes");
  fork->add_option("--id", f_ids, "sandbox id (repeatable; one per sandbox)");
  fork->add_option("--allow", f_allow, "egress CIDR[:PORTS][/tcp|/udp] (repeatable)");
  fork->add_option("--allow-dns", f_dns, "DNS name the sandbox may resolve (repeatable)");
  fork->add_option("--dns-port", f_dns_ports,
                   "port (1-65535) the addresses of --allow-dns names are opened for, TCP and "
                   "UDP (repeatable or a comma list; default 443,80)");
  fork->add_option("--env", f_env, "K=V (repeatable)");
  fork->add_option("--secret-env", f_secret, "K=V, never logged (repeatable)");
  fork->add_option("--netns", f_netns, "existing network namespace path");
  fork->add_option("--cgroup", f_cgroup, "existing cgroup v2 directory");
  fork->add_flag("--cold", f_cold, "never take from the standby pool");
  fork->add_flag("--timings", f_timings, "print the per-stage timings table");

  // exec
  auto* exec = app.add_subcommand("exec", "run a command in a sandbox: exec ID -- CMD...");
  std::string e_id;
  std::vector<std::string> e_cmd;
  std::vector<std::string> e_env;
  exec->add_option("ID", e_id)->required();
  exec->add_option("CMD", e_cmd)->required();
  exec->add_option("--env", e_env, "K=V (repeatable)");

  auto* ls = app.add_subcommand("ls", "list sandboxes");
  std::string ls_tmpl;
  ls->add_option("--template", ls_tmpl);
  auto* get = app.add_subcommand("get", "show a sandbox");
  std::string get_id;
  get->add_option("ID", get_id)->required();
  auto* rm = app.add_subcommand("rm", "terminate sandboxes");
  std::vector<std::string> rm_ids;
  bool rm_all = false;
  rm->add_option("ID", rm_ids);
  rm->add_flag("--all", rm_all, "every sandbox");
  auto* cap = app.add_subcommand("capacity", "slots, memory, pools, kernel digest");
  auto* watch = app.add_subcommand("watch", "stream lifecycle events");
  std::string w_id;
  watch->add_option("ID", w_id, "only this sandbox");

  CLI11_PARSE(app, argc, argv);
  auto stub = Connect(g);
  grpc::ClientContext ctx;

  if (t_create->parsed()) {
    forkd::v1::CreateTemplateRequest req;
    req.set_template_id(t_id);
    if (t_linux) {
      req.mutable_linux()->set_extra_cmdline(extra_cmdline);
    } else {
      req.mutable_probe()->set_agent_mode(agent_mode);
    }
    req.set_memory_mib(t_mem);
    req.set_force(t_force);
    for (const auto& cmd : t_init) {
      auto* ic = req.add_init_commands();
      std::stringstream ss(cmd);
      std::string w;
      while (ss >> w) ic->add_argv(w);
    }
    auto reader = stub->CreateTemplate(&ctx, req);
    forkd::v1::TemplateProgress p;
    static const char* const kStage[] = {"?", "boot", "agent-ready", "init", "snapshot", "done"};
    while (reader->Read(&p)) {
      if (g.json) {
        std::printf("%s\n", Json(p).c_str());
      } else {
        std::printf("[%8.1f ms] %-12s %s\n", Ms(p.elapsed_us()),
                    kStage[std::min<int>(p.stage(), 5)], p.message().c_str());
      }
      std::fflush(stdout);
    }
    grpc::Status s = reader->Finish();
    if (!s.ok()) Fail(s);
    return 0;
  }
  if (t_ls->parsed()) {
    forkd::v1::ListTemplatesResponse resp;
    grpc::Status s = stub->ListTemplates(&ctx, {}, &resp);
    if (!s.ok()) Fail(s);
    if (g.json) {
      std::printf("%s\n", Json(resp).c_str());
      return 0;
    }
    static const char* const kState[] = {"?", "building", "ready", "failed"};
    std::printf("%-20s %-9s %-6s %6s %5s %7s\n", "TEMPLATE", "STATE", "GUEST", "MiB", "LIVE",
                "STANDBY");
    for (const auto& t : resp.templates()) {
      std::printf("%-20s %-9s %-6s %6u %5u %7u\n", t.template_id().c_str(),
                  kState[std::min<int>(t.state(), 3)], t.guest().c_str(), t.memory_mib(),
                  t.live_forks(), t.standby());
    }
    return 0;
  }
  if (t_rm->parsed()) {
    forkd::v1::DeleteTemplateRequest req;
    req.set_template_id(t_id);
    req.set_force(t_force);
    forkd::v1::DeleteTemplateResponse resp;
    grpc::Status s = stub->DeleteTemplate(&ctx, req, &resp);
    if (!s.ok()) Fail(s);
    if (g.json) std::printf("%s\n", Json(resp).c_str());
    return 0;
  }
  if (fork->parsed()) {
    forkd::v1::ForkRequest req;
    req.set_template_id(f_tmpl);
    req.set_cold(f_cold);
    forkd::v1::SandboxSpec spec;
    spec.set_netns_path(f_netns);
    spec.set_cgroup_path(f_cgroup);
    for (const auto& a : f_allow) *spec.mutable_egress()->add_allow() = ParseAllow(a);
    for (const auto& d : f_dns) spec.mutable_egress()->add_allow_dns(d);
    {
      auto ports = forkd::forkctl::ParseDnsPorts(f_dns_ports);
      if (!ports.ok()) Usage(std::string(ports.status().message()));
      for (uint32_t p : *ports) spec.mutable_egress()->add_dns_ports(p);
    }
    for (const auto& e : f_env) *spec.add_env() = ParseEnv(e, false);
    for (const auto& e : f_secret) *spec.add_env() = ParseEnv(e, true);
    if (!f_ids.empty()) {
      for (const auto& id : f_ids) {
        auto* s = req.add_sandboxes();
        *s = spec;
        s->set_sandbox_id(id);
      }
    } else {
      req.set_count(f_count);
      *req.mutable_spec() = spec;
    }
    forkd::v1::ForkResponse resp;
    grpc::Status s = stub->Fork(&ctx, req, &resp);
    if (!s.ok()) Fail(s);
    if (g.json) {
      std::printf("%s\n", Json(resp).c_str());
      return 0;
    }
    PrintSandboxes(resp.sandboxes(), f_timings);
    std::printf("%d sandbox(es) in %.2f ms\n", resp.sandboxes_size(), Ms(resp.wall_us()));
    return 0;
  }
  if (exec->parsed()) {
    forkd::v1::ExecRequest req;
    req.set_sandbox_id(e_id);
    for (const auto& a : e_cmd) req.add_argv(a);
    for (const auto& e : e_env) *req.add_env() = ParseEnv(e, false);
    auto reader = stub->ExecStream(&ctx, req);
    forkd::v1::ExecChunk c;
    int code = 0;
    while (reader->Read(&c)) {
      if (g.json) {
        std::printf("%s\n", Json(c).c_str());
      } else if (c.has_stdout()) {
        std::fwrite(c.stdout().data(), 1, c.stdout().size(), stdout);
      } else if (c.has_stderr()) {
        std::fwrite(c.stderr().data(), 1, c.stderr().size(), stderr);
      }
      if (c.has_exit()) code = c.exit().exit_code();
    }
    grpc::Status s = reader->Finish();
    if (!s.ok()) Fail(s);
    std::fflush(stdout);
    return code;
  }
  if (ls->parsed()) {
    forkd::v1::ListSandboxesRequest req;
    req.set_template_id(ls_tmpl);
    forkd::v1::ListSandboxesResponse resp;
    grpc::Status s = stub->ListSandboxes(&ctx, req, &resp);
    if (!s.ok()) Fail(s);
    if (g.json) {
      std::printf("%s\n", Json(resp).c_str());
      return 0;
    }
    PrintSandboxes(resp.sandboxes(), false);
    return 0;
  }
  if (get->parsed()) {
    forkd::v1::GetSandboxRequest req;
    req.set_sandbox_id(get_id);
    forkd::v1::Sandbox resp;
    grpc::Status s = stub->GetSandbox(&ctx, req, &resp);
    if (!s.ok()) Fail(s);
    std::printf("%s\n", Json(resp).c_str());
    return 0;
  }
  if (rm->parsed()) {
    if (rm_all) {
      forkd::v1::ListSandboxesResponse resp;
      grpc::ClientContext lctx;
      grpc::Status s = stub->ListSandboxes(&lctx, {}, &resp);
      if (!s.ok()) Fail(s);
      for (const auto& sb : resp.sandboxes()) rm_ids.push_back(sb.sandbox_id());
    }
    if (rm_ids.empty() && !rm_all) Usage("rm needs sandbox ids or --all");
    for (const auto& id : rm_ids) {
      grpc::ClientContext c;
      forkd::v1::TerminateRequest req;
      req.set_sandbox_id(id);
      forkd::v1::TerminateResponse resp;
      grpc::Status s = stub->Terminate(&c, req, &resp);
      if (!s.ok()) Fail(s);
      if (!g.json) std::printf("terminated %s\n", id.c_str());
    }
    return 0;
  }
  if (cap->parsed()) {
    forkd::v1::Capacity c;
    grpc::Status s = stub->GetCapacity(&ctx, {}, &c);
    if (!s.ok()) Fail(s);
    if (g.json) {
      std::printf("%s\n", Json(c).c_str());
      return 0;
    }
    std::printf("slots            %u live / %u max (%u free)\n", c.live_sandboxes(),
                c.max_sandboxes(), c.free_slots());
    std::printf("sandbox memory   %.1f MiB PSS (CoW-shared pages counted once), %.1f MiB RSS\n",
                static_cast<double>(c.sandboxes_pss_bytes()) / (1 << 20),
                static_cast<double>(c.sandboxes_rss_bytes()) / (1 << 20));
    std::printf("host memory      %.0f MiB available of %.0f MiB (reserve %.0f MiB)\n",
                static_cast<double>(c.memory_available_bytes()) / (1 << 20),
                static_cast<double>(c.memory_total_bytes()) / (1 << 20),
                static_cast<double>(c.memory_reserve_bytes()) / (1 << 20));
    std::printf("kernel sha256    %s\n",
                c.kernel_sha256().empty() ? "(no --kernel)" : c.kernel_sha256().c_str());
    std::printf("pvm host         %s\n", c.pvm_host() ? "yes (Linux templates refused)" : "no");
    for (const auto& p : c.standby()) {
      std::printf("standby pool     %s: %u/%u\n", p.template_id().c_str(), p.ready(), p.target());
    }
    return 0;
  }
  if (watch->parsed()) {
    forkd::v1::WatchEventsRequest req;
    req.set_sandbox_id(w_id);
    auto reader = stub->WatchEvents(&ctx, req);
    forkd::v1::Event e;
    static const char* const kKind[] = {
        "?",          "ready",   "reaped",         "exited",
        "terminated", "adopted", "template-ready", "template-deleted"};
    while (reader->Read(&e)) {
      if (g.json) {
        std::printf("%s\n", Json(e).c_str());
      } else {
        std::printf("%lld %-16s %-24s %-16s %s\n", static_cast<long long>(e.unix_ms()),
                    kKind[std::min<int>(e.kind(), 7)], e.sandbox_id().c_str(),
                    e.template_id().c_str(), e.cause().c_str());
      }
      std::fflush(stdout);
    }
    grpc::Status s = reader->Finish();
    if (!s.ok()) Fail(s);
    return 0;
  }
  return 0;
}

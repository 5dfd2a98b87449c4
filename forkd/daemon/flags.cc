#include "forkd/daemon/flags.h"

#include <arpa/inet.h>

#include <filesystem>

#include "CLI/CLI.hpp"

namespace forkd::daemon {
namespace {

#ifndef FORKD_DEFAULT_VMM
#define FORKD_DEFAULT_VMM "/usr/lib/forkd/forkd-vmm"
#endif
#ifndef FORKD_DEFAULT_PROBE_GUEST
#define FORKD_DEFAULT_PROBE_GUEST "/usr/lib/forkd/probe_guest"
#endif

bool IsLoopback(const std::string& host) {
  if (host == "localhost") return true;
  in_addr a4{};
  if (::inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6{};
  if (::inet_pton(AF_INET6, host.c_str(), &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
  return false;
}

absl::StatusOr<Listen> ParseListen(const std::string& text) {
  Listen l;
  if (text.rfind("unix:", 0) == 0) {
    l.kind = Listen::Kind::kUnix;
    l.path = text.substr(5);
    if (l.path.empty() || l.path[0] != '/') {
      return absl::InvalidArgumentError("--listen " + text + ": unix socket path must be absolute");
    }
    return l;
  }
  if (text.rfind("tcp:", 0) == 0) {
    l.kind = Listen::Kind::kTcp;
    std::string rest = text.substr(4);
    const size_t colon = rest.rfind(':');
    if (colon == std::string::npos || colon == 0) {
      return absl::InvalidArgumentError("--listen " + text + ": expected tcp:HOST:PORT");
    }
    l.host = rest.substr(0, colon);
    if (l.host.size() > 2 && l.host.front() == '[' && l.host.back() == ']') {
      l.host = l.host.substr(1, l.host.size() - 2);
    }
    const std::string port = rest.substr(colon + 1);
    if (port.empty() || port.size() > 5 ||
        port.find_first_not_of("0123456789") != std::string::npos || std::stoul(port) > 65535) {
      return absl::InvalidArgumentError("--listen " + text + ": port must be 0..65535");
    }
    l.port = static_cast<uint16_t>(std::stoul(port));
    l.loopback = IsLoopback(l.host);
    return l;
  }
  return absl::InvalidArgumentError("--listen " + text + ": expected unix:PATH or tcp:HOST:PORT");
}

}  // namespace

absl::StatusOr<uint64_t> ParseSize(const std::string& text) {
  if (text.empty()) return absl::InvalidArgumentError("empty size");
  size_t pos = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(text, &pos);
  } catch (...) {
    return absl::InvalidArgumentError("size '" + text + "' is not a number");
  }
  const std::string unit = text.substr(pos);
  uint64_t mul = 1;
  if (unit == "K" || unit == "KiB")
    mul = 1ull << 10;
  else if (unit == "M" || unit == "MiB")
    mul = 1ull << 20;
  else if (unit == "G" || unit == "GiB")
    mul = 1ull << 30;
  else if (!unit.empty())
    return absl::InvalidArgumentError("size '" + text + "': unit must be K, M or G");
  return static_cast<uint64_t>(v) * mul;
}

absl::StatusOr<Flags> ParseFlags(int argc, const char* const* argv, bool env_faults) {
  Flags f;
  f.vmm = FORKD_DEFAULT_VMM;
  f.probe_guest = FORKD_DEFAULT_PROBE_GUEST;
  std::vector<std::string> listen;
  std::string memory_reserve, fault, dns_upstream, uid_range = "100000-165535",
                                                   vmm_memory_overhead = "64M";
  bool no_jail = false, no_vmm_cgroup = false;
  CLI::App app{"forkd: the node daemon that forks microVM sandboxes from warm templates"};
  app.option_defaults()->always_capture_default();
  app.add_option("--kernel", f.kernel, "Linux kernel (bzImage/ELF) for Linux templates");
  app.add_option("--initrd", f.initrd, "initramfs with the forkd agent as /init");
  app.add_option("--kernel-sha256", f.kernel_sha256, "required SHA-256 of --kernel");
  app.add_option("--initrd-sha256", f.initrd_sha256, "required SHA-256 of --initrd");
  app.add_flag("--insecure-skip-guest-verify", f.insecure_skip_guest_verify,
               "start without checking the kernel/initrd digests (development only)");
  app.add_option("--data-dir", f.data_dir, "templates, sandboxes, journal");
  app.add_option("--listen", listen,
                 "unix:PATH and/or tcp:HOST:PORT (repeatable; default unix:/run/forkd/forkd.sock)");
  app.add_option("--socket-group", f.socket_group, "group owning the unix socket (mode 0660)");
  app.add_option("--tls-cert", f.tls_cert, "server certificate (PEM) for tcp listeners");
  app.add_option("--tls-key", f.tls_key, "server key (PEM)");
  app.add_option("--tls-ca", f.tls_ca, "CA (PEM) that client certificates must chain to");
  app.add_option("--tls-allowed-san", f.tls_allowed_san,
                 "client certificate SAN allowed to call (repeatable)");
  app.add_flag("--allow-insecure-tcp", f.allow_insecure_tcp,
               "plaintext tcp listener; refused unless its host is loopback");
  app.add_option("--max-sandboxes", f.max_sandboxes, "sandboxes this node runs at most")
      ->check(CLI::Range(1, 100000));
  app.add_option("--memory-reserve", memory_reserve,
                 "refuse forks while MemAvailable is below this (e.g. 512M, 2G)");
  app.add_option("--standby", f.standby, "restored forks kept ready per template")
      ->check(CLI::Range(0, 1000));
  app.add_option("--log-format", f.log_format, "json or text")
      ->check(CLI::IsMember({"json", "text"}));
  app.add_option("--metrics-listen", f.metrics_listen, "HOST:PORT for Prometheus metrics");
  app.add_option("--dns-upstream", dns_upstream,
                 "IP:PORT ([IPv6]:PORT) of the recursive resolver the sandboxes' DNS proxies "
                 "forward allowlisted names to, reached from each sandbox's network namespace; "
                 "without it a Fork naming DNS names is refused");
  app.add_option("--vmm", f.vmm, "forkd-vmm binary");
  app.add_option("--vmm-keeper", f.vmm_keeper,
                 "forkd-vmm-keeper binary, every forkd-vmm's parent (default: forkd-vmm-keeper "
                 "in --vmm's directory)");
  app.add_option("--probe-guest", f.probe_guest, "the in-tree probe guest image");
  app.add_option("--gate-deadline-ms", f.gate_deadline_ms, "reseed gate deadline")
      ->check(CLI::Range(10, 600000));
  app.add_option("--vmm-uid-range", uid_range,
                 "FIRST-LAST: each forkd-vmm runs jailed as its own uid/gid from this range");
  app.add_flag("--vmm-uid-shared", f.jail.shared,
               "every forkd-vmm runs as the range's first uid/gid (one uid for all VMs)");
  app.add_flag("--no-jail", no_jail,
               "DEBUGGING ONLY: run every forkd-vmm unjailed, as root, with forkd's view of "
               "the host (guest code then has root's privileges on any VMM escape)");
  app.add_option("--vmm-cgroup-parent", f.cgroup.parent,
                 "cgroup v2 directory under which forkd makes each VM's cgroup (default: "
                 "<cgroup2 mount>/forkd.slice, created when missing)");
  app.add_flag("--no-vmm-cgroup", no_vmm_cgroup,
               "don't make a cgroup per VM (VMMs stay in forkd's cgroup, or join a Fork's "
               "cgroup_path as is)");
  app.add_flag("--allow-missing-cgroup-controllers", f.cgroup.allow_missing_controllers,
               "run VMs without the memory/pids/cpu limits the host's cgroup2 cannot give "
               "(logged at start); without it such a host refuses to start");
  app.add_option("--vmm-memory-overhead", vmm_memory_overhead,
                 "memory.max of a VM's cgroup is its guest RAM plus this");
  app.add_option("--vmm-pids-max", f.cgroup.pids_max, "pids.max of a VM's cgroup")
      ->check(CLI::Range(16, 100000));
  app.add_option("--vmm-cpu-weight", f.cgroup.cpu_weight, "cpu.weight of a VM's cgroup")
      ->check(CLI::Range(1, 10000));
  app.add_option("--max-fork-running", f.max_fork_running,
                 "children one ForkRunning call may ask for")
      ->check(CLI::Range(1, 1000));
  app.add_option("--test-fault-point", fault,
                 "TESTS ONLY (needs FORKD_ENABLE_TEST_FAULTS=1): SIGKILL forkd at this point of "
                 "Fork: " +
                     std::string(pipeline::kFaultPointNames));
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    return absl::CancelledError(app.help());
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  if (listen.empty()) listen.push_back("unix:/run/forkd/forkd.sock");
  if (f.vmm_keeper.empty()) {
    f.vmm_keeper = (std::filesystem::path(f.vmm).parent_path() / "forkd-vmm-keeper").string();
  }
  {
    auto range = sandbox::ParseUidRange(uid_range);
    if (!range.ok()) {
      return absl::InvalidArgumentError("--vmm-uid-range: " +
                                        std::string(range.status().message()));
    }
    f.jail.uid_first = range->uid_first;
    f.jail.uid_count = range->uid_count;
    f.jail.enabled = !no_jail;
    f.cgroup.enabled = !no_vmm_cgroup;
    auto overhead = ParseSize(vmm_memory_overhead);
    if (!overhead.ok()) {
      return absl::InvalidArgumentError("--vmm-memory-overhead: " +
                                        std::string(overhead.status().message()));
    }
    f.cgroup.memory_overhead_bytes = *overhead;
  }
  for (const auto& l : listen) {
    auto p = ParseListen(l);
    if (!p.ok()) return p.status();
    f.listen.push_back(*p);
  }
  if (!memory_reserve.empty()) {
    auto r = ParseSize(memory_reserve);
    if (!r.ok())
      return absl::InvalidArgumentError("--memory-reserve: " + std::string(r.status().message()));
    f.memory_reserve_bytes = *r;
  }
  if (!dns_upstream.empty()) {
    auto u = pipeline::ParseDnsUpstream(dns_upstream);
    if (!u.ok())
      return absl::InvalidArgumentError("--dns-upstream " + std::string(u.status().message()));
    f.dns_upstream = *u;
  }
  // Guest pin.
  if (!f.kernel.empty() && f.kernel_sha256.empty() && !f.insecure_skip_guest_verify) {
    return absl::InvalidArgumentError(
        "--kernel needs --kernel-sha256 (or --insecure-skip-guest-verify)");
  }
  if (!f.initrd.empty() && f.initrd_sha256.empty() && !f.insecure_skip_guest_verify) {
    return absl::InvalidArgumentError(
        "--initrd needs --initrd-sha256 (or --insecure-skip-guest-verify)");
  }
  if (f.kernel.empty() && !f.kernel_sha256.empty()) {
    return absl::InvalidArgumentError("--kernel-sha256 without --kernel");
  }
  if (f.initrd.empty() && !f.initrd_sha256.empty()) {
    return absl::InvalidArgumentError("--initrd-sha256 without --initrd");
  }
  if (!f.initrd.empty() && f.kernel.empty())
    return absl::InvalidArgumentError("--initrd without --kernel");
  // TLS: all or none.
  const int tls_set = !f.tls_cert.empty() + !f.tls_key.empty() + !f.tls_ca.empty();
  if (tls_set != 0 && tls_set != 3) {
    return absl::InvalidArgumentError(
        "--tls-cert, --tls-key and --tls-ca go together (all or none); " + std::to_string(tls_set) +
        " of 3 given");
  }
  if (!f.tls() && !f.tls_allowed_san.empty()) {
    return absl::InvalidArgumentError("--tls-allowed-san without --tls-cert/--tls-key/--tls-ca");
  }
  if (f.tls() && f.tls_allowed_san.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs at least one --tls-allowed-san (an empty allow-list admits no client)");
  }
  for (const auto& l : f.listen) {
    if (l.kind != Listen::Kind::kTcp) continue;
    if (f.tls()) continue;
    if (!f.allow_insecure_tcp) {
      return absl::InvalidArgumentError("--listen tcp:" + l.host + ":" + std::to_string(l.port) +
                                        " needs mutual TLS (--tls-cert/--tls-key/--tls-ca)");
    }
    if (!l.loopback) {
      return absl::InvalidArgumentError(
          "--allow-insecure-tcp is refused for the non-loopback host " + l.host);
    }
  }
  if (!fault.empty()) {
    if (!env_faults) {
      return absl::InvalidArgumentError(
          "--test-fault-point is for tests only and needs FORKD_ENABLE_TEST_FAULTS=1 in the "
          "environment");
    }
    auto p = pipeline::ParseFaultPoint(fault);
    if (!p.ok()) return p.status();
    f.fault = *p;
  }
  if (f.data_dir.empty() || f.data_dir[0] != '/') {
    return absl::InvalidArgumentError("--data-dir must be an absolute path");
  }
  return f;
}

}  // namespace forkd::daemon

// forkd's command line (forkd --help lists every flag) and its validation:
// a configuration that would be unsafe or ambiguous refuses to start, with a
// message naming the flag.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "forkd/pipeline/fault_point.h"
#include "forkd/pipeline/sandbox_dns.h"
#include "forkd/sandbox/cgroup.h"
#include "forkd/sandbox/jail_args.h"

namespace forkd::daemon {

struct Listen {
  enum class Kind { kUnix, kTcp } kind = Kind::kUnix;
  std::string path;  // unix
  std::string host;  // tcp
  uint16_t port = 0;
  bool loopback = false;
};

struct Flags {
  std::string kernel, initrd, kernel_sha256, initrd_sha256;
  bool insecure_skip_guest_verify = false;
  std::string data_dir = "/var/lib/forkd";
  std::vector<Listen> listen;
  std::string socket_group;  // empty: forkd's own group
  std::string tls_cert, tls_key, tls_ca;
  std::vector<std::string> tls_allowed_san;
  bool allow_insecure_tcp = false;
  uint32_t max_sandboxes = 64;
  uint64_t memory_reserve_bytes = 0;
  uint32_t standby = 0;
  std::string log_format = "text";
  std::string metrics_listen;
  std::string vmm, probe_guest;
  // forkd-vmm-keeper, every VMM's parent (forkd/sandbox/keeper); empty on
  // the command line: next to --vmm.
  std::string vmm_keeper;
  uint32_t gate_deadline_ms = 2000;
  // --dns-upstream HOST:PORT: where the sandboxes' DNS proxies forward.
  std::optional<pipeline::DnsUpstream> dns_upstream;
  pipeline::FaultPoint fault = pipeline::FaultPoint::kNone;
  // Every forkd-vmm's jail and cgroup (README "Jail and cgroups").
  sandbox::JailPolicy jail;
  sandbox::CgroupPolicy cgroup;
  uint32_t max_fork_running = 16;

  bool tls() const { return !tls_cert.empty(); }
};

// CANCELLED with the help text as message for --help; INVALID_ARGUMENT
// naming the flag for anything refused. `env_faults` is whether
// FORKD_ENABLE_TEST_FAULTS=1 is set (tests pass it explicitly).
absl::StatusOr<Flags> ParseFlags(int argc, const char* const* argv, bool env_faults);

// "512M", "2G", "1048576" -> bytes.
absl::StatusOr<uint64_t> ParseSize(const std::string& text);

}  // namespace forkd::daemon

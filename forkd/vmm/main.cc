// forkd-vmm: one microVM per process (docs/architecture.md). Boots a kernel
// or restores a snapshot, then reports on a control fd with a line protocol:
//
//   VMM -> supervisor:  READY                  the vCPUs are running
//                       OK | ERR <why>         answer to a command
//                       EXIT <status>          the VM ended: reset, shutdown: ...,
//                                              stopped, error: ... (then the process exits)
//   supervisor -> VMM:  PAUSE | RESUME | STOP | SNAPSHOT <dir>
//
// EOF on the control fd stops the VM: a VMM never outlives its supervisor.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <latch>
#include <vector>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"
#include "forkd/vmm/builder.h"
#include "forkd/vmm/devices/rate_limiter.h"
#include "forkd/vmm/devices/virtio/net.h"
#include "forkd/vmm/jail/jail.h"
#include "forkd/vmm/jail/tap_attach.h"
#include "forkd/vmm/persist.h"
#include "forkd/vmm/seccomp/allow_list.h"
#include "forkd/vmm/seccomp/thread_filters.h"
#ifdef FORKD_VMM_TEST_HOOK
#include "forkd/vmm/seccomp/test_hook.h"
#endif
#include "kernel-stage/digest.h"
#include "kernel-stage/guest_pin.h"
#include "kernel-stage/pinned_file.h"

namespace forkd::vmm {
namespace {

constexpr char kUsage[] =
    "usage: forkd-vmm --kernel PATH --kernel-sha256 HEX [--initrd PATH --initrd-sha256 HEX]\n"
    "                 [--agent-protocol N] [--cmdline STR] [--mem-mib N] [--vcpus N]\n"
    "                 [--virtio-rng] [--vsock-cid N --vsock-uds PATH] [--serial-out FD|PATH] "
    "[--serial-in FD|PATH] [--control-fd "
    "FD]\n"
    "                 [--net-tap NAME [--net-netns PATH] [--net-mac MAC]]\n"
    "       forkd-vmm --kernel PATH [--initrd PATH] --insecure-skip-guest-verify ...\n"
    "       forkd-vmm --restore DIR [--expect-kernel-sha256 HEX --expect-initrd-sha256 HEX\n"
    "                 [--expect-agent-protocol N]] [--standby] [--serial-out FD|PATH] [--serial-in "
    "FD|PATH]\n"
    "                 [--control-fd FD] [--vsock-uds PATH] [--net-tap NAME [--net-netns PATH]\n"
    "                 [--net-mac MAC]]\n"
    "       rate limits (boot and restore): [--rng-rate R[:B]] [--rng-ops R[:B]]\n"
    "                 [--net-rx-rate R[:B]] [--net-rx-ops R[:B]] [--net-tx-rate R[:B]]\n"
    "                 [--net-tx-ops R[:B]] [--vsock-rate R[:B]] [--vsock-ops R[:B]]\n"
    "\n"
    "Runs one KVM microVM. Boots a bzImage/ELF kernel through the 64-bit Linux boot\n"
    "protocol, or restores a snapshot directory (copy-on-write: the snapshot is never\n"
    "modified). Guest serial output goes to --serial-out (default: stdout).\n"
    "The guest pin (docs/guest-pin.md): --kernel-sha256 (and --initrd-sha256 with\n"
    "--initrd) are mandatory; the bytes read are hashed and must match before anything\n"
    "is loaded, and the digests, with --agent-protocol (default: this tree's agent\n"
    "protocol), are stamped into every snapshot. --insecure-skip-guest-verify boots\n"
    "without them (a warning; snapshots are stamped unpinned). On --restore,\n"
    "--expect-kernel-sha256/--expect-initrd-sha256 (without an initramfs: the SHA-256\n"
    "of empty input) and --expect-agent-protocol refuse a snapshot stamped otherwise\n"
    "or unpinned.\n"
    "--standby restores everything, answers STANDBY, and starts the vCPUs on GO (a\n"
    "pre-provisioned fork; the guest clock is advanced at GO). Needs --control-fd.\n"
    "--virtio-rng adds a virtio-mmio entropy device (declared on the command line;\n"
    "a restore recreates the devices its snapshot has). --vsock-cid/--vsock-uds add\n"
    "virtio-vsock: host processes connect to PATH and write 'CONNECT <port>\\n'; a\n"
    "guest connection to host port P connects to PATH_P; a restore of a snapshot\n"
    "with vsock needs --vsock-uds (its own path).\n"
    "--no-acpi boots without ACPI tables (MADT, DSDT with the virtio devices, VM\n"
    "generation ID); devices are still declared on the command line.\n"
    "--no-ioeventfd makes every virtqueue notify an MMIO exit handled on the vCPU\n"
    "thread (default: KVM_IOEVENTFD and a notifier thread; for comparisons).\n"
    "--net-tap adds virtio-net on an existing tap NAME (attached, never created)\n"
    "inside the network namespace at --net-netns (default: this process's); --net-mac\n"
    "aa:bb:cc:dd:ee:ff sets the guest MAC (default random). A restore of a snapshot\n"
    "with virtio-net needs its own --net-tap; --net-mac there replaces the snapshot's MAC.\n"
    "Rate limits (token buckets): --X-rate BYTES_PER_S[:BURST_BYTES] and --X-ops\n"
    "OPS_PER_S[:BURST_OPS] for X = rng (requests), net-rx / net-tx (frames) and vsock\n"
    "(packets, both directions together); the burst defaults to one second's worth.\n"
    "Over the limit a request waits in the guest's queue (a frame in the tap). The\n"
    "limits are saved in a snapshot; a restore keeps them unless given again.\n"
    "Control protocol on --control-fd (default: READY/EXIT lines on stderr, no commands):\n"
    "  out: STANDBY | READY | OK | ERR <why> | EXIT <reset|shutdown: ...|stopped|error: ...>\n"
    "  in:  GO | PAUSE | RESUME | STOP | SNAPSHOT <dir>   (EOF stops the VM)\n"
    "Exit code: 0 stopped or reset, 3 guest shutdown/triple fault, 1 VM error, 2 usage,\n"
    "4 guest pin refused (digest mismatch at boot; other or unpinned snapshot on restore).\n"
    "\n"
    "Isolation (on by default; docs/threat-model.md):\n"
    "  --jail-root DIR --jail-uid N --jail-gid N  run jailed: own mount namespace with a\n"
    "      tmpfs root in DIR (an empty per-VM directory) holding only the snapshot\n"
    "      (or kernel/initrd) read-only, the vsock socket's directory, --jail-rw\n"
    "      directories and /dev/kvm (/dev/net/tun with --net-tap); uid/gid N, no\n"
    "      capabilities, no new privileges, other fds closed, empty environment,\n"
    "      rlimits, killed when the parent dies. Needs root.\n"
    "  --jail-rw DIR (repeatable)  a read-write directory inside the jail (SNAPSHOT targets)\n"
    "  --cgroup PATH       join this cgroup v2 directory (made and limited by the caller)\n"
    "  --keep-fd N (repeatable)    an inherited fd to keep besides the ones named above\n"
    "  --jail-nofile N --jail-nproc N --jail-fsize-mib N   rlimits (defaults 4096, 64, 4096)\n"
    "  --no-jail           DEBUGGING ONLY: run guest code with this process's privileges\n"
    "  --no-seccomp        DEBUGGING ONLY: no per-thread seccomp filters\n"
    "  --print-seccomp     print the per-thread allow-lists (docs/vmm-seccomp.md) and exit\n";

constexpr char kInsecureWarning[] =
    "forkd-vmm: WARNING: --insecure-skip-guest-verify: the guest kernel and initramfs are NOT "
    "verified; snapshots of this VM are stamped unpinned and a pinned restore refuses them\n";

struct Options {
  std::string kernel, initrd, cmdline = "console=ttyS0 reboot=k panic=-1", restore;
  uint64_t mem_mib = 256;
  int vcpus = 1;
  std::string serial_out = "1", serial_in, control_fd;
  bool standby = false;
  bool virtio_rng = false;
  bool ioeventfd = true;
  bool acpi = true;
  uint64_t vsock_cid = 0;
  std::string vsock_uds;
  std::string net_tap, net_netns, net_mac;
  bool jail = true, seccomp = true, print_seccomp = false;
  std::string jail_root, cgroup;
  std::optional<uint32_t> jail_uid, jail_gid;
  std::vector<std::string> jail_rw;
  std::vector<int> keep_fds;
  jail::Rlimits rlimits;
  std::string test_forbidden;     // forkd-vmm-test-hook only
  bool new_vm_generation = true;  // forkd-vmm-test-hook's --test-same-vm-generation clears it
  RateLimits limits;
  // The guest pin (docs/guest-pin.md).
  std::optional<kernel_stage::Sha256Digest> kernel_sha256, initrd_sha256;
  bool insecure_skip_guest_verify = false;
  uint32_t agent_protocol = agent::kProtocolVersion;
  std::optional<kernel_stage::Sha256Digest> expect_kernel_sha256, expect_initrd_sha256;
  std::optional<uint32_t> expect_agent_protocol;
};

// --rng-rate, --net-tx-ops, ...: the limit a flag sets, or null.
RateLimit* LimitFlag(Options& o, std::string_view flag) {
  struct Entry {
    std::string_view prefix;
    std::optional<RateLimiterConfig> RateLimits::*device;
  };
  static constexpr Entry kDevices[] = {{"--rng-", &RateLimits::rng},
                                       {"--net-rx-", &RateLimits::net_rx},
                                       {"--net-tx-", &RateLimits::net_tx},
                                       {"--vsock-", &RateLimits::vsock}};
  for (const Entry& e : kDevices) {
    if (flag.rfind(e.prefix, 0) != 0) continue;
    const std::string_view what = flag.substr(e.prefix.size());
    if (what != "rate" && what != "ops") return nullptr;
    std::optional<RateLimiterConfig>& c = o.limits.*e.device;
    if (!c) c.emplace();
    return what == "rate" ? &c->bytes : &c->ops;
  }
  return nullptr;
}

std::optional<uint64_t> ParseUint(std::string_view s) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

absl::StatusOr<Options> ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--help" || a == "-h") return absl::CancelledError("help");
    if (a == "--standby") {
      o.standby = true;
      continue;
    }
    if (a == "--virtio-rng") {
      o.virtio_rng = true;
      continue;
    }
    if (a == "--no-ioeventfd") {
      o.ioeventfd = false;
      continue;
    }
    if (a == "--no-jail") {
      o.jail = false;
      continue;
    }
    if (a == "--no-seccomp") {
      o.seccomp = false;
      continue;
    }
    if (a == "--print-seccomp") {
      o.print_seccomp = true;
      continue;
    }
    if (a == "--no-acpi") {
      o.acpi = false;
      continue;
    }
#ifdef FORKD_VMM_TEST_HOOK
    // A restore that keeps the snapshot's VM generation ID and raises no
    // notify: the "VMGenID off" fork of tests/svm/linux_vmgenid_test.cc.
    if (a == "--test-same-vm-generation") {
      o.new_vm_generation = false;
      continue;
    }
#endif
    if (a == "--insecure-skip-guest-verify") {
      o.insecure_skip_guest_verify = true;
      continue;
    }
    auto value = [&]() -> absl::StatusOr<std::string> {
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(argv[i], " needs a value"));
      return std::string(argv[++i]);
    };
    absl::StatusOr<std::string> v;
    if (RateLimit* limit = LimitFlag(o, a)) {
      v = value();
      if (!v.ok()) return v.status();
      auto parsed = ParseRateLimit(*v);
      if (!parsed.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(std::string(a), ": ", parsed.status().message()));
      }
      *limit = *parsed;
      continue;
    }
    if (a == "--kernel" || a == "--initrd" || a == "--cmdline" || a == "--restore" ||
        a == "--mem-mib" || a == "--vcpus" || a == "--serial-out" || a == "--serial-in" ||
        a == "--control-fd" || a == "--vsock-cid" || a == "--vsock-uds" || a == "--net-tap" ||
        a == "--net-netns" || a == "--net-mac" || a == "--jail-root" || a == "--jail-uid" ||
        a == "--jail-gid" || a == "--jail-rw" || a == "--cgroup" || a == "--keep-fd" ||
        a == "--jail-nofile" || a == "--jail-nproc" || a == "--jail-fsize-mib" ||
        a == "--kernel-sha256" || a == "--initrd-sha256" || a == "--agent-protocol" ||
        a == "--expect-kernel-sha256" || a == "--expect-initrd-sha256" ||
        a == "--expect-agent-protocol"
#ifdef FORKD_VMM_TEST_HOOK
        || a == "--test-forbidden-syscall"
#endif
    ) {
      v = value();
      if (!v.ok()) return v.status();
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown argument '", std::string(a), "'"));
    }
    if (a == "--kernel") o.kernel = *v;
    if (a == "--initrd") o.initrd = *v;
    if (a == "--cmdline") o.cmdline = *v;
    if (a == "--restore") o.restore = *v;
    if (a == "--serial-out") o.serial_out = *v;
    if (a == "--serial-in") o.serial_in = *v;
    if (a == "--control-fd") o.control_fd = *v;
    if (a == "--vsock-uds") o.vsock_uds = *v;
    if (a == "--net-tap") o.net_tap = *v;
    if (a == "--net-netns") o.net_netns = *v;
    if (a == "--jail-root") o.jail_root = *v;
    if (a == "--jail-rw") o.jail_rw.push_back(*v);
    if (a == "--cgroup") o.cgroup = *v;
    if (a == "--test-forbidden-syscall") o.test_forbidden = *v;
    if (a == "--jail-uid" || a == "--jail-gid" || a == "--keep-fd" || a == "--jail-nofile" ||
        a == "--jail-nproc" || a == "--jail-fsize-mib") {
      auto n = ParseUint(*v);
      if (!n || *n == 0 || *n > 0x7fffffffULL) {
        return absl::InvalidArgumentError(absl::StrCat(argv[i - 1], " must be 1..2147483647"));
      }
      if (a == "--jail-uid") o.jail_uid = static_cast<uint32_t>(*n);
      if (a == "--jail-gid") o.jail_gid = static_cast<uint32_t>(*n);
      if (a == "--keep-fd") o.keep_fds.push_back(static_cast<int>(*n));
      if (a == "--jail-nofile") o.rlimits.nofile = *n;
      if (a == "--jail-nproc") o.rlimits.nproc = *n;
      if (a == "--jail-fsize-mib") o.rlimits.fsize = *n << 20;
    }
    if (a == "--net-mac") {
      auto mac = virtio::ParseMacAddress(*v);
      if (!mac.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("--net-mac: ", mac.status().message()));
      }
      o.net_mac = *v;
    }
    if (a == "--kernel-sha256" || a == "--initrd-sha256" || a == "--expect-kernel-sha256" ||
        a == "--expect-initrd-sha256") {
      auto d = kernel_stage::ParseSha256Hex(*v);
      if (!d.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(std::string(a), ": ", std::string(d.status().message())));
      }
      if (a == "--kernel-sha256") o.kernel_sha256 = *d;
      if (a == "--initrd-sha256") o.initrd_sha256 = *d;
      if (a == "--expect-kernel-sha256") o.expect_kernel_sha256 = *d;
      if (a == "--expect-initrd-sha256") o.expect_initrd_sha256 = *d;
    }
    if (a == "--agent-protocol" || a == "--expect-agent-protocol") {
      auto n = ParseUint(*v);
      if (!n || *n > 0xffffffffULL) {
        return absl::InvalidArgumentError(absl::StrCat(std::string(a), " must be 0..4294967295"));
      }
      if (a == "--agent-protocol") o.agent_protocol = static_cast<uint32_t>(*n);
      if (a == "--expect-agent-protocol") o.expect_agent_protocol = static_cast<uint32_t>(*n);
    }
    if (a == "--vsock-cid") {
      auto n = ParseUint(*v);
      if (!n || *n < 3 || *n > 0xffffffffULL) {
        return absl::InvalidArgumentError("--vsock-cid must be 3..4294967295");
      }
      o.vsock_cid = *n;
    }
    if (a == "--mem-mib") {
      auto n = ParseUint(*v);
      if (!n || *n < 2 || *n > 3072) {
        return absl::InvalidArgumentError("--mem-mib must be a number in 2..3072");
      }
      o.mem_mib = *n;
    }
    if (a == "--vcpus") {
      auto n = ParseUint(*v);
      if (!n || *n < 1 || *n > 4) return absl::InvalidArgumentError("--vcpus must be 1..4");
      o.vcpus = static_cast<int>(*n);
    }
  }
  if (!o.restore.empty() && o.vsock_cid != 0) {
    return absl::InvalidArgumentError("--vsock-cid comes from the snapshot on --restore");
  }
  if (o.restore.empty() && (o.vsock_cid != 0) != !o.vsock_uds.empty()) {
    return absl::InvalidArgumentError("--vsock-cid and --vsock-uds go together");
  }
  if (o.net_tap.empty() && (!o.net_netns.empty() || !o.net_mac.empty())) {
    return absl::InvalidArgumentError("--net-netns and --net-mac need --net-tap");
  }
  if (o.restore.empty() && ((o.limits.rng && !o.virtio_rng) || (o.limits.vsock && !o.vsock_cid) ||
                            ((o.limits.net_rx || o.limits.net_tx) && o.net_tap.empty()))) {
    return absl::InvalidArgumentError("a rate limit for a device the VM does not have");
  }
  if (o.print_seccomp) return o;
  const bool jail_flags =
      !o.jail_root.empty() || o.jail_uid || o.jail_gid || !o.cgroup.empty() || !o.jail_rw.empty();
  if (!o.jail && jail_flags) {
    return absl::InvalidArgumentError("--no-jail and --jail-*/--cgroup contradict each other");
  }
  if (o.jail && (o.jail_root.empty() || !o.jail_uid || !o.jail_gid)) {
    return absl::InvalidArgumentError(
        "forkd-vmm runs guest code jailed: give --jail-root, --jail-uid and --jail-gid "
        "(or --no-jail, for debugging only)");
  }
#ifdef FORKD_VMM_TEST_HOOK
  if (!o.test_forbidden.empty() && !seccomp::ParseThreadKind(o.test_forbidden)) {
    return absl::InvalidArgumentError("--test-forbidden-syscall: vcpu, device or control");
  }
#endif
  if (o.kernel.empty() == o.restore.empty()) {
    return absl::InvalidArgumentError("give exactly one of --kernel or --restore");
  }
  if (o.standby && (o.restore.empty() || o.control_fd.empty())) {
    return absl::InvalidArgumentError("--standby needs --restore and --control-fd");
  }
  if (!o.restore.empty() && !o.initrd.empty()) {
    return absl::InvalidArgumentError("--initrd makes no sense with --restore");
  }
  // The guest pin: mandatory on boot unless explicitly waived; expectations only on restore.
  if (!o.restore.empty()) {
    if (o.kernel_sha256 || o.initrd_sha256 || o.insecure_skip_guest_verify) {
      return absl::InvalidArgumentError(
          "--kernel-sha256/--initrd-sha256/--insecure-skip-guest-verify are for a boot; a "
          "restore checks the snapshot's stamp with --expect-kernel-sha256/--expect-initrd-sha256");
    }
    if (o.expect_kernel_sha256.has_value() != o.expect_initrd_sha256.has_value()) {
      return absl::InvalidArgumentError(
          "--expect-kernel-sha256 and --expect-initrd-sha256 go together (an absent initramfs "
          "is the SHA-256 of empty input)");
    }
    if (o.expect_agent_protocol && !o.expect_kernel_sha256) {
      return absl::InvalidArgumentError("--expect-agent-protocol needs --expect-kernel-sha256");
    }
  } else {
    if (o.expect_kernel_sha256 || o.expect_initrd_sha256 || o.expect_agent_protocol) {
      return absl::InvalidArgumentError("--expect-* flags are for --restore");
    }
    if (o.insecure_skip_guest_verify && (o.kernel_sha256 || o.initrd_sha256)) {
      return absl::InvalidArgumentError(
          "--insecure-skip-guest-verify contradicts --kernel-sha256/--initrd-sha256");
    }
    if (!o.insecure_skip_guest_verify) {
      if (!o.kernel_sha256) {
        return absl::InvalidArgumentError(
            "--kernel-sha256 is required (the guest pin; --insecure-skip-guest-verify waives it)");
      }
      if (!o.initrd.empty() && !o.initrd_sha256) {
        return absl::InvalidArgumentError(
            "--initrd-sha256 is required with --initrd (the guest pin; "
            "--insecure-skip-guest-verify waives it)");
      }
      if (o.initrd.empty() && o.initrd_sha256) {
        return absl::InvalidArgumentError("--initrd-sha256 without --initrd");
      }
    }
  }
  return o;
}

// "3" -> borrowed fd 3; anything else is a path we open and own.
absl::StatusOr<int> OpenFdArg(const std::string& arg, bool for_write, UniqueFd* owned) {
  if (auto n = ParseUint(arg)) {
    if (::fcntl(static_cast<int>(*n), F_GETFD) < 0) return ErrnoStatus(errno, "fd " + arg);
    return static_cast<int>(*n);
  }
  int flags = for_write ? (O_WRONLY | O_CREAT | O_APPEND) : O_RDONLY;
  *owned = UniqueFd(::open(arg.c_str(), flags | O_CLOEXEC, 0600));
  if (!*owned) return ErrnoStatus(errno, "open " + arg);
  return owned->get();
}

class Control {
 public:
  explicit Control(int fd) : fd_(fd) {}
  void Send(const std::string& line) {
    std::lock_guard lock(mu_);
    std::string l = line + "\n";
    size_t done = 0;
    while (done < l.size()) {
      ssize_t n = ::write(fd_, l.data() + done, l.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // supervisor gone: the EOF path stops the VM
      done += static_cast<size_t>(n);
    }
  }
  // Next line, or nullopt at EOF/error.
  std::optional<std::string> ReadLine() {
    while (true) {
      size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      char tmp[512];
      ssize_t n = ::read(fd_, tmp, sizeof tmp);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return std::nullopt;
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }

 private:
  int fd_;
  std::mutex mu_;
  std::string buf_;
};

void ServeCommands(Control& control, Machine& machine) {
  while (auto line = control.ReadLine()) {
    if (*line == "PAUSE") {
      machine.Pause();
      control.Send("OK");
    } else if (*line == "RESUME") {
      machine.Resume();
      control.Send("OK");
    } else if (*line == "STOP") {
      break;
    } else if (line->rfind("SNAPSHOT ", 0) == 0) {
      const bool was_paused = machine.paused();
      machine.Pause();
      if (machine.guest_pin().unpinned) (void)std::fputs(kInsecureWarning, stderr);
      absl::Status st = SaveSnapshot(machine, line->substr(9));
      if (!was_paused) machine.Resume();
      control.Send(st.ok() ? std::string("OK") : "ERR " + std::string(st.message()));
    } else {
      control.Send("ERR unknown command: " + *line);
    }
    if (machine.exit()) return;
  }
  machine.Stop();
}

// The exit code when the VM could not be built or restored.
int StartFailureCode(const absl::Status& st) {
  constexpr int kGuestPinRefused = 4;
  return kernel_stage::IsPinMismatch(st) ? kGuestPinRefused : 1;
}

int ExitCode(const VmExit& e) {
  switch (e.kind) {
    case ExitKind::kStopped:
    case ExitKind::kReset:
      return 0;
    case ExitKind::kShutdown:
      return 3;
    default:
      return 1;
  }
}

// Loud, on stderr, before anything else: a debugging flag must never go
// unnoticed in a log.
void WarnDebugFlags(const Options& o) {
  if (!o.jail) {
    (void)std::fprintf(stderr,
                       "forkd-vmm: WARNING: --no-jail: guest code runs with this process's "
                       "privileges (uid %u, its capabilities, the whole file system); for "
                       "debugging only\n",
                       ::geteuid());
  }
  if (!o.seccomp) {
    (void)std::fprintf(stderr,
                       "forkd-vmm: WARNING: --no-seccomp: no system call filter on any "
                       "thread; for debugging only\n");
  }
}

absl::StatusOr<std::string> Absolute(const std::string& path) {
  std::error_code ec;
  auto p = std::filesystem::canonical(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": ", ec.message()));
  return p.string();
}

// The jail's contents from the command line. Paths become canonical so the
// same string works outside (the bind source) and inside (the VMM's use).
absl::StatusOr<jail::JailConfig> MakeJailConfig(Options& o, pid_t parent) {
  jail::JailConfig c;
  FORKD_ASSIGN_OR_RETURN(c.root, Absolute(o.jail_root));
  c.uid = *o.jail_uid;
  c.gid = *o.jail_gid;
  for (std::string* p : {&o.restore, &o.kernel, &o.initrd}) {
    if (p->empty()) continue;
    FORKD_ASSIGN_OR_RETURN(*p, Absolute(*p));
    c.read_only.push_back(*p);
  }
  if (!o.vsock_uds.empty()) {
    std::filesystem::path uds(o.vsock_uds);
    FORKD_ASSIGN_OR_RETURN(std::string dir,
                           Absolute(uds.has_parent_path() ? uds.parent_path().string() : "."));
    o.vsock_uds = (std::filesystem::path(dir) / uds.filename()).string();
    c.read_write.push_back(dir);
  }
  for (const std::string& d : o.jail_rw) {
    FORKD_ASSIGN_OR_RETURN(std::string abs, Absolute(d));
    c.read_write.push_back(abs);
  }
  c.devices.push_back("/dev/kvm");
  if (!o.net_tap.empty()) c.devices.push_back("/dev/net/tun");
  c.cgroup = o.cgroup;
  c.keep_fds = o.keep_fds;
  c.limits = o.rlimits;
  c.expected_parent = parent;
  return c;
}

int Main(int argc, char** argv) {
  const pid_t parent = ::getppid();
  auto opts = ParseArgs(argc, argv);
  if (!opts.ok()) {
    if (absl::IsCancelled(opts.status())) {
      (void)std::fputs(kUsage, stdout);
      return 0;
    }
    (void)std::fprintf(stderr, "forkd-vmm: %s\n\n%s", std::string(opts.status().message()).c_str(),
                       kUsage);
    return 2;
  }
  if (opts->print_seccomp) {
    (void)std::fputs(seccomp::RenderMarkdown().c_str(), stdout);
    return 0;
  }
  WarnDebugFlags(*opts);
  if (opts->jail && ::geteuid() != 0) {
    (void)std::fprintf(stderr,
                       "forkd-vmm: the jail needs root (mount namespace, pivot_root, uid "
                       "change); run as root, or pass --no-jail for debugging\n");
    return 2;
  }
#ifdef FORKD_VMM_TEST_HOOK
  if (!opts->test_forbidden.empty()) {
    seccomp::SetForbiddenAttempt(*seccomp::ParseThreadKind(opts->test_forbidden));
  }
#endif
  UniqueFd serial_out_owned, serial_in_owned;
  auto serial_out = OpenFdArg(opts->serial_out, true, &serial_out_owned);
  absl::StatusOr<int> serial_in = -1;
  if (!opts->serial_in.empty()) serial_in = OpenFdArg(opts->serial_in, false, &serial_in_owned);
  std::optional<int> control_fd;
  if (!opts->control_fd.empty()) {
    auto n = ParseUint(opts->control_fd);
    if (!n || ::fcntl(static_cast<int>(*n), F_GETFD) < 0) {
      (void)std::fprintf(stderr, "forkd-vmm: --control-fd %s is not an open fd\n",
                         opts->control_fd.c_str());
      return 2;
    }
    control_fd = static_cast<int>(*n);
  }
  if (!serial_out.ok() || !serial_in.ok()) {
    (void)std::fprintf(
        stderr, "forkd-vmm: %s\n",
        (!serial_out.ok() ? serial_out.status() : serial_in.status()).ToString().c_str());
    return 2;
  }
  Control control(control_fd.value_or(STDERR_FILENO));
  if (opts->insecure_skip_guest_verify) (void)std::fputs(kInsecureWarning, stderr);

  // SIGTERM/SIGINT stop the VM cleanly; blocked here so only sigwait sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  (void)signal(SIGPIPE, SIG_IGN);

  // Compiled while single-threaded and before any guest input exists; every
  // thread installs its own from here on (seccomp/thread_filters.h).
  if (opts->seccomp) {
    if (absl::Status st = seccomp::ArmThreadFilters(); !st.ok()) {
      control.Send("EXIT error: " + st.ToString());
      return 1;
    }
  }
  // /dev/kvm and the tap are opened before the jail: the tap inside the
  // fork's namespace (which the jail cannot reach), as the jail's uid.
  auto kvm = Kvm::Open();
  if (!kvm.ok()) {
    control.Send("EXIT error: " + kvm.status().ToString());
    return 1;
  }
  std::optional<NetConfig> net;
  if (!opts->net_tap.empty()) {
    net = NetConfig{opts->net_tap, opts->net_netns, std::nullopt};
    if (!opts->net_mac.empty()) net->mac = *virtio::ParseMacAddress(opts->net_mac);  // checked
  }
  if (opts->jail) {
    auto config = MakeJailConfig(*opts, parent);
    absl::Status st = config.status();
    if (st.ok() && net) {
      auto tap = jail::AttachTapAs(net->tap_name, net->netns_path, config->uid, config->gid);
      st = tap.status();
      if (tap.ok()) {
        net->attached_tap = std::make_shared<UniqueFd>(*std::move(tap));
        config->keep_fds.push_back(net->attached_tap->get());
      }
    }
    if (st.ok()) {
      config->keep_fds.push_back(kvm->fd());
      config->keep_fds.push_back(*serial_out);
      if (*serial_in >= 0) config->keep_fds.push_back(*serial_in);
      if (control_fd) config->keep_fds.push_back(*control_fd);
      st = jail::EnterJail(*config);
    }
    if (!st.ok()) {
      control.Send("EXIT error: " + st.ToString());
      return 1;
    }
  }
  auto shared_kvm = std::make_shared<const Kvm>(*std::move(kvm));
  SerialConfig serial{*serial_out, *serial_in};
  absl::StatusOr<std::unique_ptr<Machine>> machine;
  if (!opts->restore.empty()) {
    std::optional<kernel_stage::GuestPin> expect_pin;
    if (opts->expect_kernel_sha256) {
      expect_pin = kernel_stage::GuestPin{
          .kernel_sha256 = *opts->expect_kernel_sha256,
          .initrd_sha256 = *opts->expect_initrd_sha256,  // checked: they go together
          .agent_protocol = opts->expect_agent_protocol.value_or(agent::kProtocolVersion)};
    }
    machine = RestoreSnapshot(shared_kvm, opts->restore, serial, nullptr,
                              {.vsock_uds_path = opts->vsock_uds,
                               .ioeventfd = opts->ioeventfd,
                               .net = net,
                               .limits = opts->limits,
                               .expect_pin = expect_pin,
                               .new_vm_generation = opts->new_vm_generation});
  } else {
    BootConfig cfg;
    cfg.kernel_path = opts->kernel;
    cfg.initrd_path = opts->initrd;
    cfg.cmdline = opts->cmdline;
    cfg.mem_size = opts->mem_mib << 20;
    cfg.vcpus = opts->vcpus;
    cfg.serial = serial;
    cfg.virtio.rng = opts->virtio_rng;
    cfg.virtio.vsock_cid = opts->vsock_cid;
    cfg.virtio.vsock_uds_path = opts->vsock_uds;
    cfg.virtio.ioeventfd = opts->ioeventfd;
    cfg.virtio.net = net;
    cfg.virtio.limits = opts->limits;
    cfg.acpi = opts->acpi;
    cfg.expect_kernel_sha256 = opts->kernel_sha256;
    // Pinned without an initramfs: the stamp is the SHA-256 of empty input, and so is the check.
    cfg.expect_initrd_sha256 = opts->initrd.empty() && opts->kernel_sha256
                                   ? kernel_stage::EmptySha256()
                                   : opts->initrd_sha256;
    cfg.agent_protocol = opts->agent_protocol;
    machine = BuildForBoot(shared_kvm, cfg);
  }
  absl::Status st = machine.status();
  if (st.ok() && opts->standby) {
    control.Send("STANDBY");
    auto go = control.ReadLine();
    if (!go || *go != "GO") {
      control.Send("EXIT stopped: no GO");
      return 0;
    }
  }
  // With filters, the vCPUs start parked (Firecracker's order): every
  // thread installs its own filter, then this one, and only then does the
  // guest run its first instruction.
  const bool sealing = seccomp::ThreadFiltersArmed();
  if (st.ok()) st = (*machine)->Start(/*vcpus_parked=*/sealing);
  if (!st.ok()) {
    control.Send("EXIT error: " + st.ToString(absl::StatusToStringMode::kWithNoExtraData));
    return StartFailureCode(st);
  }
  Machine& m = **machine;

  // The control threads exist before the main thread seals itself, so no
  // thread is ever created under the control filter; they wait until then.
  std::latch sealed(1);
  std::thread signals([&] {
    seccomp::EnterThread(seccomp::ThreadKind::kControl);
    sealed.wait();
    int sig = 0;
    if (sigwait(&stop_signals, &sig) == 0) m.Stop();
  });
  std::thread commands;
  if (control_fd) {
    commands = std::thread([&] {
      seccomp::EnterThread(seccomp::ThreadKind::kControl);
      sealed.wait();
      ServeCommands(control, m);
    });
  }
  if (absl::Status seal = seccomp::EnterThreadOrError(seccomp::ThreadKind::kControl); !seal.ok()) {
    control.Send("EXIT error: " + seal.ToString());
    (void)std::fflush(nullptr);
    _exit(1);  // the vCPUs never ran; the waiting threads go with the process
  }
  if (sealing) m.Resume();
  control.Send("READY");
  sealed.count_down();

  std::optional<VmExit> e;
  while (!(e = m.WaitForExit(std::chrono::hours(24)))) {
  }
  VmExit final_exit = m.Stop();
  control.Send("EXIT " + final_exit.ToString());
  // Release the helper threads: the signal waiter with a SIGTERM (its Stop()
  // is a no-op now), the command reader by exiting the process (it may sit
  // in read()).
  // The waiter blocks SIGTERM and takes it with sigwait(), so this wakes it;
  // it does not terminate anything.
  // NOLINTNEXTLINE(bugprone-bad-signal-to-kill-thread)
  (void)pthread_kill(signals.native_handle(), SIGTERM);
  signals.join();
  if (commands.joinable()) commands.detach();
  // _exit skips the Machine's destructor, which would unlink the vsock
  // socket path; a stale path would make the next bind() fail.
  if (!opts->vsock_uds.empty()) ::unlink(opts->vsock_uds.c_str());
  (void)std::fflush(nullptr);
  _exit(ExitCode(final_exit));
}

}  // namespace
}  // namespace forkd::vmm

int main(int argc, char** argv) { return forkd::vmm::Main(argc, argv); }

// A stand-in for forkd-vmm, for the daemon's tests on hosts without /dev/kvm
// (the development machines expose no KVM device at all). It is a test
// double of the per-VM process only: forkd, the journal, namespaces, taps,
// nftables chains, the reseed gate and the agent protocol are all real.
//
// It speaks forkd-vmm's interface: the same flags, the control protocol
// (STANDBY/GO, READY, SNAPSHOT <dir> -> OK, STOP -> EXIT), the vsock
// multiplexer ("CONNECT <port>\n" -> "OK <n>\n") on --vsock-uds, and it
// holds a queue of its tap (--net-tap in --net-netns), as a VM does. Behind
// the multiplexer it runs the real guest agent's request handler
// (agent/server.h) on the host, so Exec really runs commands (as the
// test's user) and NotifyForked really credits entropy (RNDADDENTROPY).
// `probe.agent=refuse` in --cmdline is remembered in the "snapshot" and
// makes every restore refuse to reseed, as the probe guest's agent does.
//
// The guest pin is forkd-vmm's (docs/guest-pin.md), through the same
// libraries: a boot hashes --kernel/--initrd and refuses a digest other than
// --kernel-sha256/--initrd-sha256 (exit 4) unless
// --insecure-skip-guest-verify; SNAPSHOT writes a real snapshot
// (forkd/snapshot, a minimal machine state) stamped with what was "loaded";
// --restore opens it as forkd-vmm does and refuses a stamp other than
// --expect-* with kernel_stage::CheckPin (exit 4).
//
// The jail flags (--jail-uid/--jail-gid/--jail-root/--jail-rw) are honoured
// where forkd is concerned, without a mount namespace: the tap is attached
// by a thread that has given up root for the jail's uid/gid (so the kernel
// refuses a tap that uid does not own), PR_SET_PDEATHSIG(SIGKILL) is armed
// (refused when the parent is already gone; the parent is the VMM's keeper,
// forkd/sandbox/keeper, as for the real one), and the vsock socket and
// SNAPSHOT files are created with the jail's fsuid/fsgid through the
// directories opened beforehand (so a directory that uid cannot write
// fails as it would in the jail). The agent behind the multiplexer keeps
// root (RNDADDENTROPY needs it); that is the real agent's place, in the guest.
#include <fcntl.h>
#include <grp.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <signal.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/framing.h"
#include "agent/netconfig.h"
#include "agent/protocol.h"
#include "agent/server.h"
#include "forkd/snapshot/snapshot_dir.h"
#include "forkd/snapshot/test_states.h"
#include "kernel-stage/digest.h"
#include "kernel-stage/guest_pin.h"
#include "kernel-stage/pinned_file.h"

namespace {

namespace fs = std::filesystem;

std::map<std::string, std::string> g_opt;
bool g_standby = false;
int g_control = -1;
std::string g_mode = "honest";

void Send(const std::string& line) {
  const std::string l = line + "\n";
  (void)!::write(g_control, l.data(), l.size());
}

std::string ReadLine(int fd) {
  std::string line;
  char c;
  while (::read(fd, &c, 1) == 1) {
    if (c == '\n') return line;
    line.push_back(c);
  }
  return line.empty() ? "\x04" : line;  // EOF marker
}

[[noreturn]] void Die(const std::string& why, int code = 1) {
  if (g_control >= 0) Send("EXIT error: " + why);
  std::fprintf(stderr, "standin-vmm: %s\n", why.c_str());
  _exit(code);
}

// forkd-vmm's exit code for a guest pin refusal.
constexpr int kGuestPinRefused = 4;
bool g_insecure = false;
forkd::kernel_stage::GuestPin g_pin;  // what this "VM" loaded (or was restored from)

[[noreturn]] void DieOn(const absl::Status& s) {
  Die(std::string(s.message()), forkd::kernel_stage::IsPinMismatch(s) ? kGuestPinRefused : 1);
}

forkd::kernel_stage::Sha256Digest DigestFlag(const std::string& flag) {
  auto d = forkd::kernel_stage::ParseSha256Hex(g_opt[flag]);
  if (!d.ok()) Die(flag + ": " + std::string(d.status().message()));
  return *d;
}

// A boot: hash what would be loaded and hold it to the given digests.
void PinBoot() {
  namespace ks = forkd::kernel_stage;
  g_pin.agent_protocol = g_opt.count("--agent-protocol")
                             ? static_cast<uint32_t>(std::stoul(g_opt["--agent-protocol"]))
                             : forkd::agent::kProtocolVersion;
  g_pin.unpinned = g_insecure;
  g_pin.initrd_sha256 = ks::EmptySha256();
  if (!g_insecure && !g_opt.count("--kernel-sha256")) {
    Die("--kernel-sha256 is required (or --insecure-skip-guest-verify)");
  }
  for (const char* what : {"kernel", "initrd"}) {
    const std::string path = g_opt["--" + std::string(what)];
    if (path.empty()) continue;
    auto got = ks::HashFile(path);
    if (!got.ok()) DieOn(got.status());
    const std::string flag = "--" + std::string(what) + "-sha256";
    if (!g_insecure && g_opt.count(flag)) {
      const ks::Sha256Digest want = DigestFlag(flag);
      if (want != *got) DieOn(ks::DigestMismatch(std::string(what) + " " + path, want, *got));
    }
    (std::string(what) == "kernel" ? g_pin.kernel_sha256 : g_pin.initrd_sha256) = *got;
  }
}

// A restore: open the snapshot as forkd-vmm does and check its stamp.
void PinRestore(const fs::path& dir) {
  namespace snap = forkd::snapshot;
  auto opened = snap::OpenSnapshot(dir, snap::VerifyMode::kStateOnly, snap::HostCpuIdentity());
  if (!opened.ok()) DieOn(opened.status());
  const snap::SnapshotHeader& h = opened->state.header;
  g_pin = {.kernel_sha256 = h.kernel_sha256,
           .initrd_sha256 = h.initrd_sha256,
           .agent_protocol = h.guest_protocol_version,
           .unpinned = h.unpinned};
  if (!g_opt.count("--expect-kernel-sha256")) return;
  forkd::kernel_stage::GuestPin want{
      .kernel_sha256 = DigestFlag("--expect-kernel-sha256"),
      .initrd_sha256 = DigestFlag("--expect-initrd-sha256"),
      .agent_protocol = g_opt.count("--expect-agent-protocol")
                            ? static_cast<uint32_t>(std::stoul(g_opt["--expect-agent-protocol"]))
                            : forkd::agent::kProtocolVersion};
  if (absl::Status s = forkd::kernel_stage::CheckPin(want, g_pin); !s.ok()) DieOn(s);
}

// SNAPSHOT: a real snapshot of a minimal machine, stamped with g_pin.
absl::Status WriteSnapshot(const fs::path& dir) {
  namespace snap = forkd::snapshot;
  snap::SnapshotState s = snap::testing::MinimalState();
  s.header.cpu = snap::HostCpuIdentity();
  s.header.kernel_sha256 = g_pin.kernel_sha256;
  s.header.initrd_sha256 = g_pin.initrd_sha256;
  s.header.guest_protocol_version = g_pin.agent_protocol;
  s.header.unpinned = g_pin.unpinned;
  std::error_code ec;
  fs::resize_file(snap::MemoryPath(dir), s.header.memory[0].size, ec);
  if (ec) {
    std::ofstream(snap::MemoryPath(dir)).close();
    fs::resize_file(snap::MemoryPath(dir), s.header.memory[0].size, ec);
  }
  if (ec) return absl::InternalError("memory file: " + ec.message());
  return snap::SaveSnapshot(dir, s);
}

// The stand-in has no guest NIC: it takes the network identity forkd sends
// with NotifyForked (and the gate's network check) as a guest agent would,
// and keeps it, so a fork through the stand-in is admitted like a VM's.
class StandinNet : public forkd::agent::NetConfigurator {
 public:
  absl::Status Apply(const forkd::agent::NetworkConfig& config) override {
    last_ = config;
    return absl::OkStatus();
  }

 private:
  forkd::agent::NetworkConfig last_;
};

void ServeAgent(int fd, forkd::agent::AgentServer* server) {
  using forkd::agent::DeadlineIn;
  while (true) {
    auto frame = forkd::agent::ReadFrame(fd, DeadlineIn(std::chrono::hours(1)),
                                         forkd::agent::kMaxFrameBytes);
    if (!frame.ok()) break;
    forkd::agent::v1::Request req;
    forkd::agent::v1::Response resp;
    if (!req.ParseFromString(*frame)) break;
    if (g_mode == "refuse" && req.has_notify_forked()) {
      resp.set_id(req.id());
      resp.mutable_notify_forked()->set_reseeded(false);
      resp.mutable_notify_forked()->set_error("standin agent: refusing to reseed");
      resp.mutable_notify_forked()->set_generation(req.notify_forked().generation());
    } else {
      resp = server->Handle(req);
    }
    if (!forkd::agent::WriteFrame(fd, resp.SerializeAsString(),
                                  DeadlineIn(std::chrono::seconds(10)),
                                  forkd::agent::kMaxFrameBytes)
             .ok()) {
      break;
    }
  }
  ::close(fd);
}

void Multiplexer(int listen_fd, forkd::agent::AgentServer* server) {
  while (true) {
    const int c = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR) continue;
      return;
    }
    std::thread([c, server] {
      const std::string hello = ReadLine(c);
      if (hello.rfind("CONNECT 1024", 0) != 0) {
        ::close(c);  // nothing listens on that port: the connection is reset
        return;
      }
      const std::string ok = "OK 1073741824\n";
      (void)!::write(c, ok.data(), ok.size());
      ServeAgent(c, server);
    }).detach();
  }
}

// TUNSETIFF as uid/gid on a thread of its own that gives up root first
// (raw syscalls: per thread, unlike the libc wrappers).
int AttachAs(int tap_fd, ifreq* ifr, uid_t uid, gid_t gid) {
  int result = -1, err = 0;
  std::thread([&] {
    if (::syscall(SYS_setgroups, 0, nullptr) != 0 || ::syscall(SYS_setresgid, gid, gid, gid) != 0 ||
        ::syscall(SYS_setresuid, uid, uid, uid) != 0) {
      err = errno;
      return;
    }
    result = ::ioctl(tap_fd, TUNSETIFF, ifr);
    err = errno;
  }).join();
  errno = err;
  return result;
}

// "/proc/self/fd/N/rest" for `path` under one of the directories opened
// before the fsuid change (so the jail's uid needs no access to their
// ancestors, as inside the jail); `path` itself otherwise.
std::map<std::string, int> g_dirs;
std::string ViaDir(const std::string& path) {
  for (const auto& [dir, fd] : g_dirs) {
    if (path.rfind(dir + "/", 0) == 0) {
      return "/proc/self/fd/" + std::to_string(fd) + path.substr(dir.size());
    }
  }
  return path;
}

}  // namespace

int main(int argc, char** argv) {
  const pid_t parent = ::getppid();
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (a == "--standby") {
      g_standby = true;
    } else if (a == "--insecure-skip-guest-verify") {
      g_insecure = true;
    } else if (a == "--virtio-rng" || a == "--no-ioeventfd" || a == "--no-jail" ||
               a == "--no-seccomp") {
    } else if (a.rfind("--", 0) == 0 && i + 1 < argc) {
      g_opt[a] = argv[++i];
    } else {
      std::fprintf(stderr, "standin-vmm: unexpected argument %s\n", a.c_str());
      return 2;
    }
  }
  g_control = g_opt.count("--control-fd") ? std::stoi(g_opt["--control-fd"]) : 2;
  if (g_opt.count("--jail-uid")) {
    // The jail closes every inherited fd but 0-2, the control fd and the
    // --keep-fd one (forkd/vmm/jail/jail_config.h keep_fds): so does the
    // stand-in, first, so a daemon that forgets to keep one fails here too.
    std::vector<unsigned> keep = {static_cast<unsigned>(g_control)};
    if (g_opt.count("--keep-fd"))
      keep.push_back(static_cast<unsigned>(std::stoi(g_opt["--keep-fd"])));
    std::sort(keep.begin(), keep.end());
    unsigned lo = 3;
    for (unsigned k : keep) {
      if (k > lo) (void)::syscall(SYS_close_range, lo, k - 1, 0);
      lo = std::max(lo, k + 1);
    }
    (void)::syscall(SYS_close_range, lo, ~0U, 0);
  }
  const bool restore = g_opt.count("--restore") != 0;
  if (restore) {
    const fs::path marker = fs::path(g_opt["--restore"]) / "standin-snapshot";
    std::ifstream in(marker);
    if (!in) Die("restore " + g_opt["--restore"] + ": not a snapshot");
    std::getline(in, g_mode);
    PinRestore(g_opt["--restore"]);
  } else if (g_opt["--cmdline"].find("probe.agent=refuse") != std::string::npos) {
    g_mode = "refuse";
  }
  if (!restore) PinBoot();
  const bool jailed = g_opt.count("--jail-uid") != 0;
  const uid_t jail_uid = jailed ? static_cast<uid_t>(std::stoul(g_opt["--jail-uid"])) : 0;
  const gid_t jail_gid =
      g_opt.count("--jail-gid") ? static_cast<gid_t>(std::stoul(g_opt["--jail-gid"])) : 0;
  if (jailed && (jail_uid == 0 || jail_gid == 0 || !g_opt.count("--jail-root"))) {
    Die("--jail-uid/--jail-gid/--jail-root: all three, not 0");
  }
  // The NIC: a queue of the tap, attached in its namespace.
  int tap_fd = -1;
  if (g_opt.count("--net-tap")) {
    if (g_opt.count("--net-netns")) {
      const int ns = ::open(g_opt["--net-netns"].c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) Die("join " + g_opt["--net-netns"]);
      ::close(ns);
    }
    tap_fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    ifreq ifr{};
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    std::strncpy(ifr.ifr_name, g_opt["--net-tap"].c_str(), IFNAMSIZ - 1);
    const int r = tap_fd < 0 ? -1
                  : jailed   ? AttachAs(tap_fd, &ifr, jail_uid, jail_gid)
                             : ::ioctl(tap_fd, TUNSETIFF, &ifr);
    if (r != 0) {
      Die("attach tap " + g_opt["--net-tap"] + ": " + std::strerror(errno));
    }
  }
  const std::string uds = g_opt["--vsock-uds"];
  if (jailed) {
    for (const std::string& d : {fs::path(uds).parent_path().string(),
                                 g_opt.count("--jail-rw") ? g_opt["--jail-rw"] : ""}) {
      if (d.empty()) continue;
      const int fd = ::open(d.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
      if (fd < 0) Die("open " + d + ": " + std::strerror(errno));
      g_dirs[d] = fd;
    }
    (void)::setfsgid(jail_gid);
    (void)::setfsuid(jail_uid);
    if (static_cast<uid_t>(::setfsuid(static_cast<uid_t>(-1))) != jail_uid) Die("setfsuid");
    // After the fsuid change, which clears it (as the jail arms it after its uid change).
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || ::getppid() != parent) {
      Die("PR_SET_PDEATHSIG: the parent is gone");
    }
  }
  forkd::agent::AgentOptions o;
  o.generation_file = ViaDir(uds) + ".generation";
  o.log = [](std::string_view) {};
  o.net = std::make_shared<StandinNet>();
  forkd::agent::AgentServer server(o);
  int lfd = -1;
  if (!uds.empty()) {
    lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string bind_path = ViaDir(uds);
    std::strncpy(addr.sun_path, bind_path.c_str(), sizeof addr.sun_path - 1);
    ::unlink(bind_path.c_str());
    if (::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(lfd, 64) != 0) {
      Die("vsock uds " + uds + ": " + std::strerror(errno));
    }
  }
  if (g_standby) {
    Send("STANDBY");
    if (ReadLine(g_control) != "GO") {
      Send("EXIT stopped: no GO");
      return 0;
    }
  }
  if (lfd >= 0) std::thread(Multiplexer, lfd, &server).detach();
  Send("READY");
  while (true) {
    const std::string cmd = ReadLine(g_control);
    if (cmd == "\x04" || cmd == "STOP") {
      Send("EXIT stopped: host request");
      if (!uds.empty()) ::unlink(ViaDir(uds).c_str());
      ::unlink(o.generation_file.c_str());
      _exit(0);
    }
    if (cmd.rfind("SNAPSHOT ", 0) == 0) {
      const fs::path dir = ViaDir(cmd.substr(9));
      std::error_code ec;
      fs::create_directory(dir, ec);
      std::ofstream out(dir / "standin-snapshot");
      out << g_mode << "\n";
      out.close();
      absl::Status st = ec     ? absl::InternalError(ec.message())
                        : !out ? absl::InternalError("cannot write " + cmd.substr(9))
                               : WriteSnapshot(dir);
      Send(st.ok() ? "OK" : "ERR " + std::string(st.message()));
    } else if (cmd == "PAUSE" || cmd == "RESUME") {
      Send("OK");
    } else {
      Send("ERR unknown command");
    }
  }
  (void)tap_fd;
}

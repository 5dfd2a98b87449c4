// forkd guest agent. As the guest's /init it mounts the early filesystems,
// brings up lo and serves the agent protocol on AF_VSOCK; for host testing it
// can serve a unix socket instead (--unix PATH).
#include <linux/vm_sockets.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "agent/init.h"
#include "agent/modules.h"
#include "agent/netconfig.h"
#include "agent/protocol.h"
#include "agent/server.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"

namespace forkd::agent {
namespace {

constexpr char kUsage[] =
    "usage: forkd-agent [--vsock-port N] [--unix PATH] [--random-device PATH]\n"
    "                   [--generation-file PATH] [--iface NAME] [--no-netconfig]\n";

struct Flags {
  uint32_t vsock_port = kDefaultVsockPort;
  std::string unix_path;  // non-empty: serve here instead of vsock
  std::string random_device = "/dev/random";
  std::string generation_file = "/run/forkd/generation";
  std::string iface = "eth0";
  bool netconfig = true;
};

void Fatal(std::string_view what) {
  (void)std::fprintf(stderr, "forkd-agent: %.*s\n", static_cast<int>(what.size()), what.data());
  std::exit(1);
}

// As PID 1 the kernel hands us every unrecognized cmdline word, so unknown
// arguments are then ignored with a warning instead of being fatal.
Flags ParseFlags(int argc, char** argv, bool lenient) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Fatal(absl::StrCat(std::string(arg), " needs a value\n", kUsage));
      return argv[++i];
    };
    if (arg == "--vsock-port") {
      const std::string v = value();
      char* end = nullptr;
      errno = 0;
      const unsigned long port = std::strtoul(v.c_str(), &end, 10);
      if (errno != 0 || end == v.c_str() || *end != '\0' || port == 0 || port > UINT32_MAX) {
        Fatal(absl::StrCat("bad --vsock-port '", v, "'"));
      }
      f.vsock_port = static_cast<uint32_t>(port);
    } else if (arg == "--unix") {
      f.unix_path = value();
    } else if (arg == "--random-device") {
      f.random_device = value();
    } else if (arg == "--generation-file") {
      f.generation_file = value();
    } else if (arg == "--iface") {
      f.iface = value();
    } else if (arg == "--no-netconfig") {
      f.netconfig = false;
    } else if (arg == "--help" || arg == "-h") {
      (void)std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (lenient) {
      (void)std::fprintf(stderr, "forkd-agent: ignoring argument '%s'\n", argv[i]);
    } else {
      Fatal(absl::StrCat("unknown argument '", std::string(arg), "'\n", kUsage));
    }
  }
  return f;
}

absl::StatusOr<UniqueFd> Listen(const Flags& f) {
  if (!f.unix_path.empty()) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (f.unix_path.size() >= sizeof(addr.sun_path)) {
      return absl::InvalidArgumentError(absl::StrCat("unix path too long: ", f.unix_path));
    }
    std::memcpy(addr.sun_path, f.unix_path.c_str(), f.unix_path.size() + 1);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return ErrnoStatus(errno, "socket AF_UNIX");
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      return ErrnoStatus(errno, absl::StrCat("bind ", f.unix_path));
    }
    if (::listen(fd.get(), 16) != 0) return ErrnoStatus(errno, "listen");
    return fd;
  }
  sockaddr_vm addr{};
  addr.svm_family = AF_VSOCK;
  addr.svm_port = f.vsock_port;
  addr.svm_cid = VMADDR_CID_ANY;
  UniqueFd fd(::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoStatus(errno, "socket AF_VSOCK (is CONFIG_VIRTIO_VSOCKETS=y?)");
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoStatus(errno, absl::StrCat("bind vsock port ", f.vsock_port));
  }
  if (::listen(fd.get(), 16) != 0) return ErrnoStatus(errno, "listen vsock");
  return fd;
}

int Serve(void* arg) {
  const Flags& f = *static_cast<const Flags*>(arg);
  // Writes to a command's stdin pipe must fail with EPIPE, not kill the agent.
  if (::signal(SIGPIPE, SIG_IGN) == SIG_ERR) Fatal("cannot ignore SIGPIPE");
  auto listener = Listen(f);
  if (!listener.ok()) Fatal(ToStd(listener.status().message()));

  AgentOptions options;
  options.random_device = f.random_device;
  options.generation_file = f.generation_file;
  if (f.netconfig) options.net = MakeRtnetlinkConfigurator(f.iface);
  AgentServer server(std::move(options));
  (void)std::fprintf(stderr, "forkd-agent: %s serving protocol %u on %s\n", kAgentVersion,
                     kProtocolVersion,
                     f.unix_path.empty() ? absl::StrCat("vsock port ", f.vsock_port).c_str()
                                         : f.unix_path.c_str());
  const auto s = server.Serve(listener->get());
  Fatal(absl::StrCat("server stopped: ", s.message()));
  return 1;
}

}  // namespace
}  // namespace forkd::agent

int main(int argc, char** argv) {
  using namespace forkd::agent;
  const bool is_init = ::getpid() == 1;
  static Flags flags = ParseFlags(argc, argv, /*lenient=*/is_init);
  if (!is_init) return Serve(&flags);

  for (const auto& err : MountEarlyFilesystems()) {
    (void)std::fprintf(stderr, "forkd-agent init: %s\n",
                       std::string(forkd::ToStd(err.message())).c_str());
  }
  // The kernel starts init with no PATH; Exec requests resolve argv[0] with it.
  if (::setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 0) != 0) {
    std::perror("forkd-agent init: setenv PATH");
  }
  // A stock kernel's device drivers (virtio_mmio, vsock, ...) come as modules in
  // the initramfs; they must be in before the server listens on vsock.
  int loaded = 0;
  for (const auto& err : LoadModules(kModuleListPath, FinitModuleLoader(), &loaded)) {
    (void)std::fprintf(stderr, "forkd-agent init: %s\n",
                       std::string(forkd::ToStd(err.message())).c_str());
  }
  if (loaded > 0) (void)std::fprintf(stderr, "forkd-agent init: loaded %d modules\n", loaded);
  if (auto s = SetLinkUp("lo"); !s.ok()) {
    (void)std::fprintf(stderr, "forkd-agent init: %s\n",
                       std::string(forkd::ToStd(s.message())).c_str());
  }
  RunAsInit(&Serve, &flags);
}

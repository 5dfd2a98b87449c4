#include "tests/svm/linux_guest.h"

#include <cstdlib>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent/protocol.h"
#include "agent/vsock_connect.h"
#include "common/errno_status.h"

namespace forkd::vmm::testing {

std::string LinuxInitrd() {
  if (const char* p = std::getenv("FORKD_LINUX_INITRD"); p != nullptr && *p != '\0') return p;
  return FORKD_AGENT_INITRAMFS_PATH;
}

std::string LinuxCmdline() {
  std::string cmdline = "console=ttyS0 reboot=k panic=-1 pci=off i8042.noaux quiet";
  if (const char* extra = std::getenv("FORKD_LINUX_CMDLINE_EXTRA"); extra != nullptr)
    cmdline += std::string(" ") + extra;
  return cmdline;
}

absl::StatusOr<std::unique_ptr<VmmProcess>> BootLinux(const std::string& uds,
                                                      const std::vector<std::string>& extra) {
  const char* kernel = std::getenv("FORKD_LINUX_KERNEL");
  if (kernel == nullptr) return absl::FailedPreconditionError("FORKD_LINUX_KERNEL is not set");
  return BootLinuxImage(kernel, LinuxInitrd(), uds, extra);
}

absl::StatusOr<std::unique_ptr<VmmProcess>> BootLinuxImage(const std::string& kernel,
                                                           const std::string& initrd,
                                                           const std::string& uds,
                                                           const std::vector<std::string>& extra) {
  std::vector<std::string> args = {
      "--kernel",  kernel, "--initrd",     initrd,        "--cmdline", LinuxCmdline(),
      "--mem-mib", "256",  "--virtio-rng", "--vsock-cid", "3",         "--vsock-uds",
      uds};
  args.insert(args.end(), extra.begin(), extra.end());
  FORKD_ASSIGN_OR_RETURN(auto vm, VmmProcess::Spawn(args));
  if (auto ready = vm->ReadLine(); ready != "READY") {
    return absl::InternalError(
        absl::StrCat("forkd-vmm said '", ready.value_or("<nothing>"), "', not READY"));
  }
  return vm;
}

absl::StatusOr<agent::AgentClient> ConnectAgent(const std::string& uds,
                                                std::chrono::seconds guard) {
  using namespace std::chrono_literals;
  const auto give_up = std::chrono::steady_clock::now() + guard;
  absl::Status last = absl::DeadlineExceededError("never tried");
  while (std::chrono::steady_clock::now() < give_up) {
    auto fd = agent::ConnectVsockMux(uds, agent::kDefaultVsockPort,
                                     agent::DeadlineIn(kLinuxCallDeadline));
    if (fd.ok()) {
      agent::AgentClient client(std::move(*fd));
      auto pong = client.Ping(agent::DeadlineIn(kLinuxCallDeadline));
      if (pong.ok()) return client;
      last = pong.status();
    } else {
      last = fd.status();
    }
    std::this_thread::sleep_for(50ms);
  }
  return absl::DeadlineExceededError(absl::StrCat("agent never answered Ping: ", last.ToString()));
}

absl::StatusOr<std::string> ReadGuestFile(agent::AgentClient& client, const std::string& path,
                                          uint64_t max_bytes) {
  agent::v1::ReadFileRequest req;
  req.set_path(path);
  req.set_max_bytes(max_bytes);
  FORKD_ASSIGN_OR_RETURN(auto resp, client.ReadFile(req, agent::DeadlineIn(kLinuxCallDeadline)));
  if (!resp.error().empty()) return absl::InternalError(absl::StrCat(path, ": ", resp.error()));
  return resp.data();
}

absl::StatusOr<std::string> ReadGuestRandom(agent::AgentClient& client, uint64_t n) {
  FORKD_ASSIGN_OR_RETURN(std::string bytes, ReadGuestFile(client, "/dev/urandom", n));
  if (bytes.size() != n) {
    return absl::InternalError(absl::StrCat("/dev/urandom: ", bytes.size(), " bytes"));
  }
  return bytes;
}

absl::StatusOr<int64_t> GuestUptimeMs(agent::AgentClient& client) {
  FORKD_ASSIGN_OR_RETURN(std::string text, ReadGuestFile(client, "/proc/uptime", 128));
  double s = 0;
  if (!absl::SimpleAtod(text.substr(0, text.find(' ')), &s)) {
    return absl::InternalError(absl::StrCat("/proc/uptime: '", text, "'"));
  }
  return static_cast<int64_t>(s * 1000);
}

absl::Status WaitForGuestUptime(agent::AgentClient& client, int64_t min_ms,
                                std::chrono::steady_clock::time_point give_up) {
  for (;;) {
    FORKD_ASSIGN_OR_RETURN(int64_t up, GuestUptimeMs(client));
    if (up >= min_ms) return absl::OkStatus();
    if (std::chrono::steady_clock::now() > give_up) {
      return absl::DeadlineExceededError(absl::StrCat(
          "guest uptime still ", up, " ms at the hang guard (waiting for ", min_ms, " ms)"));
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

absl::StatusOr<std::string> ExecInGuest(agent::AgentClient& client,
                                        const std::vector<std::string>& argv) {
  agent::v1::ExecRequest req;
  for (const auto& a : argv) req.add_argv(a);
  req.add_env("PATH=/usr/sbin:/usr/bin:/sbin:/bin");
  FORKD_ASSIGN_OR_RETURN(auto resp, client.Exec(req, agent::DeadlineIn(kLinuxCallDeadline)));
  if (!resp.error().empty()) return absl::InternalError(absl::StrCat(argv[0], ": ", resp.error()));
  if (!resp.has_exit_code() || resp.exit_code() != 0) {
    return absl::InternalError(absl::StrCat(argv[0], " failed: exit ", resp.exit_code(), " signal ",
                                            resp.signal(), " stderr ", resp.stderr()));
  }
  return resp.stdout();
}

}  // namespace forkd::vmm::testing

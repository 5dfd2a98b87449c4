#include "tests/vmm/probe_harness.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace forkd::vmm::testing {

OutputCollector::OutputCollector() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) std::abort();
  read_ = UniqueFd(fds[0]);
  write_ = UniqueFd(fds[1]);
  stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));
  thread_ = std::thread(&OutputCollector::Run, this);
}

OutputCollector::~OutputCollector() {
  uint64_t one = 1;
  (void)!::write(stop_.get(), &one, sizeof one);
  thread_.join();
}

void OutputCollector::Run() {
  char buf[4096];
  while (true) {
    pollfd fds[2] = {{stop_.get(), POLLIN, 0}, {read_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) continue;
    if (fds[1].revents & POLLIN) {
      ssize_t n = ::read(read_.get(), buf, sizeof buf);
      if (n > 0) {
        std::lock_guard lock(mu_);
        text_.append(buf, static_cast<size_t>(n));
        cv_.notify_all();
        continue;
      }
    }
    if (fds[0].revents) return;
  }
}

std::string OutputCollector::text() const {
  std::lock_guard lock(mu_);
  return text_;
}

std::optional<size_t> OutputCollector::WaitFor(const std::string& needle, size_t from,
                                               std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  std::optional<size_t> end;
  cv_.wait_for(lock, timeout, [&] {
    size_t at = text_.find(needle, from);
    if (at == std::string::npos) return false;
    size_t nl = text_.find('\n', at);
    if (nl == std::string::npos) return false;
    end = nl + 1;
    return true;
  });
  return end;
}

std::string OutputCollector::DrainedText() {
  static constexpr char kMarker[] = "\x01drained\x01";
  if (::write(write_.get(), kMarker, sizeof kMarker - 1) != sizeof kMarker - 1) std::abort();
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, kHangGuard, [&] { return text_.find(kMarker) != std::string::npos; });
  size_t at = text_.find(kMarker);
  if (at != std::string::npos) text_.erase(at, sizeof kMarker - 1);
  return text_;
}

std::vector<std::string> OutputCollector::Lines(const std::string& prefix) const {
  std::string t = text();
  std::vector<std::string> out;
  size_t pos = 0;
  while (true) {
    size_t nl = t.find('\n', pos);
    if (nl == std::string::npos) break;
    std::string line = t.substr(pos, nl - pos);
    if (line.rfind(prefix, 0) == 0) out.push_back(line);
    pos = nl + 1;
  }
  return out;
}

InputPipe InputPipe::Make() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) std::abort();
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

void InputPipe::Send(const std::string& s) const {
  if (::write(write.get(), s.data(), s.size()) != static_cast<ssize_t>(s.size())) std::abort();
}

std::shared_ptr<const Kvm> SharedKvm() {
  static std::shared_ptr<const Kvm> kvm = [] {
    auto k = Kvm::Open();
    if (!k.ok()) std::abort();
    return std::make_shared<const Kvm>(*std::move(k));
  }();
  return kvm;
}

absl::StatusOr<ProbeVm> BootProbe(const std::string& cmdline, uint64_t mem_size, int vcpus,
                                  VirtioConfig virtio) {
  ProbeVm vm;
  BootConfig cfg;
  cfg.kernel_path = ProbeGuestPath();
  cfg.cmdline = cmdline;
  cfg.mem_size = mem_size;
  cfg.vcpus = vcpus;
  cfg.virtio = virtio;
  cfg.serial = {vm.out->write_fd(), vm.in.read.get()};
  auto m = BuildForBoot(SharedKvm(), cfg);
  if (!m.ok()) return m.status();
  vm.machine = *std::move(m);
  absl::Status st = vm.machine->Start();
  if (!st.ok()) return st;
  return vm;
}

std::vector<uint64_t> Counts(const OutputCollector& out) {
  std::vector<uint64_t> counts;
  for (const auto& line : out.Lines("PROBE count ")) {
    counts.push_back(std::strtoull(line.c_str() + std::strlen("PROBE count "), nullptr, 10));
  }
  return counts;
}

}  // namespace forkd::vmm::testing

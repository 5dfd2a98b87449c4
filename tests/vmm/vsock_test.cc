// Tier 2: virtio-vsock end to end on real /dev/kvm with the probe guest's
// echo driver (probe/vsock.h, buf_alloc 64 KiB so credit runs out often):
// multi-megabyte echoes both ways for host- and guest-initiated connections
// (Firecracker's `<uds>_<port>` convention), a slow host reader that makes
// the device buffer and stall the guest, a guest connection nobody listens
// for (RST), half-closed connections (host side, and the guest's: the host
// reads EOF and still sends), a host CONNECT the guest never answers
// (the connect timeout), and a restored fork whose old
// connections are reset while new ones of both kinds work.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"
#include "forkd/vmm/persist.h"
#include "gtest/gtest.h"
#include "tests/support/requirements.h"
#include "tests/support/temp_dir.h"
#include "tests/vmm/probe_harness.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kKvm);

namespace forkd::vmm::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kGuestPort = 5000;
constexpr uint32_t kHostPort = 6000;
constexpr char kMarker[] = "PROBE-VSOCK-CONNECTED\n";
constexpr size_t kBig = 4 << 20;

class TempDir : public forkd::testing::TempDir {
 public:
  TempDir() : forkd::testing::TempDir("vmm_vsock_test") {}
};

std::string PseudoRandom(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

sockaddr_un Addr(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  return addr;
}

// One host-side stream socket; every blocking call bounded by the hang guard.
class Stream {
 public:
  explicit Stream(UniqueFd fd) : fd_(std::move(fd)) {
    timeval tv{static_cast<time_t>(kHangGuard.count()), 0};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  // Connects to the VM's socket and does the CONNECT handshake.
  static std::optional<Stream> ToGuest(const std::string& uds, uint32_t port) {
    Stream s(UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)));
    sockaddr_un addr = Addr(uds);
    if (::connect(s.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return {};
    if (!s.WriteAll("CONNECT " + std::to_string(port) + "\n")) return {};
    std::string ok = s.ReadLine();
    if (ok.rfind("OK ", 0) != 0 || ok.back() != '\n') return {};
    return s;
  }
  int fd() const { return fd_.get(); }
  bool WriteAll(std::string_view b) {
    size_t done = 0;
    while (done < b.size()) {
      ssize_t n = ::send(fd(), b.data() + done, b.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  std::string ReadLine() {
    std::string line;
    char c;
    while (::read(fd(), &c, 1) == 1) {
      line.push_back(c);
      if (c == '\n') break;
    }
    return line;
  }
  // Appends up to n bytes; stops early at EOF or an error.
  size_t ReadInto(std::string* out, size_t n) {
    size_t done = 0;
    char buf[65536];
    while (done < n) {
      ssize_t r = ::read(fd(), buf, std::min(sizeof buf, n - done));
      if (r <= 0) break;
      out->append(buf, static_cast<size_t>(r));
      done += static_cast<size_t>(r);
    }
    return done;
  }
  // 0 at EOF, -1 (errno) on error or the hang guard, else bytes read.
  ssize_t ReadSome(char* buf, size_t n) { return ::read(fd(), buf, n); }

 private:
  UniqueFd fd_;
};

// A host listener at `<uds>_<port>` for guest-initiated connections.
class HostListener {
 public:
  HostListener(const std::string& uds, uint32_t port)
      : path_(uds + "_" + std::to_string(port)),
        fd_(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_un addr = Addr(path_);
    ok_ = ::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
          ::listen(fd_.get(), 4) == 0;
  }
  ~HostListener() { ::unlink(path_.c_str()); }
  bool ok() const { return ok_; }
  std::optional<Stream> Accept() {
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(kHangGuard.count() * 1000)) != 1) return {};
    UniqueFd c(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!c) return {};
    return Stream(std::move(c));
  }

 private:
  std::string path_;
  UniqueFd fd_;
  bool ok_ = false;
};

struct EchoStats {
  std::string echoed;
  size_t written_at_pause = 0;  // by the writer, when the reader paused
  size_t read_at_pause = 0;
  bool write_ok = false;
  double seconds = 0;
};

// Writes `data` from a thread while reading the echo; with `pause_after`,
// the reader stops for a while after that many bytes so everything between
// the host writer and the host reader fills up.
EchoStats Echo(Stream& s, const std::string& data, size_t pause_after = 0) {
  EchoStats st;
  std::atomic<size_t> written{0};
  const auto start = Clock::now();
  std::thread writer([&] {
    constexpr size_t kChunk = 32 * 1024;
    bool ok = true;
    for (size_t off = 0; ok && off < data.size(); off += kChunk) {
      ok = s.WriteAll(std::string_view(data).substr(off, kChunk));
      if (ok) written = std::min(off + kChunk, data.size());
    }
    st.write_ok = ok;
  });
  if (pause_after > 0) {
    s.ReadInto(&st.echoed, pause_after);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // pacing, not an assertion
    st.written_at_pause = written;
    st.read_at_pause = st.echoed.size();
  }
  s.ReadInto(&st.echoed, data.size() - st.echoed.size());
  writer.join();
  st.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return st;
}

void Report(const std::string& what, size_t bytes, double seconds) {
  std::cout << "[ vsock    ] " << what << ": " << bytes << " bytes echoed in " << seconds << " s\n";
}

VirtioConfig Vsock(const TempDir& dir, uint64_t cid = 3) {
  VirtioConfig cfg;
  cfg.vsock_cid = cid;
  cfg.vsock_uds_path = (dir.path() / "v.sock").string();
  return cfg;
}

void ExpectNoFail(const OutputCollector& out) {
  EXPECT_TRUE(out.Lines("PROBE fail").empty()) << out.text();
}

// Boots the probe's vsock echo scenario (CID 3) and waits for its driver.
absl::StatusOr<ProbeVm> BootVsockEcho(const VirtioConfig& cfg) {
  FORKD_ASSIGN_OR_RETURN(ProbeVm vm, BootProbe("probe.scenario=vsock", 64 << 20, 1, cfg));
  if (!vm.out->WaitFor("PROBE ok vsock cid=3").has_value()) {
    return absl::DeadlineExceededError("vsock driver never came up: " + vm.out->text());
  }
  return vm;
}

// The guest and the device carry on: a new host connection echoes.
void ExpectNewHostConnectionEchoes(const VirtioConfig& cfg, const ProbeVm& vm) {
  auto again = Stream::ToGuest(cfg.vsock_uds_path, kGuestPort);
  ASSERT_TRUE(again.has_value()) << vm.out->text();
  EXPECT_EQ(Echo(*again, "next").echoed, "next");
}

// Stops the VM and checks the guest never reported a failure.
void StopCleanly(ProbeVm& vm) {
  EXPECT_EQ(vm.machine->Stop().kind, ExitKind::kStopped);
  ExpectNoFail(*vm.out);
}

TEST(Vsock, HostConnectionEchoesFourMiBThroughASlowReader) {
  TempDir dir;
  VirtioConfig cfg = Vsock(dir);
  auto vm = BootVsockEcho(cfg);
  ASSERT_TRUE(vm.ok()) << vm.status();
  auto s = Stream::ToGuest(cfg.vsock_uds_path, kGuestPort);
  ASSERT_TRUE(s.has_value()) << vm->out->text();
  const std::string data = PseudoRandom(kBig, 1);
  EchoStats st = Echo(*s, data, 1 << 20);
  EXPECT_TRUE(st.write_ok);
  ASSERT_EQ(st.echoed.size(), data.size()) << vm->out->text();
  EXPECT_TRUE(st.echoed == data)
      << "echo differs at byte "
      << std::mismatch(data.begin(), data.end(), st.echoed.begin()).first - data.begin();
  // While the reader stood still the writer was held back: every buffer in
  // between (sockets, the device's 256 KiB, the guest's 64 KiB) is bounded.
  EXPECT_LT(st.written_at_pause - st.read_at_pause, size_t{3} << 20)
      << "written " << st.written_at_pause << " read " << st.read_at_pause;
  Report("host-initiated, 1 MiB then a 500 ms reader pause", data.size(), st.seconds);
  std::cout << "[ vsock    ] at the pause: written " << st.written_at_pause << ", read "
            << st.read_at_pause << "\n";
  StopCleanly(*vm);
}

TEST(Vsock, GuestConnectionToUdsPortEchoesFourMiB) {
  TempDir dir;
  VirtioConfig cfg = Vsock(dir);
  HostListener listener(cfg.vsock_uds_path, kHostPort);
  ASSERT_TRUE(listener.ok());
  auto vm = BootProbe("probe.scenario=vsock probe.vsock_connect=" + std::to_string(kHostPort),
                      64 << 20, 1, cfg);
  ASSERT_TRUE(vm.ok()) << vm.status();
  auto s = listener.Accept();
  ASSERT_TRUE(s.has_value()) << vm->out->text();
  EXPECT_EQ(s->ReadLine(), kMarker);
  ASSERT_TRUE(vm->out->WaitFor("PROBE ok vsock-connected port=6000").has_value());
  const std::string data = PseudoRandom(kBig, 2);
  EchoStats st = Echo(*s, data, 2 << 20);
  ASSERT_EQ(st.echoed.size(), data.size()) << vm->out->text();
  EXPECT_TRUE(st.echoed == data);
  Report("guest-initiated, 2 MiB then a 500 ms reader pause", data.size(), st.seconds);
  // A host connection to the guest's listen port works meanwhile... as the
  // probe's one connection, replacing this one (which the guest resets).
  auto h = Stream::ToGuest(cfg.vsock_uds_path, kGuestPort);
  ASSERT_TRUE(h.has_value()) << vm->out->text();
  char c;
  EXPECT_EQ(s->ReadSome(&c, 1), 0) << "the replaced guest connection was not closed";
  EXPECT_EQ(Echo(*h, "after").echoed, "after");
  StopCleanly(*vm);
}

TEST(Vsock, GuestConnectionWithoutListenerIsResetAndTheVmCarriesOn) {
  TempDir dir;
  VirtioConfig cfg = Vsock(dir);
  auto vm = BootProbe("probe.scenario=vsock probe.vsock_connect=" + std::to_string(kHostPort),
                      64 << 20, 1, cfg);
  ASSERT_TRUE(vm.ok()) << vm.status();
  ASSERT_TRUE(vm->out->WaitFor("PROBE ok vsock-refused port=6000").has_value()) << vm->out->text();
  // Host connections still work.
  auto h = Stream::ToGuest(cfg.vsock_uds_path, kGuestPort);
  ASSERT_TRUE(h.has_value()) << vm->out->text();
  EXPECT_EQ(Echo(*h, "still here").echoed, "still here");
  // Once somebody listens, the guest's next attempt connects.
  HostListener listener(cfg.vsock_uds_path, kHostPort);
  ASSERT_TRUE(listener.ok());
  vm->in.Send("c");
  auto s = listener.Accept();
  ASSERT_TRUE(s.has_value()) << vm->out->text();
  EXPECT_EQ(s->ReadLine(), kMarker);
  EXPECT_EQ(Echo(*s, "second try").echoed, "second try");
  StopCleanly(*vm);
}

TEST(Vsock, HostHalfCloseGuestStillSendsItsRemainingBytes) {
  TempDir dir;
  VirtioConfig cfg = Vsock(dir);
  auto vm = BootVsockEcho(cfg);
  ASSERT_TRUE(vm.ok()) << vm.status();
  auto s = Stream::ToGuest(cfg.vsock_uds_path, kGuestPort);
  ASSERT_TRUE(s.has_value());
  // More than the guest's 64 KiB ring holds, written before anything is
  // read back, then the write side is shut: the guest hears SHUTDOWN(SEND)
  // behind the bytes and must echo the rest before it closes.
  const std::string data = PseudoRandom(256 * 1024, 3);
  std::thread writer([&] {
    EXPECT_TRUE(s->WriteAll(data));
    EXPECT_EQ(::shutdown(s->fd(), SHUT_WR), 0);
  });
  std::string echoed;
  s->ReadInto(&echoed, data.size());
  writer.join();
  ASSERT_EQ(echoed.size(), data.size()) << vm->out->text();
  EXPECT_TRUE(echoed == data);
  char c;
  errno = 0;
  EXPECT_EQ(s->ReadSome(&c, 1), 0) << "no EOF after the echo: errno " << errno;
  // The guest is ready for the next connection.
  ExpectNewHostConnectionEchoes(cfg, *vm);
  StopCleanly(*vm);
}

// The guest half-closes ('h': SHUTDOWN(SEND) after echoing what it has):
// the host reads every echoed byte, then EOF, and can still send (the guest
// counts what arrives and reports the count at the host's EOF); the host's
// close then ends the connection and the guest takes new ones.
TEST(Vsock, GuestHalfCloseHostReadsEofThenStillSends) {
  TempDir dir;
  VirtioConfig cfg = Vsock(dir);
  auto vm = BootVsockEcho(cfg);
  ASSERT_TRUE(vm.ok()) << vm.status();
  auto s = Stream::ToGuest(cfg.vsock_uds_path, kGuestPort);
  ASSERT_TRUE(s.has_value());
  const std::string data = PseudoRandom(200 * 1024, 6);
  EchoStats st = Echo(*s, data);
  ASSERT_EQ(st.echoed.size(), data.size()) << vm->out->text();
  EXPECT_TRUE(st.echoed == data);
  vm->in.Send("h");
  ASSERT_TRUE(vm->out->WaitFor("PROBE ok vsock-half-closed echoed=" + std::to_string(data.size()))
                  .has_value())
      << vm->out->text();
  char c;
  errno = 0;
  EXPECT_EQ(s->ReadSome(&c, 1), 0) << "no EOF after the guest's SHUTDOWN(SEND): errno " << errno;
  // Still open towards the guest: more than its 64 KiB buf_alloc, so its
  // credit updates must keep flowing after its half-close.
  const std::string more = PseudoRandom(300 * 1024, 7);
  ASSERT_TRUE(s->WriteAll(more));
  ASSERT_EQ(::shutdown(s->fd(), SHUT_WR), 0);
  ASSERT_TRUE(
      vm->out->WaitFor("PROBE ok vsock-peer-eof after-half-close=" + std::to_string(more.size()))
          .has_value())
      << vm->out->text();
  // Both directions done: the connection is gone (EOF again, not a reset).
  errno = 0;
  EXPECT_EQ(s->ReadSome(&c, 1), 0) << "errno " << errno;
  s.reset();
  // The guest and the device carry on.
  ExpectNewHostConnectionEchoes(cfg, *vm);
  StopCleanly(*vm);
}

// The host closes its socket and the guest never finishes the close ('m'):
// the muxer reads EOF (SHUTDOWN(SEND)), sees the socket gone both ways
// (POLLHUP: SHUTDOWN(RCV) too), and after the close timeout resets the
// connection and forgets it. The guest then takes new connections.
TEST(Vsock, HostCloseTheGuestIgnoresEndsInRstAfterTheCloseTimeout) {
  TempDir dir;
  VirtioConfig cfg = Vsock(dir);
  auto vm = BootVsockEcho(cfg);
  ASSERT_TRUE(vm.ok()) << vm.status();
  auto s = Stream::ToGuest(cfg.vsock_uds_path, kGuestPort);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(Echo(*s, "hello").echoed, "hello");
  vm->in.Send("m");
  ASSERT_TRUE(vm->out->WaitFor("PROBE ok vsock-ignore-close").has_value()) << vm->out->text();
  s.reset();
  ASSERT_TRUE(vm->out->WaitFor("PROBE ok vsock-reset-while-ignoring-close shutdown=3").has_value())
      << vm->out->text();
  ExpectNewHostConnectionEchoes(cfg, *vm);
  StopCleanly(*vm);
}

// A guest that never answers a host CONNECT (neither RESPONSE nor RST):
// the muxer gives up after Vsock::kConnectTimeout, the host reads EOF
// without "OK" and the guest hears RST for it; once the guest answers
// again, new connections work.
TEST(Vsock, HostConnectTheGuestNeverAnswersEndsWithoutOk) {
  TempDir dir;
  VirtioConfig cfg = Vsock(dir);
  auto vm = BootVsockEcho(cfg);
  ASSERT_TRUE(vm.ok()) << vm.status();
  vm->in.Send("i");
  ASSERT_TRUE(vm->out->WaitFor("PROBE ok vsock-ignore-requests on=1").has_value())
      << vm->out->text();
  Stream s(UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)));
  sockaddr_un addr = Addr(cfg.vsock_uds_path);
  ASSERT_EQ(::connect(s.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0)
      << std::strerror(errno);
  ASSERT_TRUE(s.WriteAll("CONNECT " + std::to_string(kGuestPort) + "\n"));
  auto ignored = vm->out->WaitFor("PROBE ok vsock-request-ignored port=");
  ASSERT_TRUE(ignored.has_value()) << vm->out->text();
  char c;
  // 0: EOF; -1 would be the socket's hang guard (SO_RCVTIMEO) or an error.
  EXPECT_EQ(s.ReadSome(&c, 1), 0) << std::strerror(errno);
  auto reset = vm->out->WaitFor("PROBE ok vsock-ignored-request-reset port=");
  ASSERT_TRUE(reset.has_value()) << vm->out->text();
  // The RST is for the connection the guest ignored.
  const auto ignored_lines = vm->out->Lines("PROBE ok vsock-request-ignored port=");
  const auto reset_lines = vm->out->Lines("PROBE ok vsock-ignored-request-reset port=");
  ASSERT_EQ(ignored_lines.size(), 1u);
  ASSERT_EQ(reset_lines.size(), 1u);
  EXPECT_EQ(reset_lines[0].substr(reset_lines[0].find("port=")),
            ignored_lines[0].substr(ignored_lines[0].find("port=")));
  vm->in.Send("i");
  ASSERT_TRUE(vm->out->WaitFor("PROBE ok vsock-ignore-requests on=0").has_value())
      << vm->out->text();
  ExpectNewHostConnectionEchoes(cfg, *vm);
  StopCleanly(*vm);
}

// vsock_write (the agent's replies) honours the host's credit: 1 MiB, far
// more than the device buffers (256 KiB) plus the host socket holds, written
// while the host reader stands still, arrives whole; a guest ignoring the
// credit would be reset by the device.
TEST(Vsock, GuestWritesWaitForTheHostsCredit) {
  TempDir dir;
  VirtioConfig cfg = Vsock(dir);
  auto vm = BootVsockEcho(cfg);
  ASSERT_TRUE(vm.ok()) << vm.status();
  auto s = Stream::ToGuest(cfg.vsock_uds_path, kGuestPort);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(Echo(*s, "hello").echoed, "hello");
  vm->in.Send("w");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // pacing, not an assertion
  std::string got;
  s->ReadInto(&got, 1 << 20);
  ASSERT_EQ(got.size(), size_t{1} << 20) << vm->out->text();
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(static_cast<uint8_t>(got[i]), i % 251) << "at byte " << i;
  }
  ASSERT_TRUE(vm->out->WaitFor("PROBE ok vsock-wrote bytes=1048576").has_value())
      << vm->out->text();
  EXPECT_EQ(Echo(*s, "after").echoed, "after");
  StopCleanly(*vm);
}

TEST(Vsock, RestoredForkResetsOldConnectionsAndMakesNewOnesBothWays) {
  TempDir dir;
  const fs::path snap = dir.path() / "snap";
  VirtioConfig cfg = Vsock(dir, 9);
  HostListener listener(cfg.vsock_uds_path, kHostPort);
  ASSERT_TRUE(listener.ok());
  std::optional<Stream> old_guest_conn;
  {
    auto vm = BootProbe("probe.scenario=vsock probe.vsock_connect=" + std::to_string(kHostPort),
                        64 << 20, 1, cfg);
    ASSERT_TRUE(vm.ok()) << vm.status();
    old_guest_conn = listener.Accept();
    ASSERT_TRUE(old_guest_conn.has_value()) << vm->out->text();
    EXPECT_EQ(old_guest_conn->ReadLine(), kMarker);
    // Mid-stream at snapshot time: bytes the guest has not echoed yet.
    ASSERT_TRUE(old_guest_conn->WriteAll("in flight"));
    vm->machine->Pause();
    absl::Status st = SaveSnapshot(*vm->machine, snap);
    ASSERT_TRUE(st.ok()) << st;
    vm->machine->Stop();
  }
  // The source VM is gone, and so is its end of the old connection.
  std::string rest;
  old_guest_conn->ReadInto(&rest, 1 << 20);
  EXPECT_TRUE(rest.empty() || std::string("in flight").rfind(rest, 0) == 0) << rest;

  ProbeVm f;
  const std::string path = (dir.path() / "fork.sock").string();
  HostListener fork_listener(path, kHostPort);
  ASSERT_TRUE(fork_listener.ok());
  auto m = RestoreSnapshot(SharedKvm(), snap, {f.out->write_fd(), f.in.read.get()}, nullptr,
                           {.vsock_uds_path = path});
  ASSERT_TRUE(m.ok()) << m.status();
  f.machine = *std::move(m);
  ASSERT_TRUE(f.machine->Start().ok());
  ASSERT_TRUE(f.out->WaitFor("PROBE ok vsock-reset cid=9").has_value()) << f.out->text();
  // New host-initiated connection, several MiB.
  auto h = Stream::ToGuest(path, kGuestPort);
  ASSERT_TRUE(h.has_value()) << f.out->text();
  const std::string data = PseudoRandom(kBig, 4);
  EchoStats st = Echo(*h, data);
  ASSERT_EQ(st.echoed.size(), data.size()) << f.out->text();
  EXPECT_TRUE(st.echoed == data);
  Report("restored fork, host-initiated", data.size(), st.seconds);
  // New guest-initiated connection, to the fork's own `<uds>_P`.
  f.in.Send("c");
  auto g = fork_listener.Accept();
  ASSERT_TRUE(g.has_value()) << f.out->text();
  EXPECT_EQ(g->ReadLine(), kMarker);
  const std::string data2 = PseudoRandom(1 << 20, 5);
  EXPECT_TRUE(Echo(*g, data2).echoed == data2);
  StopCleanly(f);
}

}  // namespace
}  // namespace forkd::vmm::testing

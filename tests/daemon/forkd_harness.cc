#include "tests/daemon/forkd_harness.h"

#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "forkd/sandbox/cgroup.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"

namespace forkd::testing {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string TestVmmBinary() {
#ifdef FORKD_DAEMON_TEST_REAL_VMM
  return FORKD_VMM_BINARY_PATH;
#else
  return FORKD_STANDIN_VMM_PATH;
#endif
}

bool UsingRealVmm() {
#ifdef FORKD_DAEMON_TEST_REAL_VMM
  return true;
#else
  return false;
#endif
}

namespace {
bool Connectable(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const bool ok = fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  if (fd >= 0) ::close(fd);
  return ok;
}
}  // namespace

ForkdProcess::ForkdProcess(fs::path dir, std::vector<std::string> extra,
                           std::map<std::string, std::string> env)
    : dir_(std::move(dir)), data_(dir_ / "data"), extra_(std::move(extra)), env_(std::move(env)) {}

ForkdProcess::~ForkdProcess() {
  if (pid_ > 0) Kill();
  // forkd made it (and removes the VMs' cgroups in it); the parent is the test's.
  if (const std::string cg = CgroupParentOf(data_); !cg.empty()) (void)::rmdir(cg.c_str());
}

std::string CgroupParentOf(const fs::path& data_dir) {
  auto mount = sandbox::Cgroup2Mount();
  if (!mount.ok()) return "";
  return *mount + "/forkd-test-" + data_dir.parent_path().filename().string();
}

::testing::AssertionResult ForkdProcess::Start() {
  std::vector<std::string> args = {FORKD_DAEMON_PATH,
                                   "--data-dir",
                                   data_.string(),
                                   "--listen",
                                   "unix:" + socket(),
                                   "--vmm",
                                   vmm_,
                                   "--probe-guest",
                                   FORKD_PROBE_GUEST_PATH,
                                   "--vmm-keeper",
                                   FORKD_KEEPER_PATH};
  // The VMs' cgroups go under a parent of this test's own, never the
  // host's forkd.slice. Hosts whose cgroup2 lacks controllers (the
  // development machines: cgroup v1 hybrid) run without those limits;
  // CgroupTest checks what is written where the controllers exist.
  if (const std::string cg = CgroupParentOf(data_); !cg.empty()) {
    args.insert(args.end(), {"--vmm-cgroup-parent", cg, "--allow-missing-cgroup-controllers"});
  }
  // Real VMMs in the emulated-SVM tier (one emulated vCPU, nested KVM)
  // answer the reseed gate more slowly than its 2 s default allows.
  if (UsingRealVmm()) args.insert(args.end(), {"--gate-deadline-ms", "20000"});
  args.insert(args.end(), extra_.begin(), extra_.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log = (dir_ / "forkd.log").string();
  pid_ = ::fork();
  if (pid_ < 0) return ::testing::AssertionFailure() << "fork failed";
  if (pid_ == 0) {
    for (const auto& [k, v] : env_) ::setenv(k.c_str(), v.c_str(), 1);
    FILE* f = std::freopen(log.c_str(), "a", stderr);
    (void)f;
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  // Hang guard only: forkd is serving within milliseconds. The socket is
  // probed directly first: a gRPC channel that failed to connect backs off
  // for seconds before it tries again.
  const auto until = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < until) {
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      return ::testing::AssertionFailure() << "forkd exited at start (status " << st << "):\n"
                                           << Log();
    }
    if (!channel_ && Connectable(socket())) {
      channel_ = grpc::CreateChannel("unix:" + socket(), grpc::InsecureChannelCredentials());
      stub_ = forkd::v1::Forkd::NewStub(channel_);
    }
    if (channel_ && Healthy()) return ::testing::AssertionSuccess();
    std::this_thread::sleep_for(5ms);
  }
  return ::testing::AssertionFailure() << "forkd never became healthy:\n" << Log();
}

bool ForkdProcess::Healthy() {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 2s);
  grpc::ByteBuffer resp;
  // grpc.health.v1.Health/Check with an empty request (service "").
  grpc::GenericStub generic(channel_);
  grpc::ByteBuffer req;
  grpc::Slice empty("");
  req = grpc::ByteBuffer(&empty, 1);
  grpc::Status status;
  grpc::CompletionQueue cq;
  auto call = generic.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", req, &cq);
  call->StartCall();
  call->Finish(&resp, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  (void)cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (!status.ok()) return false;
  std::vector<grpc::Slice> slices;
  (void)resp.Dump(&slices);
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  // HealthCheckResponse{status: SERVING(1)} is the two bytes 08 01.
  return bytes == std::string("\x08\x01", 2);
}

int ForkdProcess::Stop() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  return WaitExit();
}

void ForkdProcess::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  WaitExit();
}

int ForkdProcess::WaitExit() {
  if (pid_ <= 0) return -1;
  int st = 0;
  while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  return st;
}

std::string ForkdProcess::Log() const {
  std::ifstream in(dir_ / "forkd.log");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {
// Live (non-zombie) processes whose command line names `marker`; `want`
// filters them.
std::vector<pid_t> ProcessesNaming(const std::string& marker,
                                   const std::function<bool(const std::string&)>& want) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string s((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const size_t close = s.rfind(')');
    if (close == std::string::npos || close + 2 >= s.size() || s[close + 2] == 'Z') continue;
    std::ifstream cmd(e.path() / "cmdline");
    std::string c((std::istreambuf_iterator<char>(cmd)), std::istreambuf_iterator<char>());
    if (c.find(marker) != std::string::npos && want(c)) out.push_back(std::stoi(name));
  }
  return out;
}

// Live (non-zombie) processes serving `data_dir`'s sandboxes whose argv[0]
// is (keepers) or is not (VMMs) forkd-vmm-keeper: a keeper's command line
// holds its VMM's.
std::vector<pid_t> ProcessesOf(const fs::path& data_dir, bool keepers) {
  return ProcessesNaming((data_dir / "sandboxes").string() + "/", [&](const std::string& c) {
    const bool keeper = fs::path(c.substr(0, c.find('\0'))).filename() == "forkd-vmm-keeper";
    return c.find("--restore") != std::string::npos && keeper == keepers;
  });
}
}  // namespace

std::vector<pid_t> VmmProcessesOf(const fs::path& data_dir) { return ProcessesOf(data_dir, false); }

std::vector<pid_t> KeeperProcessesOf(const fs::path& data_dir) {
  return ProcessesOf(data_dir, true);
}

std::vector<pid_t> BuildProcessesOf(const fs::path& data_dir) {
  const std::string marker = (data_dir / "templates" / ".build-").string();
  return ProcessesNaming(marker, [](const std::string&) { return true; });
}

std::string Leftovers(const fs::path& data_dir) {
  std::string out;
  for (pid_t p : BuildProcessesOf(data_dir)) {
    out += "template build process " + std::to_string(p) + "\n";
  }
  for (pid_t p : VmmProcessesOf(data_dir)) out += "VMM process " + std::to_string(p) + "\n";
  for (pid_t p : KeeperProcessesOf(data_dir)) out += "keeper process " + std::to_string(p) + "\n";
  std::error_code ec;
  for (const char* sub : {"sandboxes", "netns", "journal"}) {
    for (const auto& e : fs::directory_iterator(data_dir / sub, ec)) {
      out += std::string(sub) + "/" + e.path().filename().string() + "\n";
    }
  }
  if (const std::string cg = CgroupParentOf(data_dir); !cg.empty()) {
    for (const auto& e : fs::directory_iterator(cg, ec)) {
      if (e.is_directory()) out += "cgroup " + e.path().string() + "\n";
    }
  }
  std::ifstream mi("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mi, line)) {
    if (line.find(data_dir.string()) != std::string::npos) out += "mount: " + line + "\n";
  }
  return out;
}

namespace {
std::string RootFsType() {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream w(line);
    std::string id, parent, dev, root, mnt;
    w >> id >> parent >> dev >> root >> mnt;
    const size_t dash = line.find(" - ");
    if (mnt == "/" && dash != std::string::npos) {
      std::istringstream after(line.substr(dash + 3));
      std::string type;
      after >> type;
      return type;
    }
  }
  return "";
}

}  // namespace

::testing::AssertionResult MakeHostLike(const fs::path& scratch) {
  if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr)) {
    return ::testing::AssertionFailure() << "own mount namespace: " << std::strerror(errno);
  }
  if (RootFsType() == "rootfs") {
    // What switch_root does: the root bound onto itself becomes a mount of
    // its own, moved over "/", and chrooted into.
    const fs::path nr = scratch / "root";
    fs::create_directories(nr);
    if (::mount("/", nr.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0 ||
        ::chdir(nr.c_str()) != 0 || ::mount(".", "/", nullptr, MS_MOVE, nullptr) != 0 ||
        ::chroot(".") != 0 || ::chdir("/") != 0) {
      return ::testing::AssertionFailure() << "root off rootfs: " << std::strerror(errno);
    }
  }
  if (!sandbox::Cgroup2Mount().ok()) {
    // Where a host has it (sysfs provides the empty directory); in this
    // process's namespace only, so nothing under `scratch` is a mount.
    if (::mount("cgroup2", "/sys/fs/cgroup", "cgroup2", 0, nullptr) != 0) {
      return ::testing::AssertionFailure() << "mount cgroup2: " << std::strerror(errno);
    }
  }
  return ::testing::AssertionSuccess();
}

void GuardRpc(grpc::ClientContext& ctx) {
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(3));
}

grpc::Status CreateProbeTemplate(forkd::v1::Forkd::Stub& api, const std::string& id,
                                 const std::string& agent_mode) {
  grpc::ClientContext ctx;
  GuardRpc(ctx);
  forkd::v1::CreateTemplateRequest req;
  req.set_template_id(id);
  req.mutable_probe()->set_agent_mode(agent_mode);
  auto reader = api.CreateTemplate(&ctx, req);
  forkd::v1::TemplateProgress p;
  bool done = false;
  while (reader->Read(&p)) done = done || p.stage() == forkd::v1::TemplateProgress::DONE;
  grpc::Status s = reader->Finish();
  if (s.ok() && !done) return grpc::Status(grpc::StatusCode::INTERNAL, "no DONE progress");
  return s;
}

}  // namespace forkd::testing

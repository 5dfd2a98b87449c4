// The static forkd-agent binary itself (not the library in-process): started
// with --unix, it answers Ping and NotifyForked, and writes the generation.
// Network configuration is off (--no-netconfig): this runs in the host's
// namespace and must not touch its interfaces. The clock it would step is
// this machine's, so the host time the client sends is this machine's "now":
// the drift is ~0 and the agent leaves the clock alone.
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <thread>

#include "agent/client.h"
#include "agent/tests/test_util.h"
#include "gtest/gtest.h"

extern char** environ;

namespace forkd::agent {
namespace {

class AgentProcess {
 public:
  AgentProcess(const std::string& socket, const std::string& random, const std::string& gen) {
    std::vector<std::string> args = {
        FORKD_AGENT_BINARY,  "--unix", socket,          "--random-device", random,
        "--generation-file", gen,      "--no-netconfig"};
    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int err = posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ);
    EXPECT_EQ(err, 0) << std::strerror(err);
  }
  ~AgentProcess() {
    if (pid_ > 0) {
      (void)::kill(pid_, SIGKILL);
      (void)::waitpid(pid_, nullptr, 0);
    }
  }

 private:
  pid_t pid_ = -1;
};

// Waits (hang guard: 20 s) for the agent to create its socket.
bool WaitForSocket(const std::string& path) {
  const auto deadline = testing::Soon();
  struct stat st {};
  while (::stat(path.c_str(), &st) != 0) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

TEST(AgentBinaryTest, ServesPingAndNotifyForkedOnAUnixSocket) {
  testing::TempDir dir;
  const std::string sock = dir.Path("agent.sock");
  const std::string random = dir.Path("random");  // a regular file: the ioctl fails
  const std::string gen = dir.Path("run/forkd/generation");
  testing::WriteString(random, "");
  AgentProcess agent(sock, random, gen);
  ASSERT_TRUE(WaitForSocket(sock));

  AgentClient client(testing::ConnectUnix(sock));
  auto pong = client.Ping(testing::Soon());
  ASSERT_TRUE(pong.ok()) << pong.status();
  EXPECT_EQ(pong->protocol_version(), kProtocolVersion);

  auto r = client.NotifyForked({.generation = 9}, testing::Soon());
  EXPECT_EQ(r.outcome, NotifyForkedResult::Outcome::kNotReseeded) << r.detail;
  EXPECT_NE(r.detail.find("RNDADDENTROPY"), std::string::npos) << r.detail;
  EXPECT_EQ(testing::ReadAll(gen), "9\n");

  v1::ExecRequest exec;
  exec.add_argv("echo");
  exec.add_argv("from the agent");
  auto e = client.Exec(exec, testing::Soon());
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->stdout(), "from the agent\n");
}

}  // namespace
}  // namespace forkd::agent

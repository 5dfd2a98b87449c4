// forkd's TCP listener: mutual TLS with a client-certificate SAN allow-list.
// A good certificate is served (the positive control); no certificate is
// UNAUTHENTICATED, a SAN not on the list PERMISSION_DENIED, an expired one
// fails the handshake; a partial TLS flag set refuses to start. The
// certificates are made with the openssl command line (test-only).
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "gtest/gtest.h"
#include "tests/daemon/forkd_harness.h"
#include "tests/support/requirements.h"
#include "tests/support/temp_dir.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);

namespace forkd::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string Slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class MtlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    d_ = tmp_.path() / "pki";
    fs::create_directories(d_);
    ASSERT_TRUE(
        Run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
            "-keyout ca.key -out ca.pem -days 2 -subj /CN=forkd-test-ca"));
    ASSERT_TRUE(
        Run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
            "-keyout other-ca.key -out other-ca.pem -days 2 -subj /CN=other-ca"));
    ASSERT_TRUE(Issue("server", "IP:127.0.0.1,DNS:localhost", "ca", 2));
    ASSERT_TRUE(Issue("good", "DNS:good-client", "ca", 2));
    ASSERT_TRUE(Issue("wrong", "DNS:wrong-client", "ca", 2));
    ASSERT_TRUE(Issue("foreign", "DNS:good-client", "other-ca", 2));
    ASSERT_TRUE(Issue("expired", "DNS:good-client", "ca", 0));
    // -days 0 ends the validity in the second it starts: wait until openssl
    // itself calls it expired (a state, not a duration).
    while (Run("openssl x509 -checkend 0 -noout -in expired.pem"))
      std::this_thread::sleep_for(100ms);
  }

  bool Run(const std::string& cmd) {
    return std::system(("cd '" + d_.string() + "' && " + cmd + " >/dev/null 2>&1").c_str()) == 0;
  }
  bool Issue(const std::string& name, const std::string& san, const std::string& ca, int days) {
    std::ofstream(d_ / (name + ".ext")) << "subjectAltName=" << san << "\n";
    return Run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " + name +
               ".key -out " + name + ".csr -subj /CN=" + name) &&
           Run("openssl x509 -req -in " + name + ".csr -CA " + ca + ".pem -CAkey " + ca +
               ".key -CAcreateserial -out " + name + ".pem -days " + std::to_string(days) +
               " -extfile " + name + ".ext");
  }

  // Starts forkd with mTLS on an ephemeral loopback port; returns the port.
  int StartTls() {
    forkd_ = std::make_unique<ForkdProcess>(
        tmp_.path(), std::vector<std::string>{
                         "--listen", "tcp:127.0.0.1:0", "--tls-cert", (d_ / "server.pem").string(),
                         "--tls-key", (d_ / "server.key").string(), "--tls-ca",
                         (d_ / "ca.pem").string(), "--tls-allowed-san", "good-client"});
    EXPECT_TRUE(forkd_->Start());
    std::smatch m;
    const std::string log = forkd_->Log();
    if (!std::regex_search(log, m, std::regex("serving on tcp:127\\.0\\.0\\.1:([0-9]+)"))) {
      ADD_FAILURE() << "no tcp port in the log:\n" << log;
      return 0;
    }
    return std::stoi(m[1]);
  }

  grpc::Status Call(int port, const std::string& client) {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = Slurp(d_ / "ca.pem");
    if (!client.empty()) {
      o.pem_private_key = Slurp(d_ / (client + ".key"));
      o.pem_cert_chain = Slurp(d_ / (client + ".pem"));
    }
    auto ch = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::SslCredentials(o));
    auto stub = forkd::v1::Forkd::NewStub(ch);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 20s);  // hang guard
    forkd::v1::Capacity c;
    return stub->GetCapacity(&ctx, {}, &c);
  }

  TempDir tmp_{"forkd_mtls"};
  fs::path d_;
  std::unique_ptr<ForkdProcess> forkd_;
};

TEST_F(MtlsTest, OnlyAnAllowedClientCertificateIsServed) {
  const int port = StartTls();
  ASSERT_GT(port, 0);
  const grpc::Status good = Call(port, "good");
  EXPECT_TRUE(good.ok()) << good.error_message();  // positive control
  EXPECT_EQ(Call(port, "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Call(port, "wrong").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  const grpc::Status expired = Call(port, "expired");
  EXPECT_FALSE(expired.ok());
  EXPECT_EQ(expired.error_code(), grpc::StatusCode::UNAVAILABLE) << expired.error_message();
  const grpc::Status foreign = Call(port, "foreign");
  EXPECT_EQ(foreign.error_code(), grpc::StatusCode::UNAVAILABLE) << foreign.error_message();
  EXPECT_TRUE(forkd_->Healthy());
  EXPECT_TRUE(Call(port, "good").ok());
  forkd_->Stop();
}

TEST_F(MtlsTest, PartialTlsFlagsRefuseToStart) {
  for (const auto& flags : std::vector<std::vector<std::string>>{
           {"--listen", "tcp:127.0.0.1:0", "--tls-cert", (d_ / "server.pem").string()},
           {"--listen", "tcp:127.0.0.1:0", "--tls-cert", (d_ / "server.pem").string(), "--tls-key",
            (d_ / "server.key").string()},
           {"--listen", "tcp:127.0.0.1:0"},
           {"--listen", "tcp:0.0.0.0:0", "--allow-insecure-tcp"}}) {
    ForkdProcess p(tmp_.path(), flags);
    const ::testing::AssertionResult r = p.Start();
    EXPECT_FALSE(r) << "forkd started with " << ::testing::PrintToString(flags);
  }
  // Positive control: loopback plaintext when asked starts.
  ForkdProcess ok(tmp_.path(), {"--listen", "tcp:127.0.0.1:0", "--allow-insecure-tcp"});
  EXPECT_TRUE(ok.Start());
  ok.Stop();
}

}  // namespace
}  // namespace forkd::testing

#include "forkd/daemon/flags.h"

#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace forkd::daemon {
namespace {

absl::StatusOr<Flags> Parse(std::vector<std::string> args, bool faults = false) {
  args.insert(args.begin(), "forkd");
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  return ParseFlags(static_cast<int>(argv.size()), argv.data(), faults);
}

void ExpectRefused(std::vector<std::string> args, const std::string& mentions,
                   bool faults = false) {
  auto f = Parse(args, faults);
  ASSERT_FALSE(f.ok()) << "accepted: " << ::testing::PrintToString(args);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
  EXPECT_NE(f.status().message().find(mentions), std::string_view::npos) << f.status();
}

TEST(FlagsTest, DefaultsListenOnTheUnixSocket) {
  auto f = Parse({});
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->listen.size(), 1u);
  EXPECT_EQ(f->listen[0].path, "/run/forkd/forkd.sock");
  EXPECT_EQ(f->data_dir, "/var/lib/forkd");
}

TEST(FlagsTest, TheKeeperDefaultsToTheOneNextToTheVmm) {
  auto f = Parse({});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->vmm_keeper,
            (std::filesystem::path(f->vmm).parent_path() / "forkd-vmm-keeper").string());
  f = Parse({"--vmm", "/opt/x/forkd-vmm"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->vmm_keeper, "/opt/x/forkd-vmm-keeper");
  f = Parse({"--vmm", "/opt/x/forkd-vmm", "--vmm-keeper", "/k/keeper"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->vmm_keeper, "/k/keeper");
}

TEST(FlagsTest, HelpListsEveryFlag) {
  auto f = Parse({"--help"});
  ASSERT_EQ(f.status().code(), absl::StatusCode::kCancelled);
  for (const char* flag : {"--kernel",
                           "--initrd",
                           "--kernel-sha256",
                           "--initrd-sha256",
                           "--data-dir",
                           "--listen",
                           "--tls-cert",
                           "--tls-key",
                           "--tls-ca",
                           "--tls-allowed-san",
                           "--allow-insecure-tcp",
                           "--max-sandboxes",
                           "--memory-reserve",
                           "--standby",
                           "--log-format",
                           "--metrics-listen",
                           "--vmm",
                           "--vmm-keeper",
                           "--insecure-skip-guest-verify",
                           "--socket-group"}) {
    EXPECT_NE(f.status().message().find(flag), std::string_view::npos) << flag;
  }
}

TEST(FlagsTest, PartialTlsRefusesToStart) {
  ExpectRefused({"--tls-cert", "c.pem"}, "all or none");
  ExpectRefused({"--tls-cert", "c.pem", "--tls-key", "k.pem"}, "all or none");
  ExpectRefused({"--tls-ca", "ca.pem"}, "all or none");
  ExpectRefused({"--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"}, "--tls-allowed-san");
  EXPECT_TRUE(Parse({"--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a", "--tls-allowed-san",
                     "client.example", "--listen", "tcp:0.0.0.0:7070"})
                  .ok());
}

TEST(FlagsTest, PlaintextTcpOnlyOnLoopbackAndOnlyWhenAsked) {
  ExpectRefused({"--listen", "tcp:127.0.0.1:7070"}, "mutual TLS");
  ExpectRefused({"--listen", "tcp:0.0.0.0:7070", "--allow-insecure-tcp"}, "non-loopback");
  ExpectRefused({"--listen", "tcp:10.1.2.3:7070", "--allow-insecure-tcp"}, "non-loopback");
  EXPECT_TRUE(Parse({"--listen", "tcp:127.0.0.1:7070", "--allow-insecure-tcp"}).ok());
  EXPECT_TRUE(Parse({"--listen", "tcp:[::1]:7070", "--allow-insecure-tcp"}).ok());
}

TEST(FlagsTest, GuestPinFlagsGoTogether) {
  ExpectRefused({"--kernel", "/boot/vmlinuz"}, "--kernel-sha256");
  ExpectRefused({"--kernel-sha256", std::string(64, 'a')}, "without --kernel");
  ExpectRefused({"--kernel", "k", "--kernel-sha256", "x", "--initrd", "i"}, "--initrd-sha256");
  EXPECT_TRUE(Parse({"--kernel", "k", "--insecure-skip-guest-verify"}).ok());
}

TEST(FlagsTest, FaultPointNeedsTheEnvironmentSwitch) {
  ExpectRefused({"--test-fault-point", "after-tap"}, "FORKD_ENABLE_TEST_FAULTS");
  ExpectRefused({"--test-fault-point", "nowhere"}, "unknown fault point", true);
  auto f = Parse({"--test-fault-point", "after-tap"}, true);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->fault, pipeline::FaultPoint::kAfterTap);
}

TEST(FlagsTest, DnsUpstreamIsAnAddressAndPort) {
  auto f = Parse({"--dns-upstream", "10.96.0.10:5353"});
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_TRUE(f->dns_upstream.has_value());
  EXPECT_EQ(f->dns_upstream->ToString(), "10.96.0.10:5353");
  EXPECT_FALSE(Parse({}).value().dns_upstream.has_value());
  ExpectRefused({"--dns-upstream", "kube-dns:53"}, "--dns-upstream");
  ExpectRefused({"--dns-upstream", "10.96.0.10:0"}, "--dns-upstream");
}

TEST(FlagsTest, SizesAndListenShapes) {
  EXPECT_EQ(*ParseSize("512M"), 512ull << 20);
  EXPECT_EQ(*ParseSize("2G"), 2ull << 30);
  EXPECT_FALSE(ParseSize("lots").ok());
  ExpectRefused({"--listen", "udp:1"}, "unix:PATH or tcp:HOST:PORT");
  ExpectRefused({"--listen", "unix:relative.sock"}, "absolute");
  ExpectRefused({"--log-format", "xml"}, "log-format");
}

}  // namespace
}  // namespace forkd::daemon

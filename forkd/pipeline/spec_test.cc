#include "forkd/pipeline/spec.h"

#include "forkd/pipeline/sandbox_dns.h"

#include "gtest/gtest.h"

namespace forkd::pipeline {
namespace {

v1::SandboxSpec WithRule(const std::string& cidr, uint32_t first = 0, uint32_t last = 0,
                         v1::EgressRule::Protocol proto = v1::EgressRule::PROTOCOL_ANY) {
  v1::SandboxSpec s;
  auto* r = s.mutable_egress()->add_allow();
  r->set_cidr(cidr);
  r->set_protocol(proto);
  if (first) {
    auto* p = r->add_ports();
    p->set_first(first);
    p->set_last(last);
  }
  return s;
}

v1::SandboxSpec ZeroPort() {
  v1::SandboxSpec s = WithRule("203.0.113.0/24");
  auto* p = s.mutable_egress()->mutable_allow(0)->add_ports();
  p->set_first(0);
  p->set_last(5);
  return s;
}

TEST(SpecTest, AcceptsAPublicAllowRule) {
  EXPECT_TRUE(
      ValidateSpec(WithRule("203.0.113.0/24", 443, 0, v1::EgressRule::TCP), "s", 64, false).ok());
  EXPECT_TRUE(ValidateSpec(WithRule("198.51.100.7"), "s", 64, false).ok());
}

TEST(SpecTest, RefusesMalformedCidrsAndPorts) {
  for (const auto& spec :
       {WithRule("300.1.1.1/24"), WithRule("203.0.113.1/24"), WithRule("x"),
        WithRule("203.0.113.0/24", 70000), WithRule("203.0.113.0/24", 20, 10), ZeroPort()}) {
    const absl::Status s = ValidateSpec(spec, "sandboxes[0]", 64, false);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("sandboxes[0]"), std::string_view::npos) << s;
  }
}

TEST(SpecTest, DnsNamesNeedAnUpstream) {
  v1::SandboxSpec s;
  s.mutable_egress()->add_allow_dns("example.com");
  const absl::Status st = ValidateSpec(s, "s", 64, /*have_dns_upstream=*/false);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.message().find("--dns-upstream"), std::string_view::npos) << st;
  // Control: the same spec on a forkd with an upstream is accepted.
  EXPECT_TRUE(ValidateSpec(s, "s", 64, true).ok());
}

TEST(SpecTest, DnsNamesAndPortsAreChecked) {
  v1::SandboxSpec s;
  s.mutable_egress()->add_allow_dns("*.example.com");
  s.mutable_egress()->add_allow_dns("bad..name");
  absl::Status st = ValidateSpec(s, "s", 64, true);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("allow_dns[1]"), std::string_view::npos) << st;

  v1::SandboxSpec p;
  p.mutable_egress()->add_allow_dns("example.com");
  p.mutable_egress()->add_dns_ports(443);
  EXPECT_TRUE(ValidateSpec(p, "s", 64, true).ok());
  EXPECT_EQ(DnsPortsOf(p), (std::vector<uint16_t>{443}));
  p.mutable_egress()->add_dns_ports(443);
  EXPECT_EQ(ValidateSpec(p, "s", 64, true).code(), absl::StatusCode::kInvalidArgument);
  p.mutable_egress()->set_dns_ports(1, 70000);
  EXPECT_EQ(ValidateSpec(p, "s", 64, true).code(), absl::StatusCode::kInvalidArgument);

  v1::SandboxSpec ports_only;
  ports_only.mutable_egress()->add_dns_ports(443);
  EXPECT_EQ(ValidateSpec(ports_only, "s", 64, true).code(), absl::StatusCode::kInvalidArgument);

  v1::SandboxSpec defaults;
  defaults.mutable_egress()->add_allow_dns("example.com");
  EXPECT_EQ(DnsPortsOf(defaults), (std::vector<uint16_t>{443, 80}));
}

TEST(SpecTest, ResolverIsInThePolicyOnlyWithDnsNames) {
  const auto guest = netfilter::IpAddress::V4(10, 192, 0, 6);
  const auto gw = netfilter::IpAddress::V4(10, 192, 0, 5);
  v1::SandboxSpec s;
  EXPECT_TRUE(PolicyFor(s, "sbt1", guest, gw).resolvers.empty());
  s.mutable_egress()->add_allow_dns("example.com");
  EXPECT_EQ(PolicyFor(s, "sbt1", guest, gw).resolvers, (std::vector<netfilter::IpAddress>{gw}));
}

TEST(SpecTest, UpstreamParses) {
  auto a = ParseDnsUpstream("10.96.0.10:5353");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->ToString(), "10.96.0.10:5353");
  auto b = ParseDnsUpstream("[2001:db8::53]:53");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->ToString(), "[2001:db8::53]:53");
  auto c = ParseDnsUpstream("10.96.0.10");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->port, 53);
  for (const char* bad : {"dns.example.com:53", "10.96.0.10:0", "10.96.0.10:70000",
                          "10.96.0.10:", "[2001:db8::53", "[2001:db8::53]x", "10.96.0.10:5x"}) {
    EXPECT_FALSE(ParseDnsUpstream(bad).ok()) << bad;
  }
}

TEST(SpecTest, PathsMustBeANamespaceAndACgroup2Directory) {
  v1::SandboxSpec s;
  s.set_netns_path("/etc/hostname");
  EXPECT_EQ(ValidateSpec(s, "s", 64, false).code(), absl::StatusCode::kInvalidArgument);
  s.set_netns_path("/proc/self/ns/../ns/net");
  EXPECT_EQ(ValidateSpec(s, "s", 64, false).code(), absl::StatusCode::kInvalidArgument);
  v1::SandboxSpec c;
  c.set_cgroup_path("/tmp");
  EXPECT_EQ(ValidateSpec(c, "s", 64, false).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SpecTest, SecretValuesNeverReachMessages) {
  v1::SandboxSpec s;
  auto* e = s.add_env();
  e->set_name("TOKEN");
  e->set_value(std::string("hunter2\0x", 9));
  e->set_secret(true);
  const absl::Status st = ValidateSpec(s, "s", 64, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message().find("hunter2"), std::string_view::npos) << st;
}

}  // namespace
}  // namespace forkd::pipeline

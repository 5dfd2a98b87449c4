#include "forkd/pipeline/spec.h"

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
  EXPECT_TRUE(ValidateSpec(WithRule("203.0.113.0/24", 443, 0, v1::EgressRule::TCP), "s", 64).ok());
  EXPECT_TRUE(ValidateSpec(WithRule("198.51.100.7"), "s", 64).ok());
}

TEST(SpecTest, RefusesMalformedCidrsAndPorts) {
  for (const auto& spec :
       {WithRule("300.1.1.1/24"), WithRule("203.0.113.1/24"), WithRule("x"),
        WithRule("203.0.113.0/24", 70000), WithRule("203.0.113.0/24", 20, 10), ZeroPort()}) {
    const absl::Status s = ValidateSpec(spec, "sandboxes[0]", 64);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("sandboxes[0]"), std::string_view::npos) << s;
  }
}

TEST(SpecTest, DnsNamesAreUnimplementedNotIgnored) {
  v1::SandboxSpec s;
  s.mutable_egress()->add_allow_dns("example.com");
  const absl::Status st = ValidateSpec(s, "s", 64);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented) << st;
  EXPECT_NE(st.message().find("DNS proxy"), std::string_view::npos) << st;
}

TEST(SpecTest, PathsMustBeANamespaceAndACgroup2Directory) {
  v1::SandboxSpec s;
  s.set_netns_path("/etc/hostname");
  EXPECT_EQ(ValidateSpec(s, "s", 64).code(), absl::StatusCode::kInvalidArgument);
  s.set_netns_path("/proc/self/ns/../ns/net");
  EXPECT_EQ(ValidateSpec(s, "s", 64).code(), absl::StatusCode::kInvalidArgument);
  v1::SandboxSpec c;
  c.set_cgroup_path("/tmp");
  EXPECT_EQ(ValidateSpec(c, "s", 64).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SpecTest, SecretValuesNeverReachMessages) {
  v1::SandboxSpec s;
  auto* e = s.add_env();
  e->set_name("TOKEN");
  e->set_value(std::string("hunter2\0x", 9));
  e->set_secret(true);
  const absl::Status st = ValidateSpec(s, "s", 64);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message().find("hunter2"), std::string_view::npos) << st;
}

}  // namespace
}  // namespace forkd::pipeline

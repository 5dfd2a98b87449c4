// Tier 0: the probe guest's hand-written protobuf codec (forkd/vmm/probe/
// agent_codec.cc, compiled here for the host) against the real generated
// code of agent/proto/agent.proto, both directions.
#include "forkd/vmm/probe/agent_codec.h"

#include <string>

#include "agent/proto/agent.pb.h"
#include "gtest/gtest.h"

namespace forkd::vmm::testing {
namespace {

namespace v1 = forkd::agent::v1;

const uint8_t* Bytes(const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); }

v1::Request NotifyForked(uint64_t id, uint64_t generation, size_t entropy_len) {
  v1::Request req;
  req.set_id(id);
  auto* n = req.mutable_notify_forked();
  n->set_generation(generation);
  n->set_host_wall_clock_ns(1'700'000'000'123'456'789);
  std::string entropy;
  for (size_t i = 0; i < entropy_len; i++) entropy.push_back(static_cast<char>(0xa0 + i));
  n->set_entropy(entropy);
  return req;
}

TEST(ProbeAgentCodec, DecodesNotifyForkedFromLibprotobuf) {
  v1::Request req = NotifyForked(0x1234567890ULL, 300, 32);
  req.mutable_notify_forked()->mutable_network()->set_ipv4_cidr("10.0.0.2/30");
  req.mutable_notify_forked()->mutable_network()->set_mac("02:00:00:00:00:01");
  const std::string wire = req.SerializeAsString();
  agent_request out{};
  ASSERT_EQ(agent_decode_request(Bytes(wire), static_cast<uint32_t>(wire.size()), &out), 1);
  EXPECT_EQ(out.id, 0x1234567890ULL);
  EXPECT_EQ(out.is_notify_forked, 1);
  EXPECT_EQ(out.generation, 300u);
  ASSERT_EQ(out.entropy_len, 32u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(out.entropy), out.entropy_len),
            req.notify_forked().entropy());
}

TEST(ProbeAgentCodec, OtherRequestKindsAreNotNotifyForked) {
  v1::Request req;
  req.set_id(9);
  req.mutable_ping();
  const std::string wire = req.SerializeAsString();
  agent_request out{};
  ASSERT_EQ(agent_decode_request(Bytes(wire), static_cast<uint32_t>(wire.size()), &out), 1);
  EXPECT_EQ(out.id, 9u);
  EXPECT_EQ(out.is_notify_forked, 0);
}

TEST(ProbeAgentCodec, RefusesTruncatedAndInvalidBytes) {
  const std::string wire = NotifyForked(1, 2, 32).SerializeAsString();
  agent_request out{};
  // Cut inside the entropy field (the last one on the wire).
  EXPECT_EQ(agent_decode_request(Bytes(wire), static_cast<uint32_t>(wire.size() - 5), &out), 0);
  const std::string field_zero = "\x07garbage";
  EXPECT_EQ(agent_decode_request(Bytes(field_zero), static_cast<uint32_t>(field_zero.size()), &out),
            0);
}

TEST(ProbeAgentCodec, ReseededResponseParsesWithLibprotobuf) {
  uint8_t buf[256];
  const uint32_t n = agent_encode_notify_forked(0x1234567890ULL, 1, nullptr, 300, buf, sizeof buf);
  ASSERT_GT(n, 0u);
  v1::Response resp;
  ASSERT_TRUE(resp.ParseFromArray(buf, static_cast<int>(n)));
  EXPECT_EQ(resp.id(), 0x1234567890ULL);
  ASSERT_EQ(resp.kind_case(), v1::Response::kNotifyForked);
  EXPECT_TRUE(resp.notify_forked().reseeded());
  EXPECT_EQ(resp.notify_forked().generation(), 300u);
  EXPECT_EQ(resp.notify_forked().error(), "");
  // Byte for byte what libprotobuf itself produces.
  v1::Response expected;
  expected.set_id(0x1234567890ULL);
  expected.mutable_notify_forked()->set_reseeded(true);
  expected.mutable_notify_forked()->set_generation(300);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf), n), expected.SerializeAsString());
}

TEST(ProbeAgentCodec, RefusedResponseCarriesItsError) {
  uint8_t buf[256];
  const uint32_t n = agent_encode_notify_forked(5, 0, "no crng", 7, buf, sizeof buf);
  v1::Response resp;
  ASSERT_TRUE(resp.ParseFromArray(buf, static_cast<int>(n)));
  EXPECT_EQ(resp.id(), 5u);
  ASSERT_EQ(resp.kind_case(), v1::Response::kNotifyForked);
  EXPECT_FALSE(resp.notify_forked().reseeded());
  EXPECT_EQ(resp.notify_forked().error(), "no crng");
  EXPECT_EQ(resp.notify_forked().generation(), 7u);
}

TEST(ProbeAgentCodec, NetworkAndGenerationErrorsMatchLibprotobuf) {
  uint8_t buf[256];
  const uint32_t n =
      agent_encode_notify_forked_full(9, 1, nullptr, "kept the MAC", "no file", 8, buf, sizeof buf);
  ASSERT_GT(n, 0u);
  v1::Response expected;
  expected.set_id(9);
  expected.mutable_notify_forked()->set_reseeded(true);
  expected.mutable_notify_forked()->set_network_error("kept the MAC");
  expected.mutable_notify_forked()->set_generation_error("no file");
  expected.mutable_notify_forked()->set_generation(8);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf), n), expected.SerializeAsString());
}

TEST(ProbeAgentCodec, ErrorResponseAndCapacity) {
  uint8_t buf[256];
  const uint32_t n = agent_encode_error(3, 2, "NotifyForked only", buf, sizeof buf);
  v1::Response resp;
  ASSERT_TRUE(resp.ParseFromArray(buf, static_cast<int>(n)));
  EXPECT_EQ(resp.id(), 3u);
  ASSERT_EQ(resp.kind_case(), v1::Response::kError);
  EXPECT_EQ(resp.error().code(), v1::ErrorResponse::UNKNOWN_REQUEST);
  EXPECT_EQ(resp.error().message(), "NotifyForked only");
  EXPECT_EQ(agent_encode_error(3, 2, "NotifyForked only", buf, 4), 0u);
}

TEST(ProbeAgentCodec, GarbageFrameIsNotAResponse) {
  // The bytes probe.agent=garbage sends (probe/agent.cc).
  const uint8_t garbage[] = {0x07, 'g', 'a', 'r', 'b', 'a', 'g', 'e', 0xff};
  v1::Response resp;
  EXPECT_FALSE(resp.ParseFromArray(garbage, sizeof garbage));
}

}  // namespace
}  // namespace forkd::vmm::testing

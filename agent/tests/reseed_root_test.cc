// The one path that must succeed for a fork to be served: RNDADDENTROPY then
// RNDRESEEDCRNG on the real /dev/random. Both ioctls need CAP_SYS_ADMIN, so
// this binary needs root. Crediting 32 random bytes to this machine's pool and
// reseeding its CRNG from it is harmless.
#include "agent/client.h"
#include "agent/reseed.h"
#include "agent/tests/test_util.h"
#include "gtest/gtest.h"
#include "tests/support/requirements.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);

namespace forkd::agent {
namespace {

TEST(ReseedRootTest, ReseedsTheCrngOnDevRandom) {
  auto entropy = FreshEntropy(32);
  ASSERT_TRUE(entropy.ok()) << entropy.status();
  const auto s = ReseedCrng("/dev/random", *entropy);
  EXPECT_TRUE(s.ok()) << s;
}

TEST(ReseedRootTest, NotifyForkedAnswersReseededTrue) {
  testing::TempDir dir;
  AgentOptions options;
  options.random_device = "/dev/random";
  options.generation_file = dir.Path("generation");
  // Never step this machine's clock: a clock that refuses to be set, and a
  // host time equal to "now" so it is not asked to.
  options.clock = {.now_ns = SystemWallClock().now_ns,
                   .set_ns = [](int64_t) { return absl::InternalError("test must not step"); }};
  testing::RunningServer server(std::move(options));
  auto client = server.Client();
  auto r = client.NotifyForked({.generation = 11}, testing::Soon());
  EXPECT_EQ(r.outcome, NotifyForkedResult::Outcome::kReseeded)
      << OutcomeName(r.outcome) << ": " << r.detail;
  ASSERT_TRUE(r.response.has_value());
  EXPECT_EQ(r.response->clock_error(), "");
  EXPECT_EQ(testing::ReadAll(dir.Path("generation")), "11\n");
}

}  // namespace
}  // namespace forkd::agent

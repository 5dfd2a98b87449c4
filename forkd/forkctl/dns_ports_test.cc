#include "forkd/forkctl/dns_ports.h"

#include "gtest/gtest.h"

namespace forkd::forkctl {
namespace {

TEST(DnsPorts, RepeatedAndCommaListsOfValidPorts) {
  auto p = ParseDnsPorts({"443", "8443,53", "1,65535", "443"});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(*p, (std::vector<uint32_t>{443, 8443, 53, 1, 65535}));
  auto none = ParseDnsPorts({});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());  // forkd's default (443, 80) applies
}

TEST(DnsPorts, RefusesWhatIsNotAPort) {
  for (const std::string bad : {"0", "65536", "99999999999", "-1", "+80", "80x", "0x50", " 80", "",
                                ",", "80,", ",80", "80,,443", "http"}) {
    auto p = ParseDnsPorts({"443", bad});
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << "'" << bad << "'";
  }
}

}  // namespace
}  // namespace forkd::forkctl

#include "forkd/sandbox/ids.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace forkd::sandbox {
namespace {

TEST(IdsTest, AcceptsTheAllowedShapes) {
  for (const std::string& ok :
       std::vector<std::string>{"a", "Z9", "sb-1", "sb_1", "0abc", std::string(64, 'x')}) {
    EXPECT_TRUE(ValidateId("sandbox id", ok).ok()) << ok;
  }
}

TEST(IdsTest, RefusesEverythingElseNamingWhat) {
  for (const std::string& bad : std::vector<std::string>{
           "", "../x", "a/b", "-a", "_a", "a.b", "a b", "a\nb", std::string(65, 'x'), "é"}) {
    const absl::Status s = ValidateId("sandbox id", bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("sandbox id"), std::string_view::npos) << s;
    EXPECT_EQ(s.message().find('\n'), std::string_view::npos) << "a newline reached the message";
  }
}

TEST(IdsTest, PrintableEscapesAndShortens) {
  EXPECT_EQ(Printable("a\nb"), "a\\x0ab");
  EXPECT_EQ(Printable(std::string(100, 'x'), 4), "xxxx...");
}

}  // namespace
}  // namespace forkd::sandbox

#include "forkd/dns/name_allowlist.h"

#include "gtest/gtest.h"

namespace forkd::dns {
namespace {

Labels L(std::string_view name) {
  auto l = ParseName(name);
  EXPECT_TRUE(l.ok()) << name << ": " << l.status();
  return l.ok() ? *l : Labels{};
}

TEST(NameAllowlist, ExactAndWildcardCaseInsensitiveTrailingDot) {
  auto list = NameAllowlist::Create({"api.example.com", "*.cdn.example.net."});
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_TRUE(list->Allows(L("api.example.com")));
  EXPECT_TRUE(list->Allows(L("API.Example.COM.")));
  EXPECT_FALSE(list->Allows(L("example.com")));
  EXPECT_FALSE(list->Allows(L("www.api.example.com")));  // exact means exact
  EXPECT_FALSE(list->Allows(L("api.example.com.evil.org")));
  EXPECT_TRUE(list->Allows(L("a.cdn.example.net")));
  EXPECT_TRUE(list->Allows(L("x.y.CDN.example.net.")));
  EXPECT_FALSE(list->Allows(L("cdn.example.net")));  // the wildcard is strictly below
  EXPECT_FALSE(list->Allows(L("evilcdn.example.net")));
  EXPECT_FALSE(list->Allows(L("cdn.example.net.evil.org")));
}

TEST(NameAllowlist, WireLabelsCannotPoseAsSeveral) {
  auto list = NameAllowlist::Create({"*.example.com"});
  ASSERT_TRUE(list.ok());
  // One label "a.example" under "com": printed it reads "a\.example.com".
  const uint8_t wire[] = {9, 'a', '.', 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0};
  auto labels = WireNameLabels(wire, sizeof(wire));
  ASSERT_TRUE(labels.ok()) << labels.status();
  ASSERT_EQ(labels->size(), 2u);
  EXPECT_FALSE(list->Allows(*labels));
  // Positive control: the real three-label name passes.
  const uint8_t real[] = {1, 'a', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0};
  auto real_labels = WireNameLabels(real, sizeof(real));
  ASSERT_TRUE(real_labels.ok());
  EXPECT_TRUE(list->Allows(*real_labels));
}

TEST(NameAllowlist, WireNamesAreCheckedForBounds) {
  const uint8_t truncated[] = {5, 'a', 'b'};
  EXPECT_FALSE(WireNameLabels(truncated, sizeof(truncated)).ok());
  const uint8_t no_root[] = {1, 'a'};
  EXPECT_FALSE(WireNameLabels(no_root, sizeof(no_root)).ok());
  const uint8_t trailing[] = {1, 'a', 0, 7};
  EXPECT_FALSE(WireNameLabels(trailing, sizeof(trailing)).ok());
  const uint8_t root[] = {0};
  auto r = WireNameLabels(root, sizeof(root));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
}

TEST(NameAllowlist, BadPatternsAreRefusedByName) {
  for (const char* bad : {"", ".", "a..b", "*.com", "*", "ex ample.com", "*.*.example.com",
                          "a.*.example.com", "exa$mple.com"}) {
    auto list = NameAllowlist::Create({"ok.example.com", bad});
    EXPECT_FALSE(list.ok()) << "accepted \"" << bad << "\"";
    if (!list.ok() && std::string_view(bad).size() > 0) {
      EXPECT_NE(list.status().message().find(bad), std::string::npos) << list.status();
    }
  }
  EXPECT_TRUE(NameAllowlist::Create({"*.example.com", "a-b_c.example.com."}).ok());
}

TEST(NameAllowlist, EmptyAllowsNothing) {
  auto list = NameAllowlist::Create({});
  ASSERT_TRUE(list.ok());
  EXPECT_FALSE(list->Allows(L("example.com")));
  EXPECT_FALSE(list->Allows(Labels{}));
}

}  // namespace
}  // namespace forkd::dns

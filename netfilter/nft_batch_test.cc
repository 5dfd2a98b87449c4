// The batch's message descriptions and reused memory, and the rule encoder's
// messages read back by libnftnl's own parser.
#include <libmnl/libmnl.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/udata.h>
#include <linux/netfilter/nf_tables.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "netfilter/nft_batch.h"
#include "netfilter/nft_encode.h"
#include "netfilter/ruleset.h"

namespace forkd::netfilter {
namespace {

TEST(Batch, DescribesEachMessageFromItsPieces) {
  Batch b(100);
  encode::NewChain(b, kTable, "tap_a_egress", /*exclusive=*/true);
  Rule drop;
  drop.verdict = Verdict::kDrop;
  encode::NewRule(b, kTable, "tap_a_egress", drop,
                  {"add rule ", "1", " to chain ", "tap_a_egress"});
  ASSERT_EQ(b.message_count(), 2u);
  // Sequence numbers: 100 is the batch begin message.
  ASSERT_NE(b.Describe(101), nullptr);
  EXPECT_EQ(*b.Describe(101), "add chain tap_a_egress");
  ASSERT_NE(b.Describe(102), nullptr);
  EXPECT_EQ(*b.Describe(102), "add rule 1 to chain tap_a_egress");
  EXPECT_EQ(b.Describe(100), nullptr);
  EXPECT_EQ(b.Describe(103), nullptr);
}

TEST(Batch, NextBatchReusesTheMemoryAndStartsEmpty) {
  Batch first(1);
  encode::NewChain(first, kTable, "c", /*exclusive=*/false);
  const size_t first_size = first.Finish().size();
  BatchStorage storage = std::move(first).TakeStorage();
  const char* memory = storage.buf.get();
  ASSERT_NE(memory, nullptr);
  Batch second(50, std::move(storage));
  EXPECT_EQ(second.message_count(), 0u);
  EXPECT_EQ(second.Describe(51), nullptr);
  encode::NewChain(second, kTable, "c", /*exclusive=*/false);
  const std::span<const char> bytes = second.Finish();
  EXPECT_EQ(bytes.data(), memory);
  EXPECT_EQ(bytes.size(), first_size);
  EXPECT_EQ(*second.Describe(51), "add chain c");
}

// The first NFT_MSG_NEWRULE message of a finished batch, parsed by libnftnl.
nftnl_rule* ParseFirstRule(std::span<const char> bytes) {
  auto* nlh = reinterpret_cast<const nlmsghdr*>(bytes.data());
  int len = static_cast<int>(bytes.size());
  for (; mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) {
    if ((nlh->nlmsg_type & 0xff) != NFT_MSG_NEWRULE) continue;
    nftnl_rule* r = nftnl_rule_alloc();
    if (nftnl_rule_nlmsg_parse(nlh, r) < 0) {
      nftnl_rule_free(r);
      return nullptr;
    }
    return r;
  }
  return nullptr;
}

int CollectName(nftnl_expr* e, void* data) {
  static_cast<std::vector<std::string>*>(data)->emplace_back(
      nftnl_expr_get_str(e, NFTNL_EXPR_NAME));
  return 0;
}

TEST(Encode, RuleMessageReadsBackAsWritten) {
  Rule pin;
  pin.l4proto = 6;
  pin.pin_set = "tap_a_pin4";
  pin.pin_family = Family::kV4;
  pin.family_known = true;
  pin.verdict = Verdict::kAccept;
  pin.comment = "DNS-pinned destination";
  Batch b(1);
  encode::NewRule(b, kTable, "tap_a_egress", pin, "pin rule");
  nftnl_rule* r = ParseFirstRule(b.Finish());
  ASSERT_NE(r, nullptr);
  EXPECT_STREQ(nftnl_rule_get_str(r, NFTNL_RULE_TABLE), kTable);
  EXPECT_STREQ(nftnl_rule_get_str(r, NFTNL_RULE_CHAIN), "tap_a_egress");
  uint32_t udata_len = 0;
  const auto* udata =
      static_cast<const char*>(nftnl_rule_get_data(r, NFTNL_RULE_USERDATA, &udata_len));
  ASSERT_NE(udata, nullptr);
  // One comment attribute: type, length (with the NUL), text.
  ASSERT_EQ(udata_len, 2 + pin.comment.size() + 1);
  EXPECT_EQ(udata[0], NFTNL_UDATA_RULE_COMMENT);
  EXPECT_EQ(std::string(udata + 2), pin.comment);
  std::vector<std::string> names;
  nftnl_expr_foreach(r, CollectName, &names);
  // meta nfproto (the listing reads `ip daddr`), meta l4proto, the
  // (daddr . dport) loads, the lookup, the verdict.
  EXPECT_EQ(names, (std::vector<std::string>{"meta", "cmp", "meta", "cmp", "payload", "payload",
                                             "lookup", "immediate"}));
  nftnl_rule_free(r);
}

TEST(Encode, JumpAndGotoCarryTheirChain) {
  for (const auto& [verdict, code] :
       {std::pair{Verdict::kJump, NFT_JUMP}, std::pair{Verdict::kGoto, NFT_GOTO}}) {
    Rule r;
    r.verdict = verdict;
    r.target = kNeighbourDiscoveryChain;
    Batch b(1);
    encode::NewRule(b, kTable, "tap_a_input", r, "to chain");
    nftnl_rule* parsed = ParseFirstRule(b.Finish());
    ASSERT_NE(parsed, nullptr);
    nftnl_expr_iter* it = nftnl_expr_iter_create(parsed);
    nftnl_expr* imm = nftnl_expr_iter_next(it);
    ASSERT_NE(imm, nullptr);
    EXPECT_STREQ(nftnl_expr_get_str(imm, NFTNL_EXPR_NAME), "immediate");
    EXPECT_EQ(static_cast<int>(nftnl_expr_get_u32(imm, NFTNL_EXPR_IMM_VERDICT)), code);
    EXPECT_STREQ(nftnl_expr_get_str(imm, NFTNL_EXPR_IMM_CHAIN), kNeighbourDiscoveryChain);
    EXPECT_EQ(nftnl_expr_iter_next(it), nullptr);
    nftnl_expr_iter_destroy(it);
    nftnl_rule_free(parsed);
  }
}

}  // namespace
}  // namespace forkd::netfilter

#include "forkd/dns/answer_filter.h"

#include <string>
#include <vector>

#include "forkd/dns/test_messages.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forkd::dns {
namespace {

using testing::AnswerRecords;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using testing::MakeQuery;
using testing::MakeResponse;
using testing::ResponseSpec;

constexpr uint16_t kGuestId = 0x1234;
constexpr uint16_t kUpstreamId = 0xbeef;

struct Exchange {
  GuestQuery query;
  std::vector<uint8_t> upstream_query;
};

Exchange Ask(const std::string& name, ldns_rr_type type, bool edns = false) {
  auto q = ParseQuery(MakeQuery(name, type, kGuestId, edns));
  EXPECT_TRUE(q.ok()) << q.status();
  auto up = BuildUpstreamQuery(*q, kUpstreamId);
  EXPECT_TRUE(up.ok()) << up.status();
  return {std::move(*q), *up};
}

FilteredAnswer Filter(const Exchange& e, const ResponseSpec& spec, FilterLimits limits = {}) {
  auto out = FilterAnswer(e.query, kUpstreamId, MakeResponse(e.upstream_query, spec), limits);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? std::move(*out) : FilteredAnswer{};
}

netfilter::IpAddress Ip(const std::string& s) { return *netfilter::IpAddress::Parse(s); }

uint64_t Stripped(const FilteredAnswer& f, AddressClass c) {
  return f.stripped.by_class[static_cast<int>(c)];
}

TEST(AnswerFilter, PublicAddressIsReleasedAndPinnedForAtLeastMinPin) {
  const Exchange e = Ask("api.example.com", LDNS_RR_TYPE_A);
  const FilteredAnswer f = Filter(e, {.answer = {"api.example.com. 5 IN A 203.0.113.10",
                                                 "api.example.com. 300 IN A 203.0.113.11"}});
  ASSERT_EQ(f.kind, FilteredAnswer::Kind::kAnswer);
  EXPECT_THAT(f.pins, ElementsAre(AddressPin{Ip("203.0.113.10"), std::chrono::seconds(30)},
                                  AddressPin{Ip("203.0.113.11"), std::chrono::seconds(300)}));
  EXPECT_THAT(AnswerRecords(f.wire), ElementsAre("api.example.com. 5 IN A 203.0.113.10",
                                                 "api.example.com. 300 IN A 203.0.113.11"));
  // The guest's id and question, not the upstream's id.
  auto parsed = FromWire(f.wire.data(), f.wire.size());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(ldns_pkt_id(parsed->get()), kGuestId);
  EXPECT_TRUE(ldns_pkt_qr(parsed->get()));
}

TEST(AnswerFilter, RebindingAnswersAreStrippedWithTheirReason) {
  struct Case {
    ldns_rr_type type;
    std::string rdata;
    AddressClass reason;
  };
  const std::vector<Case> cases = {
      {LDNS_RR_TYPE_A, "10.0.0.5", AddressClass::kPrivate},
      {LDNS_RR_TYPE_A, "169.254.169.254", AddressClass::kMetadata},
      {LDNS_RR_TYPE_A, "127.0.0.1", AddressClass::kLoopback},
      {LDNS_RR_TYPE_A, "100.64.1.1", AddressClass::kCgnat},
      {LDNS_RR_TYPE_AAAA, "64:ff9b::a9fe:a9fe", AddressClass::kMetadata},
      {LDNS_RR_TYPE_AAAA, "64:ff9b::a00:5", AddressClass::kNat64Embedded},
      {LDNS_RR_TYPE_AAAA, "2002:a9fe:a9fe::1", AddressClass::kMetadata},
      {LDNS_RR_TYPE_AAAA, "2002:a00:5::1", AddressClass::k6to4Embedded},
      {LDNS_RR_TYPE_AAAA, "::ffff:169.254.169.254", AddressClass::kMetadata},
      {LDNS_RR_TYPE_AAAA, "fd00:ec2::254", AddressClass::kMetadata},
      {LDNS_RR_TYPE_AAAA, "fe80::1", AddressClass::kLinkLocal},
      {LDNS_RR_TYPE_AAAA, "fec0::1", AddressClass::kSiteLocal},
  };
  for (const Case& c : cases) {
    const bool v4 = c.type == LDNS_RR_TYPE_A;
    const Exchange e = Ask("api.example.com", c.type);
    const std::string type = v4 ? "A" : "AAAA";
    // Positive control in the same answer: a public address survives.
    const std::string good = v4 ? "203.0.113.10" : "2001:db8::10";
    const FilteredAnswer f = Filter(e, {.answer = {"api.example.com. 60 IN " + type + " " + c.rdata,
                                                   "api.example.com. 60 IN " + type + " " + good}});
    ASSERT_EQ(f.kind, FilteredAnswer::Kind::kAnswer) << c.rdata;
    EXPECT_EQ(Stripped(f, c.reason), 1u) << c.rdata;
    ASSERT_EQ(f.pins.size(), 1u) << c.rdata;
    EXPECT_EQ(f.pins[0].address, Ip(good)) << c.rdata;
    EXPECT_THAT(AnswerRecords(f.wire), ElementsAre("api.example.com. 60 IN " + type + " " + good))
        << c.rdata;
  }
}

TEST(AnswerFilter, CnameChainIsFollowedToAnyNameAndItsAddressesFiltered) {
  const Exchange e = Ask("www.example.com", LDNS_RR_TYPE_A);
  const FilteredAnswer f =
      Filter(e, {.answer = {"www.example.com. 60 IN CNAME edge.cdn.test.",
                            "edge.cdn.test. 60 IN CNAME e1.cdn.test.",
                            "e1.cdn.test. 20 IN A 198.51.100.7", "e1.cdn.test. 20 IN A 10.0.0.5",
                            // Not on the chain: a poisoning attempt for another name.
                            "bank.example.org. 60 IN A 198.51.100.99"}});
  ASSERT_EQ(f.kind, FilteredAnswer::Kind::kAnswer);
  EXPECT_THAT(AnswerRecords(f.wire), ElementsAre("www.example.com. 60 IN CNAME edge.cdn.test.",
                                                 "edge.cdn.test. 60 IN CNAME e1.cdn.test.",
                                                 "e1.cdn.test. 20 IN A 198.51.100.7"));
  EXPECT_THAT(f.pins, ElementsAre(AddressPin{Ip("198.51.100.7"), std::chrono::seconds(30)}));
  EXPECT_EQ(Stripped(f, AddressClass::kPrivate), 1u);
  EXPECT_EQ(f.stripped.off_chain, 1u);
}

TEST(AnswerFilter, RebindThroughCnameIsStripped) {
  const Exchange e = Ask("www.example.com", LDNS_RR_TYPE_A);
  const FilteredAnswer f = Filter(e, {.answer = {"www.example.com. 60 IN CNAME evil.test.",
                                                 "evil.test. 60 IN A 169.254.169.254"}});
  ASSERT_EQ(f.kind, FilteredAnswer::Kind::kAnswer);
  EXPECT_THAT(f.pins, IsEmpty());
  EXPECT_EQ(Stripped(f, AddressClass::kMetadata), 1u);
  EXPECT_THAT(AnswerRecords(f.wire), ElementsAre("www.example.com. 60 IN CNAME evil.test."));
}

TEST(AnswerFilter, AddressesOfTheQueriedNameBesideACnameAreOffChain) {
  // A record for the original name next to its CNAME: only the chain's end counts.
  const Exchange e = Ask("www.example.com", LDNS_RR_TYPE_A);
  const FilteredAnswer f = Filter(
      e, {.answer = {"www.example.com. 60 IN CNAME a.test.",
                     "www.example.com. 60 IN A 198.51.100.1", "a.test. 60 IN A 198.51.100.2"}});
  EXPECT_THAT(f.pins, ElementsAre(AddressPin{Ip("198.51.100.2"), std::chrono::seconds(60)}));
  EXPECT_EQ(f.stripped.off_chain, 1u);
}

TEST(AnswerFilter, CnameLoopYieldsNoAddress) {
  const Exchange e = Ask("a.example.com", LDNS_RR_TYPE_A);
  const FilteredAnswer f = Filter(
      e, {.answer = {"a.example.com. 60 IN CNAME b.test.", "b.test. 60 IN CNAME a.example.com.",
                     "a.example.com. 60 IN A 198.51.100.1", "b.test. 60 IN A 198.51.100.2"}});
  EXPECT_THAT(f.pins, IsEmpty());
}

TEST(AnswerFilter, AuthorityAndAdditionalGlueNeverReachTheGuest) {
  const Exchange e = Ask("api.example.com", LDNS_RR_TYPE_A);
  const FilteredAnswer f = Filter(e, {.answer = {"api.example.com. 60 IN A 203.0.113.10"},
                                      .additional = {"ns1.example.com. 60 IN A 10.0.0.1",
                                                     "api.example.com. 60 IN A 10.0.0.2"}});
  auto parsed = FromWire(f.wire.data(), f.wire.size());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(ldns_pkt_arcount(parsed->get()), 0u);
  EXPECT_EQ(ldns_pkt_nscount(parsed->get()), 0u);
  EXPECT_EQ(f.stripped.other_sections, 2u);
  EXPECT_EQ(f.pins.size(), 1u);
}

TEST(AnswerFilter, WrongTypeForTheQuestionIsOffChain) {
  const Exchange e = Ask("api.example.com", LDNS_RR_TYPE_AAAA);
  const FilteredAnswer f = Filter(e, {.answer = {"api.example.com. 60 IN A 203.0.113.10",
                                                 "api.example.com. 60 IN TXT \"hello\""}});
  EXPECT_THAT(f.pins, IsEmpty());
  EXPECT_EQ(f.stripped.off_chain, 2u);
}

TEST(AnswerFilter, TtlIsCappedAndDuplicatesPinnedOnce) {
  const Exchange e = Ask("api.example.com", LDNS_RR_TYPE_A);
  const FilteredAnswer f =
      Filter(e,
             {.answer = {"api.example.com. 86400 IN A 203.0.113.10",
                         "api.example.com. 40 IN A 203.0.113.10"}},
             FilterLimits{.min_pin = std::chrono::seconds(30), .max_ttl = 600});
  EXPECT_THAT(f.pins, ElementsAre(AddressPin{Ip("203.0.113.10"), std::chrono::seconds(600)}));
  EXPECT_THAT(AnswerRecords(f.wire), ElementsAre("api.example.com. 600 IN A 203.0.113.10",
                                                 "api.example.com. 40 IN A 203.0.113.10"));
}

TEST(AnswerFilter, AnswerIsTrimmedToTheGuestsUdpSizeAndOnlyReleasedAddressesPinned) {
  const Exchange e = Ask("api.example.com", LDNS_RR_TYPE_A);  // no EDNS: 512 bytes
  ResponseSpec spec;
  for (int i = 0; i < 60; ++i) {
    spec.answer.push_back("api.example.com. 60 IN A 198.51.100." + std::to_string(i));
  }
  const FilteredAnswer f = Filter(e, spec);
  ASSERT_EQ(f.kind, FilteredAnswer::Kind::kAnswer);
  EXPECT_LE(f.wire.size(), 512u);
  EXPECT_GT(f.stripped.too_large, 0u);
  EXPECT_EQ(f.pins.size(), AnswerRecords(f.wire).size());
  EXPECT_EQ(f.pins.size() + f.stripped.too_large, 60u);
  // With EDNS the guest takes all of them.
  const Exchange big = Ask("api.example.com", LDNS_RR_TYPE_A, /*edns=*/true);
  EXPECT_EQ(Filter(big, spec).pins.size(), 60u);
}

TEST(AnswerFilter, TruncatedAndFailedUpstreamAnswersAreReportedNotReleased) {
  const Exchange e = Ask("api.example.com", LDNS_RR_TYPE_A);
  EXPECT_EQ(Filter(e, {.truncated = true}).kind, FilteredAnswer::Kind::kTruncated);
  EXPECT_EQ(Filter(e, {.rcode = LDNS_RCODE_SERVFAIL}).kind, FilteredAnswer::Kind::kUpstreamError);
  EXPECT_EQ(Filter(e, {.rcode = LDNS_RCODE_REFUSED}).kind, FilteredAnswer::Kind::kUpstreamError);
  const FilteredAnswer nx = Filter(e, {.rcode = LDNS_RCODE_NXDOMAIN});
  EXPECT_EQ(nx.kind, FilteredAnswer::Kind::kAnswer);
  EXPECT_EQ(testing::Rcode(nx.wire), LDNS_RCODE_NXDOMAIN);
}

TEST(AnswerFilter, MismatchedOrMalformedUpstreamMessagesAreRejected) {
  const Exchange e = Ask("api.example.com", LDNS_RR_TYPE_A);
  const ResponseSpec spec{.answer = {"api.example.com. 60 IN A 203.0.113.10"}};
  // Positive control: the matching response is accepted.
  ASSERT_TRUE(FilterAnswer(e.query, kUpstreamId, MakeResponse(e.upstream_query, spec), {}).ok());
  // Another id (an off-path spoof guessing wrong).
  EXPECT_FALSE(
      FilterAnswer(e.query, kUpstreamId + 1, MakeResponse(e.upstream_query, spec), {}).ok());
  // Another question.
  const Exchange other = Ask("other.example.com", LDNS_RR_TYPE_A);
  auto other_up = BuildUpstreamQuery(other.query, kUpstreamId);
  ASSERT_TRUE(other_up.ok());
  EXPECT_FALSE(FilterAnswer(e.query, kUpstreamId,
                            MakeResponse(*other_up, {.answer = {"other.example.com. 60 IN A "
                                                                "203.0.113.10"}}),
                            {})
                   .ok());
  // A query, not a response.
  EXPECT_FALSE(FilterAnswer(e.query, kUpstreamId, e.upstream_query, {}).ok());
  // Garbage and truncation.
  std::vector<uint8_t> good = MakeResponse(e.upstream_query, spec);
  for (size_t cut = 0; cut < good.size(); ++cut) {
    std::vector<uint8_t> part(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut));
    EXPECT_FALSE(FilterAnswer(e.query, kUpstreamId, part, {}).ok()) << "cut at " << cut;
  }
}

TEST(GuestQueryTest, OnlyOneQuestionQueriesParseAndOnlyAllowlistedAOrAaaaForward) {
  auto list = NameAllowlist::Create({"*.example.com"});
  ASSERT_TRUE(list.ok());
  auto a = ParseQuery(MakeQuery("x.example.com", LDNS_RR_TYPE_A, 1));
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(ShouldForward(*a, *list));
  auto aaaa = ParseQuery(MakeQuery("X.Example.COM", LDNS_RR_TYPE_AAAA, 1));
  ASSERT_TRUE(aaaa.ok());
  EXPECT_TRUE(ShouldForward(*aaaa, *list));
  auto txt = ParseQuery(MakeQuery("x.example.com", LDNS_RR_TYPE_TXT, 1));
  ASSERT_TRUE(txt.ok());
  EXPECT_FALSE(ShouldForward(*txt, *list));
  auto other = ParseQuery(MakeQuery("x.example.org", LDNS_RR_TYPE_A, 1));
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(ShouldForward(*other, *list));
  // A response is not a query.
  const std::vector<uint8_t> q = MakeQuery("x.example.com", LDNS_RR_TYPE_A, 1);
  EXPECT_FALSE(ParseQuery(MakeResponse(q, {})).ok());
  EXPECT_FALSE(ParseQuery(std::vector<uint8_t>{1, 2, 3}).ok());
  // Refusals carry the guest's id and question.
  auto refused = BuildErrorAnswer(*other, LDNS_RCODE_REFUSED);
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(testing::Rcode(*refused), LDNS_RCODE_REFUSED);
}

}  // namespace
}  // namespace forkd::dns

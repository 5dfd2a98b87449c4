// Runs the answer filter's fuzz entry (answer_filter_fuzz.cc) over the
// in-tree corpus (fuzz_corpus/, seeds plus what libFuzzer found worth
// keeping) and over deterministic mutations of it, under the normal build.
// The entry traps on any broken promise, failing this test.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

#include "forkd/dns/answer_filter.h"
#include "forkd/dns/test_messages.h"
#include "gtest/gtest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace forkd::dns {
namespace {

std::vector<std::vector<uint8_t>> Corpus() {
  std::vector<std::vector<uint8_t>> out;
  for (const auto& entry : std::filesystem::directory_iterator(FORKD_DNS_FUZZ_CORPUS)) {
    std::ifstream f(entry.path(), std::ios::binary);
    out.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  return out;
}

void Fuzz(const std::vector<uint8_t>& input) { LLVMFuzzerTestOneInput(input.data(), input.size()); }

TEST(AnswerFilterFuzzRegression, CorpusIsPresentAndReachesTheFilter) {
  const auto corpus = Corpus();
  ASSERT_GE(corpus.size(), 8u) << "fuzz_corpus/ is missing or nearly empty";
  // The seeds must get past the id/question checks, or the corpus would only
  // ever exercise the refusal path.
  auto query = ParseQuery(testing::MakeQuery("www.example.com", LDNS_RR_TYPE_A, 0x4242));
  ASSERT_TRUE(query.ok());
  size_t accepted = 0;
  for (const auto& input : corpus) {
    Fuzz(input);
    if (input.size() < 2) continue;
    const uint16_t id = static_cast<uint16_t>((input[0] << 8) | input[1]);
    if (FilterAnswer(*query, id, input, {}).ok()) ++accepted;
  }
  EXPECT_GE(accepted, 4u);
}

TEST(AnswerFilterFuzzRegression, MutationsOfTheCorpus) {
  std::mt19937 rng(7);  // fixed seed: the same inputs every run
  for (const auto& seed : Corpus()) {
    for (int i = 0; i < 300; ++i) {
      std::vector<uint8_t> m = seed;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits && !m.empty(); ++e) {
        const size_t pos = rng() % m.size();
        switch (rng() % 4) {
          case 0:
            m[pos] ^= static_cast<uint8_t>(1u << (rng() % 8));
            break;
          case 1:
            m[pos] = static_cast<uint8_t>(rng());
            break;
          case 2:
            m.erase(m.begin() + static_cast<std::ptrdiff_t>(pos));
            break;
          default:
            m.insert(m.begin() + static_cast<std::ptrdiff_t>(pos), static_cast<uint8_t>(rng()));
        }
      }
      Fuzz(m);
    }
  }
  SUCCEED() << "the entry traps on any broken promise";
}

}  // namespace
}  // namespace forkd::dns

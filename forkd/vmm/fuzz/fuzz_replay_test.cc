// Runs each device harness (entries.h) over its in-tree corpus
// (corpus/<harness>/: the seeds plus what libFuzzer kept) and over
// deterministic mutations of it, in the normal build. A harness aborts on a
// broken promise, failing the test; under scripts/sanitize the same runs
// are checked by ASan and UBSan.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "forkd/vmm/fuzz/entries.h"
#include "gtest/gtest.h"

namespace forkd::vmm::fuzz {
namespace {

using Entry = int (*)(const uint8_t*, size_t);

std::vector<std::vector<uint8_t>> Corpus(const std::string& name) {
  std::vector<std::vector<uint8_t>> out;
  const std::filesystem::path dir = std::filesystem::path(FORKD_VMM_FUZZ_CORPUS) / name;
  if (!std::filesystem::is_directory(dir)) return out;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::ifstream f(entry.path(), std::ios::binary);
    out.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  return out;
}

// Byte flips, random bytes, deletions and insertions, a fixed number per
// corpus (the mutation count per input shrinks as the corpus grows).
void Mutations(const std::vector<std::vector<uint8_t>>& corpus, Entry entry) {
  std::mt19937 rng(11);  // fixed seed: the same inputs every run
  const size_t per_input = std::max<size_t>(4, 2000 / std::max<size_t>(1, corpus.size()));
  for (const auto& seed : corpus) {
    for (size_t i = 0; i < per_input; ++i) {
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
      entry(m.data(), m.size());
    }
  }
}

void Replay(const std::string& name, Entry entry) {
  const auto corpus = Corpus(name);
  ASSERT_GE(corpus.size(), 4u) << "corpus/" << name << " is missing or nearly empty";
  for (const auto& input : corpus) entry(input.data(), input.size());
  const Reached by_corpus = reached();
  Mutations(corpus, entry);
  reached() = by_corpus;
}

// Each replay also requires the corpus itself (before mutation) to reach
// the harness's checks on real results, not only the refusal paths.
TEST(VmmFuzzRegression, Mmio) {
  reached() = {};
  Replay("mmio", MmioOneInput);
  EXPECT_GT(reached().live_devices, 0u);
}
TEST(VmmFuzzRegression, Virtqueue) {
  reached() = {};
  Replay("virtqueue", VirtqueueOneInput);
  EXPECT_GT(reached().chains_popped, 0u);
}
TEST(VmmFuzzRegression, Vsock) {
  reached() = {};
  Replay("vsock", VsockOneInput);
  EXPECT_GT(reached().vsock_rx_packets, 0u);
  EXPECT_GT(reached().vsock_drained, 0u);
}
TEST(VmmFuzzRegression, Net) {
  reached() = {};
  Replay("net", NetOneInput);
  EXPECT_GT(reached().net_tx_frames, 0u);
  EXPECT_GT(reached().net_rx_frames, 0u);
}
TEST(VmmFuzzRegression, EmptyAndTinyInputs) {
  for (Entry e : {MmioOneInput, VirtqueueOneInput, VsockOneInput, NetOneInput}) {
    e(nullptr, 0);
    const uint8_t one = 0xff;
    e(&one, 1);
  }
}

}  // namespace
}  // namespace forkd::vmm::fuzz

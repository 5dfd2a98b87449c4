// Runs the fuzz entry (state_fuzz_entry.h) over a deterministic mutated corpus in the normal
// build, so CI exercises the parser's refusal paths without clang/libFuzzer. The CMake file also
// builds this test with AddressSanitizer + UBSan when the compiler supports them, so an
// over-read here fails the test instead of passing silently.
#include <random>
#include <string>
#include <vector>

#include "forkd/snapshot/manifest.h"
#include "forkd/snapshot/state_format.h"
#include "forkd/snapshot/state_fuzz_entry.h"
#include "forkd/snapshot/test_states.h"
#include "gtest/gtest.h"

namespace forkd::snapshot {
namespace {

struct Tally {
  size_t accepted = 0;
  size_t refused = 0;
};

// Runs the entry (which aborts on a broken property) and records whether the parser accepted.
void FuzzOne(const std::vector<uint8_t>& input, Tally& t) {
  FuzzSnapshotInput(input.data(), input.size());
  (ParseState(input).ok() ? t.accepted : t.refused)++;
}

std::vector<std::vector<uint8_t>> Seeds() {
  std::vector<std::vector<uint8_t>> seeds;
  seeds.push_back(*SerializeState(testing::MinimalState()));
  seeds.push_back(*SerializeState(testing::RandomState(1, 1, 0)));
  seeds.push_back(*SerializeState(testing::RandomState(2, 4, 5)));
  return seeds;
}

TEST(StateFuzzRegression, SingleBitFlipsAtEveryByte) {
  const std::vector<uint8_t> seed = *SerializeState(testing::MinimalState());
  Tally t;
  for (size_t i = 0; i < seed.size(); ++i) {
    std::vector<uint8_t> m = seed;
    m[i] ^= static_cast<uint8_t>(1u << (i % 8));
    FuzzOne(m, t);
  }
  // Flips in raw kvm struct bytes are legal states; flips in lengths, tags and counts are not.
  // Both outcomes must occur or the corpus is not exercising what it claims.
  EXPECT_GT(t.accepted, seed.size() / 2);
  EXPECT_GT(t.refused, 20u);
}

TEST(StateFuzzRegression, EveryBitOfTheFramingIsChecked) {
  // File header, HEADER section header, and the VM section header: every single-bit change in
  // magic, version, reserved, tag or length must be refused (flags bit 0 is the only legal
  // change: it turns a known section optional, which we still parse).
  const std::vector<uint8_t> seed = *SerializeState(testing::MinimalState());
  std::vector<size_t> offsets;
  for (size_t i = 0; i < 16; ++i) offsets.push_back(i);
  for (SectionTag tag : {SectionTag::kHeader, SectionTag::kVm, SectionTag::kEnd}) {
    const size_t h = testing::FindSection(seed, tag).header_offset;
    for (size_t i = 0; i < 16; ++i) {
      if (i != 4) offsets.push_back(h + i);  // skip the flags' low byte
    }
  }
  for (size_t at : offsets) {
    for (int bit = 0; bit < 8; ++bit) {
      std::vector<uint8_t> m = seed;
      m[at] ^= static_cast<uint8_t>(1u << bit);
      FuzzSnapshotInput(m.data(), m.size());
      EXPECT_FALSE(ParseState(m).ok()) << "offset " << at << " bit " << bit;
    }
  }
}

TEST(StateFuzzRegression, RandomMutationsOfSeveralSeeds) {
  std::mt19937_64 rng(20261122);
  const uint64_t interesting[] = {
      0,      1,          4,          5,        0x7f,         0xff,
      0xffff, 0xffffffff, 0x80000000, kMaxMsrs, kMaxMsrs + 1, kMaxSectionBytes,
      ~0ull};
  Tally t;
  for (const std::vector<uint8_t>& seed : Seeds()) {
    for (int iter = 0; iter < 1500; ++iter) {
      std::vector<uint8_t> m = seed;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits && !m.empty(); ++e) {
        const size_t at = rng() % m.size();
        switch (rng() % 5) {
          case 0:
            m[at] = static_cast<uint8_t>(rng());
            break;
          case 1: {  // an interesting integer over 4 or 8 bytes
            const uint64_t v = interesting[rng() % std::size(interesting)];
            const size_t w = (rng() % 2) ? 4 : 8;
            for (size_t k = 0; k < w && at + k < m.size(); ++k) m[at + k] = uint8_t(v >> (8 * k));
            break;
          }
          case 2:  // cut
            m.resize(at);
            break;
          case 3:  // delete a run
            m.erase(m.begin() + static_cast<long>(at),
                    m.begin() + static_cast<long>(std::min(m.size(), at + 1 + rng() % 64)));
            break;
          case 4: {  // duplicate a run (repeats sections, shifts lengths)
            const size_t n = std::min<size_t>(m.size() - at, 1 + rng() % 128);
            std::vector<uint8_t> run(m.begin() + static_cast<long>(at),
                                     m.begin() + static_cast<long>(at + n));
            m.insert(m.begin() + static_cast<long>(rng() % m.size()), run.begin(), run.end());
            break;
          }
        }
      }
      FuzzOne(m, t);
    }
  }
  EXPECT_GT(t.accepted, 0u);
  EXPECT_GT(t.refused, 1000u);
}

TEST(StateFuzzRegression, ManifestMutations) {
  Manifest m;
  m.format_version = kFormatVersion;
  m.chunk_size = 4096;
  m.memory_size = 3 * 4096;
  m.memory_chunks.resize(3);
  const std::string seed = SerializeManifest(m);
  ASSERT_TRUE(ParseManifest(seed).ok());
  const size_t magic_line = seed.find('\n') + 1;
  size_t refused = 0;
  for (size_t i = 0; i < seed.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string x = seed;
      x[i] = static_cast<char>(x[i] ^ (1 << bit));
      FuzzSnapshotInput(reinterpret_cast<const uint8_t*>(x.data()), x.size());
      const bool ok = ParseManifest(x).ok();
      if (!ok) ++refused;
      if (i < magic_line) {
        EXPECT_FALSE(ok) << "magic line byte " << i << " bit " << bit;
      }
    }
  }
  // Some flips yield another valid manifest (a digest digit '0'->'1', memory_size 12288->12280)
  // and are checked only for the round-trip property; most change syntax or break a
  // cross-field rule (chunk_size power of two, chunk count, chunk index) and must be refused.
  EXPECT_GT(refused, seed.size() * 8 / 2);
}

}  // namespace
}  // namespace forkd::snapshot

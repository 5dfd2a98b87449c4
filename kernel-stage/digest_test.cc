#include "kernel-stage/digest.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "tests/support/temp_dir.h"

namespace forkd::kernel_stage {
namespace {

using ::testing::HasSubstr;

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// FIPS 180-2 test vectors.
TEST(DigestTest, KnownVectors) {
  EXPECT_EQ(HexDigest(Sha256(Bytes("abc"))),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(HexDigest(EmptySha256()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256Hasher h;  // the same vector fed in pieces
  h.Update(Bytes("a"));
  h.Update(Bytes(""));
  h.Update(Bytes("bc"));
  EXPECT_EQ(h.Final(), Sha256(Bytes("abc")));
}

TEST(DigestTest, HashFileStreamsAcrossReadChunks) {
  testing::TempDir dir;
  std::vector<uint8_t> data(3 * (1 << 20) + 12345);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 2654435761u >> 13);
  const std::string path = (dir.path() / "f").string();
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  auto got = HashFile(path);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, Sha256(data));
  // Positive control: one flipped byte changes the digest.
  data[2 * (1 << 20)] ^= 1;
  EXPECT_NE(*got, Sha256(data));
}

TEST(DigestTest, HashFileErrorsNameThePath) {
  auto missing = HashFile("/nonexistent/forkd-kernel");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("/nonexistent/forkd-kernel"));
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("ENOENT"));
  testing::TempDir dir;
  auto directory = HashFile(dir.path().string());
  ASSERT_FALSE(directory.ok());
  EXPECT_THAT(std::string(directory.status().message()), HasSubstr("not a regular file"));
}

TEST(DigestTest, HexRoundTripAndStrictParse) {
  const Sha256Digest d = Sha256(Bytes("forkd"));
  const std::string hex = HexDigest(d);
  ASSERT_EQ(hex.size(), 64u);
  auto back = ParseSha256Hex(hex);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, d);
  std::string upper = hex;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  auto up = ParseSha256Hex(upper);
  ASSERT_TRUE(up.ok()) << up.status();
  EXPECT_EQ(*up, d);

  for (const std::string& bad :
       {hex.substr(0, 63), hex + "0", std::string(), " " + hex.substr(1), hex.substr(0, 63) + "g",
        "sha256:" + hex.substr(7), hex.substr(0, 62) + "\n0"}) {
    auto r = ParseSha256Hex(bad);
    EXPECT_FALSE(r.ok()) << "accepted '" << bad << "'";
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("64 hex characters"));
  }
}

}  // namespace
}  // namespace forkd::kernel_stage

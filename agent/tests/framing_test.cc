#include "agent/framing.h"

#include <thread>

#include "agent/tests/test_util.h"
#include "gtest/gtest.h"

namespace forkd::agent {
namespace {

using testing::FrameHeader;
using testing::SocketPair;
using testing::Soon;

TEST(FramingTest, RoundTripsFramesOfManySizes) {
  auto [a, b] = SocketPair();
  // Larger than a socket buffer, so both sides must loop on short I/O.
  for (size_t size : {size_t{0}, size_t{1}, size_t{4096}, size_t{3} << 20}) {
    std::string payload(size, '\0');
    for (size_t i = 0; i < size; ++i) payload[i] = static_cast<char>(i * 7);
    std::thread writer(
        [&, fd = a.get()] { EXPECT_TRUE(WriteFrame(fd, payload, Soon(), kMaxFrameBytes).ok()); });
    auto got = ReadFrame(b.get(), Soon(), kMaxFrameBytes);
    writer.join();
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, payload) << "size " << size;
  }
}

TEST(FramingTest, RefusesOversizeLengthBeforeReadingTheBody) {
  auto [a, b] = SocketPair();
  // Only a header, claiming 4 GiB: must be refused on the header alone.
  ASSERT_TRUE(WriteAll(a.get(), FrameHeader(0xFFFFFFFFu), Soon()).ok());
  auto got = ReadFrame(b.get(), Soon(), kMaxFrameBytes);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kResourceExhausted) << got.status();
}

TEST(FramingTest, WriteRefusesOversizePayloadAndSendsNothing) {
  auto [a, b] = SocketPair();
  EXPECT_EQ(WriteFrame(a.get(), std::string(101, 'x'), Soon(), 100).code(),
            absl::StatusCode::kResourceExhausted);
  a.reset();
  auto got = ReadFrame(b.get(), Soon(), kMaxFrameBytes);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(got.status().message(), "connection closed");
}

TEST(FramingTest, CleanCloseAndTruncationAreBothUnavailableButDistinct) {
  {
    auto [a, b] = SocketPair();
    a.reset();
    auto got = ReadFrame(b.get(), Soon(), kMaxFrameBytes);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(got.status().message(), "connection closed");
  }
  {
    auto [a, b] = SocketPair();
    ASSERT_TRUE(WriteAll(a.get(), FrameHeader(100) + "only ten b", Soon()).ok());
    a.reset();
    auto got = ReadFrame(b.get(), Soon(), kMaxFrameBytes);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_NE(got.status().message().find("truncated"), absl::string_view::npos) << got.status();
  }
  {
    auto [a, b] = SocketPair();
    ASSERT_TRUE(WriteAll(a.get(), std::string("\0\0", 2), Soon()).ok());  // half a header
    a.reset();
    auto got = ReadFrame(b.get(), Soon(), kMaxFrameBytes);
    EXPECT_NE(got.status().message().find("truncated"), absl::string_view::npos) << got.status();
  }
}

TEST(FramingTest, TimesOutWhenNothingArrives) {
  auto [a, b] = SocketPair();
  auto got = ReadFrame(b.get(), DeadlineIn(std::chrono::milliseconds(50)), kMaxFrameBytes);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDeadlineExceeded) << got.status();
}

TEST(FramingTest, TimesOutOnAFrameThatStopsHalfway) {
  auto [a, b] = SocketPair();
  ASSERT_TRUE(WriteAll(a.get(), FrameHeader(100) + "partial", Soon()).ok());
  auto got = ReadFrame(b.get(), DeadlineIn(std::chrono::milliseconds(50)), kMaxFrameBytes);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDeadlineExceeded) << got.status();
}

TEST(FramingTest, WriteToAClosedPeerIsUnavailableNotSigpipe) {
  auto [a, b] = SocketPair();
  b.reset();
  EXPECT_EQ(WriteFrame(a.get(), "hello", Soon(), kMaxFrameBytes).code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace forkd::agent

#include "common/errno_status.h"

#include <cerrno>

#include "gtest/gtest.h"

namespace forkd {
namespace {

TEST(ErrnoStatus, CarriesNameContextAndCode) {
  absl::Status s = ErrnoStatus(EEXIST, "add tap sbt3");
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(s.message(), "add tap sbt3: EEXIST (File exists)");
}

TEST(ErrnoStatus, PermissionMapsToPermissionDenied) {
  EXPECT_EQ(ErrnoStatus(EPERM, "x").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ErrnoStatus(ENOENT, "x").code(), absl::StatusCode::kNotFound);
}

TEST(Annotate, PrefixesAndKeepsCode) {
  absl::Status s = Annotate(absl::InvalidArgumentError("bad cidr"), "policy sbt3");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "policy sbt3: bad cidr");
  EXPECT_TRUE(Annotate(absl::OkStatus(), "x").ok());
}

absl::StatusOr<int> Half(int v) {
  if (v % 2 != 0) return absl::InvalidArgumentError("odd");
  return v / 2;
}

absl::StatusOr<int> Quarter(int v) {
  FORKD_ASSIGN_OR_RETURN(int h, Half(v));
  FORKD_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(Macros, AssignOrReturnPropagates) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().message(), "odd");
}

}  // namespace
}  // namespace forkd

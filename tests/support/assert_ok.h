// ASSERT_OK(expr): fails the test with the status when `expr` (an absl::Status
// or absl::StatusOr) is not OK.
#pragma once

#include "gtest/gtest.h"

#define ASSERT_OK(expr)                          \
  do {                                           \
    const auto& s_ = (expr);                     \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_; \
  } while (0)

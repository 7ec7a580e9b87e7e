#include "core/status.h"

#include <gtest/gtest.h>

namespace gsa {

static Result<int> parse_positive(int v) {
  if (v <= 0) return invalid_argument("expected a positive value, got {}", v);
  return v;
}

static Status use(int v, int* out) {
  GSA_ASSIGN_OR_RETURN(*out, parse_positive(v));
  return Status::ok();
}

TEST(Status, CarriesCodeAndMessage) {
  Status s = invalid_argument("tensor '{}': expected [{}], got [{}]", "w", 4, 5);
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), StatusCode::InvalidArgument);
  EXPECT_EQ(s.to_string(), "InvalidArgument: tensor 'w': expected [4], got [5]");
  EXPECT_EQ(s.with_context("m.gguf").message(), "m.gguf: tensor 'w': expected [4], got [5]");
}

TEST(Result, PropagatesErrorsAndValues) {
  int out = 0;
  EXPECT_TRUE(use(3, &out).is_ok());
  EXPECT_EQ(out, 3);
  Status s = use(-1, &out);
  EXPECT_EQ(s.code(), StatusCode::InvalidArgument);
  EXPECT_EQ(out, 3);
}

TEST(Result, OkStatusIsNotAValue) {
  Result<int> r{Status::ok()};
  EXPECT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::Internal);
}

}  // namespace gsa

// Status and Result<T>: the error currency of gsa. Every public function that can fail on
// input returns one of these; messages are built from facts ("tensor 'x': expected [a], got [b]").
// Deliberately no exceptions across module boundaries.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace gsa {

enum class StatusCode { Ok, InvalidArgument, NotFound, Unsupported, OutOfMemory, Io, Internal };

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }
  bool is_ok() const { return code_ == StatusCode::Ok; }
  explicit operator bool() const { return is_ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  /// "InvalidArgument: message", for logs and the CLI's one-line errors.
  std::string to_string() const;
  /// Prefixes context: Status("x").with_context("loading m.gguf") -> "loading m.gguf: x".
  Status with_context(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::Ok;
  std::string message_;
};

template <typename... Args>
Status invalid_argument(fmt::format_string<Args...> f, Args&&... args) {
  return {StatusCode::InvalidArgument, fmt::format(f, std::forward<Args>(args)...)};
}
template <typename... Args>
Status not_found(fmt::format_string<Args...> f, Args&&... args) {
  return {StatusCode::NotFound, fmt::format(f, std::forward<Args>(args)...)};
}
template <typename... Args>
Status unsupported(fmt::format_string<Args...> f, Args&&... args) {
  return {StatusCode::Unsupported, fmt::format(f, std::forward<Args>(args)...)};
}
template <typename... Args>
Status out_of_memory(fmt::format_string<Args...> f, Args&&... args) {
  return {StatusCode::OutOfMemory, fmt::format(f, std::forward<Args>(args)...)};
}
template <typename... Args>
Status io_error(fmt::format_string<Args...> f, Args&&... args) {
  return {StatusCode::Io, fmt::format(f, std::forward<Args>(args)...)};
}
template <typename... Args>
Status internal_error(fmt::format_string<Args...> f, Args&&... args) {
  return {StatusCode::Internal, fmt::format(f, std::forward<Args>(args)...)};
}

/// A value or the Status explaining why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    if (status_.is_ok()) status_ = Status(StatusCode::Internal, "Result built from an ok Status");
  }
  bool is_ok() const { return value_.has_value(); }
  explicit operator bool() const { return is_ok(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

[[noreturn]] void assert_fail(const char* expr, const char* file, int line, const char* msg);

}  // namespace gsa

/// Invariant check that stays on in release builds. Never for input validation: input that can
/// reach one of these is a bug, and that path must return a Status instead.
#define GSA_ASSERT(cond, ...)                                                        \
  do {                                                                               \
    if (!(cond)) ::gsa::assert_fail(#cond, __FILE__, __LINE__, "" __VA_ARGS__);      \
  } while (0)

#define GSA_CONCAT_INNER(a, b) a##b
#define GSA_CONCAT(a, b) GSA_CONCAT_INNER(a, b)

/// Returns early from the enclosing function when `expr` (a Status) is not ok.
#define GSA_RETURN_IF_ERROR(expr)                  \
  do {                                             \
    ::gsa::Status gsa_status_ = (expr);            \
    if (!gsa_status_.is_ok()) return gsa_status_;  \
  } while (0)

#define GSA_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.is_ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

/// `GSA_ASSIGN_OR_RETURN(auto x, f());` binds the value of a Result or returns its Status.
#define GSA_ASSIGN_OR_RETURN(lhs, expr) \
  GSA_ASSIGN_OR_RETURN_IMPL(GSA_CONCAT(gsa_result_, __LINE__), lhs, expr)

// Status formatting and the GSA_ASSERT failure path.
#include "core/status.h"

namespace gsa {

const char* status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::Ok: return "Ok";
    case StatusCode::InvalidArgument: return "InvalidArgument";
    case StatusCode::NotFound: return "NotFound";
    case StatusCode::Unsupported: return "Unsupported";
    case StatusCode::OutOfMemory: return "OutOfMemory";
    case StatusCode::Io: return "Io";
    case StatusCode::Internal: return "Internal";
  }
  return "Unknown";
}

std::string Status::to_string() const {
  if (is_ok()) return "Ok";
  return fmt::format("{}: {}", status_code_name(code_), message_);
}

Status Status::with_context(const std::string& context) const {
  if (is_ok()) return *this;
  return Status(code_, context + ": " + message_);
}

void assert_fail(const char* expr, const char* file, int line, const char* msg) {
  std::fprintf(stderr, "gsa: internal invariant failed: %s at %s:%d %s\n", expr, file, line, msg);
  std::abort();
}

}  // namespace gsa

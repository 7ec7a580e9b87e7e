// libFuzzer target for the GSA config parser (sparse::parse_sparse_config_json, the parser of
// --sparse-config files): arbitrary bytes either fail with a status or give a config that
// validates, whose to_json parses back to the same JSON text.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "sparse/sparse_config.h"

namespace {

void check(bool cond) {
  if (!cond) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto cfg = gsa::sparse::parse_sparse_config_json(text);
  if (!cfg.is_ok()) {
    check(!cfg.status().message().empty());
    return 0;
  }
  check(gsa::sparse::validate(*cfg).is_ok());
  const std::string json = gsa::sparse::to_json(*cfg);
  auto again = gsa::sparse::parse_sparse_config_json(json);
  check(again.is_ok());
  check(gsa::sparse::to_json(*again) == json);
  return 0;
}

// Writes a tiny model GGUF whose general.name holds non-printable bytes (an escape sequence, a
// bell, a lone 0xff) beside printable ASCII and UTF-8, for the `gsa info` case
// of cli_cases.sh. The name is replaced in place by one of the same length, so the file stays
// valid. Usage: odd_metadata_gguf OUT.gguf
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "tiny_model.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: odd_metadata_gguf OUT.gguf\n");
    return 2;
  }
  std::vector<uint8_t> bytes = gsa::testing::make_tiny_model({});
  const std::string from = "tiny-llama";
  // 10 bytes like "tiny-llama": "ok", ESC "[1m", U+00E9 (2 bytes), BEL, a lone 0xff.
  const std::string to = "ok\x1b[1m\xc3\xa9\x07\xff";
  const auto at = std::search(bytes.begin(), bytes.end(), from.begin(), from.end());
  if (at == bytes.end() || to.size() != from.size()) {
    std::fprintf(stderr, "odd_metadata_gguf: general.name 'tiny-llama' not found\n");
    return 1;
  }
  std::copy(to.begin(), to.end(), at);
  std::FILE* f = std::fopen(argv[1], "wb");
  if (!f || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fclose(f) != 0) {
    std::fprintf(stderr, "odd_metadata_gguf: cannot write %s\n", argv[1]);
    return 1;
  }
  return 0;
}

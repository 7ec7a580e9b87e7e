// Pre-tokenization: splits text into the pieces that BPE encodes independently, with the regex
// list of each supported `tokenizer.ggml.pre` (PCRE2, UTF + Unicode properties, JIT when
// available). It does not know about special tokens (the tokenizer cuts those out first) or BPE.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace gsa::tokenizer {

/// A half-open byte range [begin, end) of the text given to PreTokenizer::split.
struct Span {
  uint32_t begin = 0;
  uint32_t end = 0;
};

/// The pre-tokenizer pattern lists gsa knows; each applies its regexes in order, every regex
/// splitting each current piece into its matches and the unmatched text between them.
class PreTokenizer {
 public:
  /// Compiles the regexes for a `tokenizer.ggml.pre` value ("smollm", "qwen2", "llama-bpe",
  /// "gpt2", "default", and their aliases). Unknown names give Unsupported naming the value.
  static Result<std::shared_ptr<const PreTokenizer>> create(std::string_view pre);

  /// The regex list used for `pre`, or an empty list when `pre` is unknown.
  static std::vector<std::string> patterns_for(std::string_view pre);

  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  /// Appends the pieces of `text` to *out, in order, covering every byte exactly once. Text that
  /// is not valid UTF-8 is accepted: each invalid byte takes part in matching as U+FFFD and comes
  /// back as its own byte. Fails only on a regex engine error (reported as Internal) or on text
  /// of 4 GiB or more.
  Status split(std::string_view text, std::vector<Span>* out) const;

 private:
  PreTokenizer() = default;
  struct Regex;
  Status split_valid(std::string_view text, std::vector<Span>* out) const;
  std::vector<std::unique_ptr<Regex>> regexes_;
};

}  // namespace gsa::tokenizer

// A tiny byte-level BPE vocabulary for tests and the fuzz target: the 256 byte tokens, a few
// merges with known ranks, control tokens and one user-defined token. Downloads nothing.
#pragma once

#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace gsa::tokenizer::testing {

/// Control tokens first (ids 0..3), a user-defined token (id 4), then the 256 bytes (ids 5..260,
/// byte b has id 5 + b), then one token per merge, in merge order.
inline TokenizerData synthetic_vocab(const std::string& pre = "gpt2") {
  TokenizerData d;
  d.pre = pre;
  const std::vector<std::pair<std::string, int32_t>> specials = {
      {"<|endoftext|>", 3}, {"<|im_start|>", 3}, {"<|im_end|>", 3}, {"<|im_start|>x", 3},
      {"<tool>", 4}};
  for (const auto& [text, type] : specials) {
    d.tokens.push_back(text);
    d.token_types.push_back(type);
  }
  for (int b = 0; b < 256; ++b) {
    d.tokens.push_back(byte_level_encode(std::string(1, static_cast<char>(b))));
    d.token_types.push_back(1);
  }
  // Merges in byte-level spelling ("Ġ" is a space); each adds the joined token.
  const std::vector<std::string> merges = {
      "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "a b",
      "b c", "Ġ Ġ", "ĠĠ ĠĠ", "1 2", "Ã ©", "ð Ł", "ðŁ ĺ", "ðŁĺ Ģ", "' s"};
  for (const std::string& m : merges) {
    d.merges.push_back(m);
    const size_t sp = m.find(' ');
    d.tokens.push_back(m.substr(0, sp) + m.substr(sp + 1));
    d.token_types.push_back(1);
  }
  d.bos_id = 1;
  d.eos_id = 2;
  d.chat_template = "chatml";
  return d;
}

/// Id of byte b in synthetic_vocab().
inline int32_t byte_id(unsigned char b) { return 5 + static_cast<int32_t>(b); }

}  // namespace gsa::tokenizer::testing

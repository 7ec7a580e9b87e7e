// Test helper: builds a tiny synthetic llama/qwen2/qwen3 GGUF in memory (random F32/F16/Q8_0
// weights, a byte-level BPE vocabulary with a few merges and ChatML special tokens), so engine
// and model tests run without downloading anything.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gsa::testing {

struct TinyModelSpec {
  std::string arch = "llama";  // llama | qwen2 | qwen3
  int n_layers = 2;
  int dim = 32;
  int n_heads = 4;
  int n_kv_heads = 2;
  int ffn_dim = 48;
  int ctx_len = 512;
  bool tied = true;
  uint64_t seed = 1;
};

/// The GGUF bytes of a tiny model. Vocabulary: 256 byte tokens, merges of common English
/// pairs, then <|endoftext|> (eos), <|im_start|>, <|im_end|>.
std::vector<uint8_t> make_tiny_model(const TinyModelSpec& spec);
/// Writes make_tiny_model(spec) to a fresh temporary file and returns its path.
std::string write_tiny_model(const TinyModelSpec& spec, const std::string& name);

}  // namespace gsa::testing

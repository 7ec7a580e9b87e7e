// Reads TokenizerData from a GGUF file's metadata (tokenizer.ggml.*, tokenizer.chat_template),
// applying llama.cpp's defaults where keys are absent. Validation happens in from_data.
#include <string>

#include "core/log.h"
#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

namespace gsa::tokenizer {
namespace {

bool is_llama3_family(std::string_view pre) {
  for (std::string_view p : {"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"}) {
    if (pre == p) return true;
  }
  return false;
}

// Optional keys: absent gives `fallback`; present with the wrong type is an error.
Result<std::string> opt_string(const gguf::GgufFile& f, std::string_view key,
                               std::string fallback) {
  if (f.find(key) == nullptr) return fallback;
  return f.get_string(key);
}

Result<bool> opt_bool(const gguf::GgufFile& f, std::string_view key, bool fallback) {
  if (f.find(key) == nullptr) return fallback;
  return f.get_bool(key);
}

// A special token id; absent, or out of range for the vocabulary (llama.cpp ignores those
// too, with a warning), gives -1.
Result<int32_t> opt_token_id(const gguf::GgufFile& f, std::string_view key, size_t n_vocab) {
  if (f.find(key) == nullptr) return int32_t{-1};
  GSA_ASSIGN_OR_RETURN(const uint32_t id, f.get_u32(key));
  if (id >= n_vocab) {
    log_warn("{} = {} is out of range for {} tokens; ignored", key, id, n_vocab);
    return int32_t{-1};
  }
  return static_cast<int32_t>(id);
}

}  // namespace

Result<TokenizerData> Tokenizer::read_gguf(const gguf::GgufFile& f) {
  TokenizerData d;
  if (f.find("tokenizer.ggml.model") == nullptr) {
    return not_found("the file has no tokenizer (no tokenizer.ggml.model key)");
  }
  GSA_ASSIGN_OR_RETURN(d.model, f.get_string("tokenizer.ggml.model"));
  GSA_ASSIGN_OR_RETURN(d.pre, opt_string(f, "tokenizer.ggml.pre", "default"));
  GSA_ASSIGN_OR_RETURN(d.tokens, f.get_string_array("tokenizer.ggml.tokens"));
  if (f.find("tokenizer.ggml.token_type") != nullptr) {
    GSA_ASSIGN_OR_RETURN(d.token_types, f.get_i32_array("tokenizer.ggml.token_type"));
  }
  if (f.find("tokenizer.ggml.merges") != nullptr) {
    GSA_ASSIGN_OR_RETURN(d.merges, f.get_string_array("tokenizer.ggml.merges"));
  }
  const size_t n = d.tokens.size();
  GSA_ASSIGN_OR_RETURN(d.bos_id, opt_token_id(f, "tokenizer.ggml.bos_token_id", n));
  GSA_ASSIGN_OR_RETURN(d.eos_id, opt_token_id(f, "tokenizer.ggml.eos_token_id", n));
  GSA_ASSIGN_OR_RETURN(d.eot_id, opt_token_id(f, "tokenizer.ggml.eot_token_id", n));
  GSA_ASSIGN_OR_RETURN(d.pad_id, opt_token_id(f, "tokenizer.ggml.padding_token_id", n));
  const bool llama3 = is_llama3_family(d.pre);
  d.ignore_merges = llama3;
  GSA_ASSIGN_OR_RETURN(d.add_bos, opt_bool(f, "tokenizer.ggml.add_bos_token", llama3));
  GSA_ASSIGN_OR_RETURN(d.add_eos, opt_bool(f, "tokenizer.ggml.add_eos_token", false));
  if (d.add_bos && d.bos_id < 0) d.add_bos = false;
  if (d.add_eos && d.eos_id < 0) d.add_eos = false;
  GSA_ASSIGN_OR_RETURN(d.chat_template, opt_string(f, "tokenizer.chat_template", ""));
  return d;
}

Result<Tokenizer> Tokenizer::from_gguf(const gguf::GgufFile& f) {
  GSA_ASSIGN_OR_RETURN(TokenizerData d, read_gguf(f));
  return from_data(std::move(d));
}

}  // namespace gsa::tokenizer

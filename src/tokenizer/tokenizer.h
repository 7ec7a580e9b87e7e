// Byte-level BPE tokenizer (GPT-2 family: SmolLM2, Qwen2, Llama 3) built from a plain
// TokenizerData, or from a GGUF file's tokenizer.ggml.* metadata. Encoding, decoding, a
// streaming UTF-8-safe detokenizer, and native rendering of the supported chat templates.
// Not here: SentencePiece/WordPiece vocabularies, and any general Jinja engine.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace gsa::gguf {
class GgufFile;
}

namespace gsa::tokenizer {

class PreTokenizer;
struct BpeTables;

/// Token types as GGUF stores them (tokenizer.ggml.token_type).
enum class TokenType : int32_t {
  Undefined = 0,
  Normal = 1,
  Unknown = 2,
  Control = 3,      // special tokens (<|im_start|>): matched in text only with parse_special
  UserDefined = 4,  // added tokens: always matched in text, always decoded as their text
  Unused = 5,
  Byte = 6,
};

/// Everything a tokenizer is built from, as plain data (the GGUF keys in brackets).
struct TokenizerData {
  std::string model = "gpt2";                // [tokenizer.ggml.model]; only "gpt2" is supported
  std::string pre = "default";               // [tokenizer.ggml.pre]
  std::vector<std::string> tokens;           // [n_vocab] byte-level text ("Ġ" is a space);
                                             // control/user-defined tokens as plain text
  std::vector<int32_t> token_types;          // [n_vocab] TokenType values; empty: all Normal
  std::vector<std::string> merges;           // [n_merges] "left right", highest priority first
  int32_t bos_id = -1;                       // [tokenizer.ggml.bos_token_id]; -1: none
  int32_t eos_id = -1;                       // [tokenizer.ggml.eos_token_id]
  int32_t eot_id = -1;                       // [tokenizer.ggml.eot_token_id]
  int32_t pad_id = -1;                       // [tokenizer.ggml.padding_token_id]
  bool add_bos = false;                      // [tokenizer.ggml.add_bos_token]
  bool add_eos = false;                      // [tokenizer.ggml.add_eos_token]
  bool ignore_merges = false;                // a whole piece found in the vocabulary wins (Llama 3)
  std::string chat_template;                 // [tokenizer.chat_template]; may be empty
};

/// One chat message. Roles: "system", "user", "assistant" ("tool" where the template has it).
struct ChatMessage {
  std::string role;
  std::string content;
};

/// Immutable after construction; every const method is safe to call from many threads.
/// Copies share the compiled regexes and the word cache.
class Tokenizer {
 public:
  /// Validates the data (sizes, types, ids in range, merges) and builds the lookup tables. Bad data gives InvalidArgument, an unknown pre-tokenizer Unsupported.
  static Result<Tokenizer> from_data(TokenizerData data);
  /// Reads TokenizerData from the tokenizer.ggml.* / tokenizer.chat_template metadata.
  static Result<Tokenizer> from_gguf(const gguf::GgufFile& file);
  /// Only the metadata reading part of from_gguf (tools and tests).
  static Result<TokenizerData> read_gguf(const gguf::GgufFile& file);

  /// Encodes text. Any bytes are accepted: invalid UTF-8 is encoded byte by byte. A byte the
  /// vocabulary has no token for is dropped (as llama.cpp and HF tokenizers do); see
  /// can_encode_byte. Every other byte comes back from decode().
  /// add_special: add BOS / EOS where the model's metadata asks for them (add_bos_token).
  /// parse_special: text such as "<|im_start|>" becomes the control token; when false it is
  /// encoded as plain text. User-defined tokens are matched in both cases (as llama.cpp and HF
  /// tokenizers do). Fails only for text of 1 GiB or more or an internal regex error.
  Result<std::vector<int32_t>> encode(std::string_view text, bool add_special,
                                      bool parse_special) const;

  /// The raw bytes of a token (control tokens give their text); empty for an id out of range.
  std::string token_to_piece(int32_t id) const;
  /// Concatenated bytes of the tokens; skip_special drops control tokens. Ids out of range
  /// are skipped. The result may be invalid UTF-8 when the ids split a character.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const;

  /// Renders a conversation with the model's chat template (or `template_override`: a template
  /// string, or one of the names "chatml", "smollm", "qwen2.5"). Templates gsa cannot render
  /// give Unsupported, naming the fix (--chat-template chatml).
  Result<std::string> apply_chat_template(const std::vector<ChatMessage>& msgs,
                                          bool add_generation_prompt,
                                          std::string_view template_override = {}) const;

  /// Token id of an exact vocabulary entry given as raw bytes (special tokens by their text).
  int32_t find_token(std::string_view bytes) const;  // -1 when absent
  TokenType token_type(int32_t id) const;             // Undefined for ids out of range
  /// False for the few bytes some vocabularies lack (SmolLM2: 21, none in printable text).
  bool can_encode_byte(uint8_t b) const;

  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t eot_id() const { return eot_id_; }
  int32_t pad_id() const { return pad_id_; }
  /// End of generation: EOS, EOT, and the end-of-turn control tokens of known chat formats.
  bool is_eog(int32_t id) const;
  const std::vector<int32_t>& eog_ids() const { return eog_ids_; }
  int32_t n_vocab() const { return static_cast<int32_t>(pieces_.size()); }
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }
  const std::string& pre() const { return pre_; }
  const std::string& chat_template() const { return chat_template_; }

 private:
  Tokenizer() = default;
  Status encode_text(std::string_view text, std::vector<int32_t>* out) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>* out) const;

  std::vector<std::string> pieces_;     // [n_vocab] raw bytes of each token
  std::vector<TokenType> types_;        // [n_vocab]
  std::shared_ptr<const BpeTables> bpe_;
  std::shared_ptr<const PreTokenizer> pre_tokenizer_;
  std::vector<int32_t> eog_ids_;        // sorted
  int32_t bos_id_ = -1, eos_id_ = -1, eot_id_ = -1, pad_id_ = -1;
  bool add_bos_ = false, add_eos_ = false;
  std::string pre_;
  std::string chat_template_;
};

/// Turns generated token ids into text as they arrive, holding back the bytes of a character
/// split across tokens until it is complete. Output is always valid UTF-8: byte sequences that
/// can never complete are replaced by U+FFFD. Holds a reference: the Tokenizer must outlive it.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = true)
      : tok_(&tok), skip_special_(skip_special) {}
  /// Text that became complete with this token (possibly empty).
  std::string push(int32_t id);
  /// Whatever is still held (an incomplete character becomes U+FFFD); resets the decoder.
  std::string flush();

 private:
  const Tokenizer* tok_;
  bool skip_special_;
  std::string pending_;  // bytes not yet emitted (at most one incomplete character)
};

}  // namespace gsa::tokenizer

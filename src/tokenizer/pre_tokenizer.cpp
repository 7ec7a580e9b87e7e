// Pre-tokenizer regex lists (the patterns llama.cpp uses for each `tokenizer.ggml.pre`, which
// reproduce the Hugging Face pre-tokenizers of those models) and the PCRE2 splitting loop.
#include "tokenizer/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <limits>

#include "tokenizer/unicode.h"

namespace gsa::tokenizer {
namespace {

// GPT-2's pattern. The Hugging Face form ends in "|\s+"; without it the unmatched whitespace
// becomes a piece of its own anyway, so both give the same pieces.
constexpr const char* kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
// Qwen2 and Llama 3 differ only in how many digits one piece may hold. "(?i:'s|...)" is
// spelled out case by case, as llama.cpp does.
constexpr const char* kQwen2 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kLlama3 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+)"
    R"(|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The Unicode White_Space property, which Hugging Face tokenizers (Oniguruma) and llama.cpp use
// for \s. PCRE2's \s differs at the edges (it lacks U+0085 and still counts U+180E, a space
// before Unicode 6.3), so patterns are rewritten to use this list.
constexpr const char* kWhiteSpace =
    R"(\t\n\x{0B}\f\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F})"
    R"(\x{205F}\x{3000})";

// Rewrites \s and \S (inside and outside character classes) to the White_Space list.
std::string with_unicode_white_space(std::string_view pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      if (e == 's') {
        out += in_class ? std::string(kWhiteSpace) : "[" + std::string(kWhiteSpace) + "]";
      } else if (e == 'S' && !in_class) {
        out += "[^" + std::string(kWhiteSpace) + "]";
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
    } else if (c == ']' && in_class && out.back() != '[' && out.back() != '^') {
      in_class = false;
    }
    out += c;
  }
  return out;
}

bool is_one_of(std::string_view s, std::initializer_list<std::string_view> names) {
  for (auto n : names) {
    if (s == n) return true;
  }
  return false;
}

}  // namespace

struct PreTokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() {
    if (code) pcre2_code_free(code);
  }
};

PreTokenizer::~PreTokenizer() = default;

std::vector<std::string> PreTokenizer::patterns_for(std::string_view pre) {
  if (is_one_of(pre, {"gpt2", "mpt", "olmo", "jais", "trillion", "granite-docling"})) {
    return {kGpt2};
  }
  if (is_one_of(pre, {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone",
                      "minerva-7b"})) {
    return {R"(\p{N})", kGpt2};  // every digit is a piece of its own
  }
  if (is_one_of(pre, {"qwen2", "stablelm2", "deepseek-r1-qwen", "hunyuan"})) return {kQwen2};
  if (is_one_of(pre, {"llama-bpe", "llama3", "llama-v3", "dbrx", "smaug-bpe", "falcon3",
                      "pixtral"})) {
    return {kLlama3};
  }
  if (pre == "default") {
    return {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", R"([0-9][0-9][0-9])"};
  }
  return {};
}

Result<std::shared_ptr<const PreTokenizer>> PreTokenizer::create(std::string_view pre) {
  const std::vector<std::string> patterns = patterns_for(pre);
  if (patterns.empty()) {
    return unsupported(
        "tokenizer.ggml.pre '{}' is not supported (supported: default, gpt2, smollm, qwen2, "
        "llama-bpe and their aliases)",
        pre);
  }
  std::shared_ptr<PreTokenizer> p(new PreTokenizer());
  for (const std::string& written : patterns) {
    const std::string pattern = with_unicode_white_space(written);
    int err = 0;
    PCRE2_SIZE err_off = 0;
    pcre2_code* code =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                      PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &err_off, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      return internal_error("pre-tokenizer '{}': pattern {} fails to compile at {}: {}", pre,
                            pattern, err_off, reinterpret_cast<const char*>(msg));
    }
    auto regex = std::make_unique<Regex>();
    regex->code = code;
    // JIT is an optimization only; the interpreter gives the same matches.
    (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    p->regexes_.push_back(std::move(regex));
  }
  return std::shared_ptr<const PreTokenizer>(std::move(p));
}

Status PreTokenizer::split_valid(std::string_view text, std::vector<Span>* out) const {
  std::vector<Span> pieces{{0, static_cast<uint32_t>(text.size())}};
  std::vector<Span> next;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  for (const auto& regex : regexes_) {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(regex->code, nullptr);
    if (md == nullptr) return out_of_memory("pre-tokenizer: no memory for match data");
    next.clear();
    next.reserve(pieces.size() * 2);
    for (const Span piece : pieces) {
      // Each piece is its own subject, so lookaheads never see past the piece's end.
      const PCRE2_SPTR base = subject + piece.begin;
      const PCRE2_SIZE len = piece.end - piece.begin;
      PCRE2_SIZE off = 0;
      PCRE2_SIZE last = 0;
      while (off < len) {
        const int rc = pcre2_match(regex->code, base, len, off, PCRE2_NO_UTF_CHECK, md, nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          PCRE2_UCHAR msg[256];
          pcre2_get_error_message(rc, msg, sizeof(msg));
          pcre2_match_data_free(md);
          return internal_error("pre-tokenizer: regex match failed at byte {}: {}",
                                piece.begin + off, reinterpret_cast<const char*>(msg));
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        const PCRE2_SIZE ms = ov[0];
        const PCRE2_SIZE me = ov[1];
        if (me <= ms) {  // an empty match splits nothing; move on by one character
          const size_t step = utf8_sequence_len(base + ms, len - ms);
          off = ms + (step == 0 ? 1 : step);
          continue;
        }
        if (ms > last) {
          next.push_back({piece.begin + static_cast<uint32_t>(last),
                          piece.begin + static_cast<uint32_t>(ms)});
        }
        next.push_back({piece.begin + static_cast<uint32_t>(ms),
                        piece.begin + static_cast<uint32_t>(me)});
        last = off = me;
      }
      if (last < len) {
        next.push_back({piece.begin + static_cast<uint32_t>(last), piece.end});
      }
    }
    pcre2_match_data_free(md);
    pieces.swap(next);
  }
  out->insert(out->end(), pieces.begin(), pieces.end());
  return Status::ok();
}

Status PreTokenizer::split(std::string_view text, std::vector<Span>* out) const {
  constexpr size_t kMax = std::numeric_limits<uint32_t>::max() / 4;
  if (text.size() >= kMax) {
    return invalid_argument("pre-tokenizer: text of {} bytes exceeds the limit of {} bytes",
                            text.size(), kMax);
  }
  if (text.empty()) return Status::ok();
  if (utf8_is_valid(text)) return split_valid(text, out);

  // Replace each invalid byte by U+FFFD for matching, remembering where every byte came from.
  std::string clean;
  std::vector<uint32_t> origin;  // origin[k]: offset in `text` of clean[k]; one extra at the end
  clean.reserve(text.size() + 16);
  origin.reserve(text.size() + 16);
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  size_t i = 0;
  while (i < text.size()) {
    const size_t len = utf8_sequence_len(p + i, text.size() - i);
    if (len == 0) {
      clean.append("\xEF\xBF\xBD");
      origin.insert(origin.end(), 3, static_cast<uint32_t>(i));
      ++i;
    } else {
      clean.append(text.substr(i, len));
      for (size_t k = 0; k < len; ++k) origin.push_back(static_cast<uint32_t>(i + k));
      i += len;
    }
  }
  origin.push_back(static_cast<uint32_t>(text.size()));
  std::vector<Span> pieces;
  GSA_RETURN_IF_ERROR(split_valid(clean, &pieces));
  for (const Span s : pieces) out->push_back({origin[s.begin], origin[s.end]});
  return Status::ok();
}

}  // namespace gsa::tokenizer

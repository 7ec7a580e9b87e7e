// libFuzzer target for the tokenizer: arbitrary bytes are encoded with a small synthetic
// byte-level vocabulary under every pre-tokenizer and must decode back to themselves, stream-
// decode to valid UTF-8, and split into contiguous pieces; the same bytes are also tried as a
// chat template. The first input byte picks the pre-tokenizer and the flags.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "../tokenizer/synthetic_vocab.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace tk = gsa::tokenizer;

namespace {

void check(bool cond) {
  if (!cond) __builtin_trap();
}

constexpr const char* kPres[] = {"gpt2", "smollm", "qwen2", "llama-bpe", "default"};
constexpr size_t kNumPres = sizeof(kPres) / sizeof(kPres[0]);

const tk::Tokenizer& tokenizer(size_t i) {
  static const std::vector<std::unique_ptr<tk::Tokenizer>> all = [] {
    std::vector<std::unique_ptr<tk::Tokenizer>> v;
    for (const char* pre : kPres) {
      tk::TokenizerData d = tk::testing::synthetic_vocab(pre);
      d.ignore_merges = std::string_view(pre) == "llama-bpe";
      auto t = tk::Tokenizer::from_data(std::move(d));
      check(t.is_ok());
      v.push_back(std::make_unique<tk::Tokenizer>(std::move(t).value()));
    }
    return v;
  }();
  return *all[i];
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t sel = data[0];
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const size_t which = sel % kNumPres;
  const bool parse_special = (sel >> 3) & 1;
  const bool add_special = (sel >> 4) & 1;
  const tk::Tokenizer& tok = tokenizer(which);

  auto ids = tok.encode(text, add_special, parse_special);
  check(ids.is_ok());
  for (int32_t id : *ids) check(id >= 0 && id < tok.n_vocab());
  check(tok.decode(*ids, /*skip_special=*/false) == text);

  tk::StreamDecoder sd(tok, /*skip_special=*/false);
  std::string streamed;
  for (int32_t id : *ids) {
    const std::string part = sd.push(id);
    check(tk::utf8_is_valid(part));
    streamed += part;
  }
  const std::string rest = sd.flush();
  check(tk::utf8_is_valid(rest));
  streamed += rest;
  if (tk::utf8_is_valid(text)) check(streamed == text);

  static const auto pres = [] {
    std::vector<std::shared_ptr<const tk::PreTokenizer>> v;
    for (const char* name : kPres) {
      auto p = tk::PreTokenizer::create(name);
      check(p.is_ok());
      v.push_back(*p);
    }
    return v;
  }();
  std::vector<tk::Span> spans;
  check(pres[which]->split(text, &spans).is_ok());
  uint32_t pos = 0;
  for (const tk::Span s : spans) {
    check(s.begin == pos && s.end > s.begin);
    pos = s.end;
  }
  check(pos == text.size());

  auto format = tk::detect_chat_format(text);
  if (format.is_ok()) {
    auto r = tk::render_chat(*format, {{"user", "hi"}}, true);
    check(r.is_ok());
  }
  return 0;
}

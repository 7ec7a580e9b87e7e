// Unit tests of the tokenizer on a tiny synthetic vocabulary: byte-level mapping, UTF-8 rules,
// pre-tokenizer splits, merge order, special tokens, invalid input, decoding and streaming.
#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "synthetic_vocab.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace gsa::tokenizer {
namespace {

using testing::byte_id;
using testing::synthetic_vocab;

Tokenizer make(const std::string& pre = "gpt2") {
  auto t = Tokenizer::from_data(synthetic_vocab(pre));
  EXPECT_TRUE(t.is_ok()) << t.status().to_string();
  return std::move(t).value();
}

std::vector<int32_t> enc(const Tokenizer& t, std::string_view s, bool special = false) {
  auto r = t.encode(s, /*add_special=*/false, special);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? *r : std::vector<int32_t>{};
}

std::vector<std::string> pieces(const Tokenizer& t, const std::vector<int32_t>& ids) {
  std::vector<std::string> out;
  for (int32_t id : ids) out.push_back(t.token_to_piece(id));
  return out;
}

std::vector<std::string> split(const std::string& pre, std::string_view text) {
  auto p = PreTokenizer::create(pre);
  EXPECT_TRUE(p.is_ok()) << p.status().to_string();
  std::vector<Span> spans;
  EXPECT_TRUE((*p)->split(text, &spans).is_ok());
  std::vector<std::string> out;
  for (const Span s : spans) out.emplace_back(text.substr(s.begin, s.end - s.begin));
  return out;
}

using Strs = std::vector<std::string>;

TEST(ByteLevel, MappingIsABijection) {
  EXPECT_EQ(byte_to_code_point(' '), 0x120u);
  EXPECT_EQ(byte_to_code_point('a'), static_cast<uint32_t>('a'));
  EXPECT_EQ(byte_to_code_point(0xAD), 0x143u);
  std::string all;
  for (int b = 0; b < 256; ++b) {
    EXPECT_EQ(byte_from_code_point(byte_to_code_point(static_cast<uint8_t>(b))), b);
    all.push_back(static_cast<char>(b));
  }
  bool mapped = false;
  EXPECT_EQ(byte_level_decode(byte_level_encode(all), &mapped), all);
  EXPECT_TRUE(mapped);
  EXPECT_EQ(byte_level_decode("<|im_end|>", &mapped), "<|im_end|>");
  EXPECT_EQ(byte_level_decode("\xE4\xB8\x80", &mapped), "\xE4\xB8\x80");  // U+4E00: unmapped
  EXPECT_FALSE(mapped);
}

TEST(Utf8, StrictValidation) {
  EXPECT_TRUE(utf8_is_valid("plain ascii"));
  EXPECT_TRUE(utf8_is_valid("\xC3\xA9\xE4\xB8\x80\xF0\x9F\x98\x80"));
  EXPECT_FALSE(utf8_is_valid("\xC0\xAF"));              // overlong
  EXPECT_FALSE(utf8_is_valid("\xE0\x80\xAF"));          // overlong
  EXPECT_FALSE(utf8_is_valid("\xED\xA0\x80"));          // surrogate
  EXPECT_FALSE(utf8_is_valid("\xF4\x90\x80\x80"));      // > U+10FFFF
  EXPECT_FALSE(utf8_is_valid("\xE4\xB8"));              // truncated
  EXPECT_FALSE(utf8_is_valid("\x80"));                  // stray continuation
  const auto* p = reinterpret_cast<const uint8_t*>("\xF0\x9F\x98");
  EXPECT_TRUE(utf8_incomplete_prefix(p, 3));
  EXPECT_FALSE(utf8_incomplete_prefix(reinterpret_cast<const uint8_t*>("\xED\xA0"), 2));
}

TEST(PreTokenizer, Gpt2Pattern) {
  EXPECT_EQ(split("gpt2", "Hello world, it's 2024!!"),
            (Strs{"Hello", " world", ",", " it", "'s", " 2024", "!!"}));
  // Whitespace runs keep their last space for the next word; trailing space stands alone.
  EXPECT_EQ(split("gpt2", "a   b  \n"), (Strs{"a", "  ", " b", "  \n"}));
}

TEST(PreTokenizer, SmolLmSplitsEveryDigit) {
  EXPECT_EQ(split("smollm", "x 12345y"), (Strs{"x", " ", "1", "2", "3", "4", "5", "y"}));
}

TEST(PreTokenizer, Qwen2AndLlama3Digits) {
  EXPECT_EQ(split("qwen2", "abc 1234"), (Strs{"abc", " ", "1", "2", "3", "4"}));
  EXPECT_EQ(split("llama-bpe", "abc 1234567"), (Strs{"abc", " ", "123", "456", "7"}));
  // Case-insensitive contractions, newlines kept with the punctuation before them.
  EXPECT_EQ(split("qwen2", "I'M here.\n\n  x"), (Strs{"I", "'M", " here", ".\n\n", " ", " x"}));
}

TEST(PreTokenizer, DefaultAndUnknown) {
  EXPECT_EQ(split("default", "a+b=1234"), (Strs{"a", "+", "b", "=", "123", "4"}));
  auto p = PreTokenizer::create("no-such-pre");
  ASSERT_FALSE(p.is_ok());
  EXPECT_EQ(p.status().code(), StatusCode::Unsupported);
  EXPECT_NE(p.status().message().find("no-such-pre"), std::string::npos);
}

TEST(PreTokenizer, InvalidUtf8BytesStayInPlace) {
  const std::string text = "ab\xFF\xFE cd\xC3";
  const Strs got = split("gpt2", text);
  std::string joined;
  for (const auto& s : got) joined += s;
  EXPECT_EQ(joined, text);
  EXPECT_EQ(got.front(), "ab");
}

TEST(PreTokenizer, LongRunsDoNotFail) {
  for (char c : {' ', 'a', '7', '\n', '!'}) {
    const std::string text(1 << 20, c);
    for (const char* pre : {"gpt2", "smollm", "qwen2", "llama-bpe", "default"}) {
      auto p = PreTokenizer::create(pre);
      ASSERT_TRUE(p.is_ok());
      std::vector<Span> spans;
      ASSERT_TRUE((*p)->split(text, &spans).is_ok()) << pre << " '" << c << "'";
      ASSERT_FALSE(spans.empty());
      EXPECT_EQ(spans.back().end, text.size());
    }
  }
}

TEST(Bpe, MergesFollowRank) {
  const Tokenizer t = make();
  EXPECT_EQ(pieces(t, enc(t, "hello world")), (Strs{"hello", " world"}));
  EXPECT_EQ(pieces(t, enc(t, "hellhe")), (Strs{"hell", "he"}));
  // "a b" ranks above "b c": abc -> ab c.
  EXPECT_EQ(pieces(t, enc(t, "abc")), (Strs{"ab", "c"}));
  EXPECT_EQ(pieces(t, enc(t, "bc")), (Strs{"bc"}));
  // Equal ranks merge left first: "    " is two "  " then one "    ".
  EXPECT_EQ(pieces(t, enc(t, "x     y")), (Strs{"x", "    ", " ", "y"}));
  EXPECT_EQ(pieces(t, enc(t, "\xC3\xA9t\xC3\xA9")), (Strs{"\xC3\xA9", "t", "\xC3\xA9"}));
  EXPECT_EQ(pieces(t, enc(t, "\xF0\x9F\x98\x80")), (Strs{"\xF0\x9F\x98\x80"}));
  // The cache gives the same answer the second time.
  EXPECT_EQ(pieces(t, enc(t, "hello hello hello")), (Strs{"hello", " ", "hello", " ", "hello"}));
}

TEST(Bpe, RankOrderChangesTheResult) {
  TokenizerData d = synthetic_vocab();
  // Swap the ranks of "a b" and "b c".
  auto& m = d.merges;
  const auto ab = std::find(m.begin(), m.end(), "a b");
  const auto bc = std::find(m.begin(), m.end(), "b c");
  std::iter_swap(ab, bc);
  auto t = Tokenizer::from_data(std::move(d));
  ASSERT_TRUE(t.is_ok());
  EXPECT_EQ(pieces(*t, enc(*t, "abc")), (Strs{"a", "bc"}));
}

TEST(Bpe, IgnoreMergesTakesWholeVocabularyWords) {
  TokenizerData d = synthetic_vocab("llama-bpe");
  d.tokens.push_back("abc");  // reachable only without merges
  d.token_types.push_back(1);
  auto plain = Tokenizer::from_data(d);
  d.ignore_merges = true;
  auto whole = Tokenizer::from_data(d);
  ASSERT_TRUE(plain.is_ok() && whole.is_ok());
  EXPECT_EQ(pieces(*plain, enc(*plain, "abc")), (Strs{"ab", "c"}));
  EXPECT_EQ(pieces(*whole, enc(*whole, "abc")), (Strs{"abc"}));
}

TEST(Special, ParsedOnlyWhenAsked) {
  const Tokenizer t = make();
  const std::string text = "<|im_start|>user\nhi<|im_end|>";
  const auto on = enc(t, text, /*special=*/true);
  ASSERT_GE(on.size(), 3u);
  EXPECT_EQ(on.front(), 1);
  EXPECT_EQ(on.back(), 2);
  const auto off = enc(t, text, /*special=*/false);
  for (int32_t id : off) EXPECT_GE(id, byte_id(0)) << "control token matched without parse_special";
  EXPECT_EQ(t.decode(off, false), text);
  EXPECT_EQ(t.decode(on, false), text);
  EXPECT_EQ(t.decode(on, /*skip_special=*/true), "user\nhi");
}

TEST(Special, LongestMatchAndUserDefined) {
  const Tokenizer t = make();
  EXPECT_EQ(enc(t, "<|im_start|>xy", true), (std::vector<int32_t>{3, byte_id('y')}));
  EXPECT_EQ(enc(t, "<|im_start|>y", true), (std::vector<int32_t>{1, byte_id('y')}));
  // User-defined tokens match with or without parse_special and always decode.
  EXPECT_EQ(enc(t, "a<tool>b", false), (std::vector<int32_t>{byte_id('a'), 4, byte_id('b')}));
  EXPECT_EQ(t.decode({4}, /*skip_special=*/true), "<tool>");
  // A partial special token is plain text.
  EXPECT_EQ(t.decode(enc(t, "<|im_sta", true), false), "<|im_sta");
}

TEST(Special, BosEosFollowMetadata) {
  TokenizerData d = synthetic_vocab();
  auto no_bos = Tokenizer::from_data(d);
  ASSERT_TRUE(no_bos.is_ok());
  EXPECT_EQ(no_bos->encode("a", true, true)->size(), 1u);
  d.add_bos = true;
  d.add_eos = true;
  auto with = Tokenizer::from_data(d);
  ASSERT_TRUE(with.is_ok());
  EXPECT_EQ(*with->encode("a", true, true), (std::vector<int32_t>{1, byte_id('a'), 2}));
  EXPECT_EQ(*with->encode("a", false, true), (std::vector<int32_t>{byte_id('a')}));
  EXPECT_TRUE(with->is_eog(2));
  EXPECT_TRUE(with->is_eog(0));  // <|endoftext|> ends a turn whatever the metadata says
  EXPECT_FALSE(with->is_eog(1));
}

TEST(Encode, ArbitraryBytesRoundTrip) {
  const Tokenizer t = make("smollm");
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 300; ++iter) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) {
      const uint32_t r = rng();
      // Mix ASCII, UTF-8 lead/continuation bytes and anything at all.
      c = static_cast<char>(r % 3 == 0 ? 0x20 + r % 0x5F : (r % 3 == 1 ? 0x80 + r % 0x75 : r));
    }
    auto ids = t.encode(s, false, iter % 2 == 0);
    ASSERT_TRUE(ids.is_ok());
    EXPECT_EQ(t.decode(*ids, false), s);
  }
  EXPECT_TRUE(t.encode("", true, true)->empty());
}

TEST(Encode, ConcurrentCallsAgree) {
  const Tokenizer t = make();
  const std::string text = "hello world, hello world 12 \xC3\xA9 <|im_end|> abc";
  const auto expected = enc(t, text, true);
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      bool all = true;
      for (int i = 0; i < 200; ++i) all = all && *t.encode(text, false, true) == expected;
      ok[k] = all;
    });
  }
  for (auto& th : threads) th.join();
  for (int v : ok) EXPECT_TRUE(v);
}

TEST(FromData, RejectsBadData) {
  auto check = [](TokenizerData d, StatusCode code, const char* needle) {
    auto t = Tokenizer::from_data(std::move(d));
    ASSERT_FALSE(t.is_ok());
    EXPECT_EQ(t.status().code(), code);
    EXPECT_NE(t.status().message().find(needle), std::string::npos) << t.status().message();
  };
  TokenizerData d = synthetic_vocab();
  d.token_types[7] = 42;
  check(d, StatusCode::InvalidArgument, "type 42");
  d = synthetic_vocab();
  d.merges.push_back("nospace");
  check(d, StatusCode::InvalidArgument, "nospace");
  d = synthetic_vocab();
  d.bos_id = 1 << 20;
  check(d, StatusCode::InvalidArgument, "bos");
  d = synthetic_vocab();
  d.token_types.pop_back();
  check(d, StatusCode::InvalidArgument, "token types");
  d = synthetic_vocab();
  d.model = "llama";
  check(d, StatusCode::Unsupported, "llama");
  d = synthetic_vocab();
  d.pre = "mystery";
  check(d, StatusCode::Unsupported, "mystery");
  check(TokenizerData{}, StatusCode::InvalidArgument, "empty");
}

TEST(Encode, BytesWithoutTokensAreDroppedAndBlockMerges) {
  TokenizerData d = synthetic_vocab();
  d.tokens[byte_id('q')] = "unused-q";  // the vocabulary now lacks byte 'q'
  auto t = Tokenizer::from_data(d);
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  EXPECT_FALSE(t->can_encode_byte('q'));
  EXPECT_TRUE(t->can_encode_byte('a'));
  EXPECT_EQ(pieces(*t, enc(*t, "aqb q")), (Strs{"a", "b", " "}));
  EXPECT_EQ(pieces(*t, enc(*t, "hellqo")), (Strs{"hell", "o"}));
  d = synthetic_vocab();
  for (int b = 0; b < 256; ++b) d.tokens[byte_id(static_cast<unsigned char>(b))] += "#";
  EXPECT_FALSE(Tokenizer::from_data(d).is_ok());
}

TEST(Decode, OutOfRangeIdsAreSkipped) {
  const Tokenizer t = make();
  EXPECT_EQ(t.decode({-5, byte_id('a'), 1 << 30}, false), "a");
  EXPECT_EQ(t.token_to_piece(-1), "");
  EXPECT_EQ(t.token_type(t.n_vocab()), TokenType::Undefined);
  EXPECT_EQ(t.find_token("hello"), t.encode("hello", false, false)->front());
  EXPECT_EQ(t.find_token("<|im_end|>"), 2);
  EXPECT_EQ(t.find_token("not a token"), -1);
}

TEST(StreamDecoder, HoldsSplitCharacters) {
  const Tokenizer t = make();
  StreamDecoder sd(t);
  EXPECT_EQ(sd.push(byte_id('a')), "a");
  EXPECT_EQ(sd.push(byte_id(0xF0)), "");
  EXPECT_EQ(sd.push(byte_id(0x9F)), "");
  EXPECT_EQ(sd.push(byte_id(0x98)), "");
  EXPECT_EQ(sd.push(byte_id(0x80)), "\xF0\x9F\x98\x80");
  EXPECT_EQ(sd.push(byte_id(0xC3)), "");
  EXPECT_EQ(sd.push(1), "");  // control token skipped, the held byte stays held
  EXPECT_EQ(sd.push(byte_id(0xA9)), "\xC3\xA9");
  EXPECT_EQ(sd.flush(), "");
}

TEST(StreamDecoder, InvalidBytesBecomeReplacementCharacters) {
  const Tokenizer t = make();
  StreamDecoder sd(t);
  EXPECT_EQ(sd.push(byte_id(0xFF)), "\xEF\xBF\xBD");
  EXPECT_EQ(sd.push(byte_id(0xE4)), "");
  EXPECT_EQ(sd.push(byte_id('x')), "\xEF\xBF\xBDx");  // E4 can no longer complete
  EXPECT_EQ(sd.push(byte_id(0xE4)), "");
  EXPECT_EQ(sd.flush(), "\xEF\xBF\xBD");
  StreamDecoder keep(t, /*skip_special=*/false);
  EXPECT_EQ(keep.push(2), "<|im_end|>");
}

TEST(StreamDecoder, MatchesDecodeOnValidText) {
  const Tokenizer t = make();
  const std::string text = "hello \xE4\xB8\x80\xE4\xBA\x8C \xF0\x9F\x98\x80\xF0\x9F\x98\x81 world";
  const auto ids = enc(t, text);
  StreamDecoder sd(t);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string part = sd.push(id);
    EXPECT_TRUE(utf8_is_valid(part));
    streamed += part;
  }
  streamed += sd.flush();
  EXPECT_EQ(streamed, text);
}

}  // namespace
}  // namespace gsa::tokenizer

// gsa's pre-tokenizer regexes against Hugging Face tokenizers' pre-tokenizers on the committed
// corpus (tests/golden/tokenizer/pretokenizer_splits.json, written by
// scripts/gen_tokenizer_goldens.py). Needs no model, so it covers the gpt2 and llama-bpe
// families too, which no default model uses.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

#include "tokenizer/pre_tokenizer.h"

namespace gsa::tokenizer {
namespace {

TEST(PreTokenizerGolden, SplitsMatchHuggingFace) {
  const auto path =
      std::filesystem::path(GSA_TEST_DATA_DIR) / "tokenizer" / "pretokenizer_splits.json";
  std::ifstream in(path);
  ASSERT_TRUE(in.good()) << path;
  const nlohmann::json golden = nlohmann::json::parse(in);
  const nlohmann::json corpus = nlohmann::json::parse(
      std::ifstream(std::filesystem::path(GSA_TEST_DATA_DIR) / "tokenizer" / "corpus.json"));
  std::map<std::string, std::string> texts;
  for (const auto& c : corpus.at("cases")) texts[c.at("name")] = c.at("text");

  int families = 0;
  for (const auto& [pre, cases] : golden.at("families").items()) {
    auto p = PreTokenizer::create(pre);
    ASSERT_TRUE(p.is_ok()) << p.status().to_string();
    for (const auto& c : cases) {
      const std::string& text = texts.at(c.at("name"));
      std::vector<Span> spans;
      ASSERT_TRUE((*p)->split(text, &spans).is_ok());
      std::vector<std::string> got;
      for (const Span s : spans) got.push_back(text.substr(s.begin, s.end - s.begin));
      EXPECT_EQ(got, c.at("pieces").get<std::vector<std::string>>())
          << "pre-tokenizer " << pre << ", case " << c.at("name");
    }
    ++families;
  }
  EXPECT_EQ(families, 4);
}

}  // namespace
}  // namespace gsa::tokenizer

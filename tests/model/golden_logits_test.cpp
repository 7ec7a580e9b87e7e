// gsa's full-attention logits against llama.cpp's on the same GGUF (goldens written by
// scripts/gen_logits_goldens.py): top-1 agreement at every stored position where llama.cpp's
// own top-1/top-2 margin is at least 0.5, and the largest |logit difference| over llama.cpp's
// top-20 below 2. Why not exact: llama.cpp rounds activations to 8 bits before each quantized
// matmul; an exact f32 forward of the same weights (numpy, `gen_logits_goldens.py --f32-check`,
// docs/MODELS.md) lands 0.57-1.59 (SmolLM2) and 0.33-0.74 (Qwen2.5-0.5B) away, disagreeing on
// top-1 only where llama.cpp's margin is <= 0.29. Skips a model whose file is absent.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/paths.h"
#include "model/model.h"

namespace gsa::model {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> golden_files() {
  std::vector<std::string> out;
  const fs::path dir = fs::path(GSA_TEST_DATA_DIR) / "logits";
  if (fs::exists(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".json") out.push_back(e.path().stem().string());
  std::sort(out.begin(), out.end());
  return out;
}

class GoldenLogits : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenLogits, MatchLlamaCpp) {
  std::ifstream in(fs::path(GSA_TEST_DATA_DIR) / "logits" / (GetParam() + ".json"));
  ASSERT_TRUE(in.good());
  const nlohmann::json g = nlohmann::json::parse(in);
  ASSERT_EQ(g.at("format"), "gsa-logits-goldens/1");
  const std::string path = model_dir() + "/" + g.at("model").at("file").get<std::string>();
  if (!fs::exists(path)) GTEST_SKIP() << path << " absent (scripts/fetch-model " << GetParam() << ")";

  auto f = gguf::GgufFile::open(path);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  ThreadPool pool(0);
  auto be = backend::make_cpu_backend(&pool);
  auto m = Model::load(*f, be.get(), {});
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  const HParams& h = m->hparams();

  double worst = 0;
  int positions = 0, ties = 0;
  for (const auto& p : g.at("prompts")) {
    const auto tokens = p.at("tokens").get<std::vector<int32_t>>();
    const int bs = 64;
    const int32_t n_blocks = int32_t((tokens.size() + bs - 1) / bs);
    kv::KvConfig kc{h.n_layers, h.n_kv_heads, h.head_dim, bs, n_blocks, DType::F32, 0};
    auto kv = kv::KvCache::create(be.get(), kc);
    ASSERT_TRUE(kv.is_ok());
    kv::BlockTable table;
    ForwardInput fi;
    ASSERT_TRUE(kv->reserve(&table, int32_t(tokens.size()), &fi.slots).is_ok());
    fi.tokens = tokens;
    for (size_t i = 0; i < tokens.size(); ++i) fi.pos.push_back(int32_t(i));
    fi.q_indptr = {0, int32_t(tokens.size())};
    fi.kv_indptr = {0, n_blocks};
    fi.kv_indices = table.blocks;
    fi.kv_last_len = {int32_t(tokens.size()) - (n_blocks - 1) * bs};
    for (const auto& pos : p.at("positions")) fi.logit_rows.push_back(pos.at("pos").get<int32_t>());
    std::vector<float> logits;
    ASSERT_TRUE(m->forward(fi, *kv, nullptr, {}, &logits).is_ok());

    double prompt_worst = 0;
    size_t row = 0;
    std::vector<std::pair<int, double>> mismatches;
    for (const auto& pos : p.at("positions")) {
      const float* lg = logits.data() + row++ * size_t(h.vocab);
      const auto& top = pos.at("top");
      for (const auto& pair : top) {
        const int id = pair.at(0).get<int>();
        prompt_worst = std::max(prompt_worst, std::fabs(double(lg[id]) - pair.at(1).get<double>()));
      }
      const int ours = int(std::max_element(lg, lg + h.vocab) - lg);
      const int theirs = top.at(0).at(0).get<int>();
      if (ours != theirs)
        mismatches.push_back({pos.at("pos").get<int>(),
                              top.at(0).at(1).get<double>() - top.at(1).at(1).get<double>()});
      ++positions;
    }
    worst = std::max(worst, prompt_worst);
    // A disagreement is allowed only at a near-tie of llama.cpp's own top-2.
    for (const auto& [pos, margin] : mismatches) {
      EXPECT_LT(margin, 0.5)
          << GetParam() << " prompt '" << p.at("name").get<std::string>() << "' position " << pos
          << ": top-1 differs with a margin of " << margin;
      ++ties;
    }
    std::printf("[ golden ] %s / %-6s %5zu tokens  %3zu positions  max|diff| %.4f  top-1 near-tie "
                "disagreements %zu\n", GetParam().c_str(), p.at("name").get<std::string>().c_str(),
                tokens.size(), p.at("positions").size(), prompt_worst, mismatches.size());
  }
  RecordProperty("max_abs_logit_diff", std::to_string(worst));
  std::printf("[ golden ] %s: %d positions, max |logit diff| %.4f, near-tie disagreements %d\n",
              GetParam().c_str(), positions, worst, ties);
  EXPECT_LT(worst, 2.0) << "largest |logit difference| against llama.cpp";
}

INSTANTIATE_TEST_SUITE_P(Models, GoldenLogits, ::testing::ValuesIn(golden_files()),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GoldenLogits);

}  // namespace
}  // namespace gsa::model

// The default model (SmolLM2-135M-Instruct Q4_1) read through GgufFile::open, compared with
// what gguf-py read from the same file (tests/golden/gguf/smollm2_*.json). Skipped when the
// model is absent: scripts/fetch-model places it in ~/.cache/gsa/models or $GSA_MODEL_DIR.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/thread_pool.h"
#include "gguf/gguf.h"
#include "gguf_test_util.h"

namespace gsa::gguf {
namespace {

const std::string kGoldenDir = std::string(GSA_TEST_DATA_DIR) + "/gguf/";

std::string model_path() {
  const char* dir = std::getenv("GSA_MODEL_DIR");
  const char* home = std::getenv("HOME");
  std::string d = dir ? dir : (home ? std::string(home) + "/.cache/gsa/models" : "");
  return d + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

nlohmann::json load_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) return nullptr;
  return nlohmann::json::parse(in, nullptr, false);
}

class GgufModel : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(model_path())) GTEST_SKIP() << model_path() << " not present";
    Result<GgufFile> f = GgufFile::open(model_path());
    ASSERT_TRUE(f.is_ok()) << f.status().to_string();
    file_ = std::make_unique<GgufFile>(std::move(f).value());
  }
  std::unique_ptr<GgufFile> file_;
};

TEST_F(GgufModel, MetadataAndTensorCount) {
  const GgufFile& f = *file_;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(*f.get_string("general.architecture"), "llama");
  EXPECT_EQ(*f.get_u32("llama.block_count"), 30u);
  EXPECT_EQ(*f.get_u32("llama.embedding_length"), 576u);
  EXPECT_EQ(*f.get_u32("llama.attention.head_count"), 9u);
  EXPECT_EQ(*f.get_u32("llama.attention.head_count_kv"), 3u);
  EXPECT_EQ(*f.get_string("tokenizer.ggml.pre"), "smollm");
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens")->size(), 49152u);
  EXPECT_EQ(f.tensors().size(), 272u);
  for (int layer = 0; layer < 30; ++layer) {
    EXPECT_NE(f.find_tensor(fmt::format("blk.{}.attn_q.weight", layer)), nullptr) << layer;
  }
  const TensorInfo* emb = f.find_tensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->type, GgmlType::Q8_0);
  EXPECT_EQ(emb->shape, (std::vector<int64_t>{576, 49152}));
  EXPECT_EQ(f.find_tensor("blk.0.attn_q.weight")->type, GgmlType::Q4_1);
  EXPECT_EQ(f.find_tensor("output_norm.weight")->type, GgmlType::F32);
}

// The whole metadata and tensor index agree with gguf-py's reading of the same file.
TEST_F(GgufModel, IndexMatchesGgufPy) {
  nlohmann::json index = load_json(kGoldenDir + "smollm2_index.json");
  ASSERT_TRUE(index.is_object());
  const GgufFile& f = *file_;
  EXPECT_EQ(f.file_size(), index["file_size"].get<uint64_t>());
  EXPECT_EQ(f.alignment(), index["alignment"].get<uint32_t>());
  EXPECT_EQ(f.data_offset(), index["data_offset"].get<uint64_t>());
  ASSERT_EQ(f.metadata().size(), index["metadata"].size());
  for (size_t k = 0; k < f.metadata().size(); ++k) {
    const auto& want = index["metadata"][k];
    const auto& [key, v] = f.metadata()[k];
    SCOPED_TRACE(key);
    EXPECT_EQ(key, want["key"].get<std::string>());
    if (v.type == ValueType::Array) {
      EXPECT_EQ(v.array.size(), want["length"].get<size_t>());
      for (size_t i = 0; i < want["head"].size(); ++i) {
        const auto& h = want["head"][i];
        if (h.is_string()) {
          EXPECT_EQ(v.array[i].str, h.get<std::string>());
        } else if (h.is_number_integer()) {
          EXPECT_EQ(*v.array[i].as_i64(), h.get<int64_t>());
        } else if (h.is_number_float()) {
          EXPECT_FLOAT_EQ(float(v.array[i].f), h.get<float>());
        }
      }
    } else if (v.type == ValueType::String) {
      EXPECT_EQ(v.str.size(), want["length"].get<size_t>());
      if (want.contains("value")) {
        EXPECT_EQ(v.str, want["value"].get<std::string>());
      }
    } else if (v.type == ValueType::Bool) {
      EXPECT_EQ(v.b, want["value"].get<bool>());
    } else if (v.is_float()) {
      EXPECT_FLOAT_EQ(float(v.f), want["value"].get<float>());
    } else {
      EXPECT_EQ(*v.as_i64(), want["value"].get<int64_t>());
    }
  }
  ASSERT_EQ(f.tensors().size(), index["tensors"].size());
  for (size_t k = 0; k < f.tensors().size(); ++k) {
    const TensorInfo& t = f.tensors()[k];
    const auto& want = index["tensors"][k];
    EXPECT_EQ(t.name, want["name"].get<std::string>());
    EXPECT_EQ(t.shape, want["shape"].get<std::vector<int64_t>>()) << t.name;
    EXPECT_EQ(uint32_t(t.type), want["type_id"].get<uint32_t>()) << t.name;
    EXPECT_EQ(t.n_bytes, want["n_bytes"].get<uint64_t>()) << t.name;
    EXPECT_EQ(f.data_offset() + t.offset, want["file_offset"].get<uint64_t>()) << t.name;
  }
}

// Rows of real tensors: raw bytes identical to gguf-py's, dequantized values equal to its
// dequantization, read both by row and through read_tensor_f32 of the whole tensor.
TEST_F(GgufModel, TensorRowsMatchGgufPy) {
  nlohmann::json slices = load_json(kGoldenDir + "smollm2_slices.json");
  ASSERT_TRUE(slices.is_object());
  const GgufFile& f = *file_;
  ThreadPool pool(2);
  std::string loaded_name;
  std::vector<float> whole;
  for (const auto& s : slices["slices"]) {
    const std::string name = s["tensor"];
    const int64_t row = s["row"], row_elems = s["row_elems"];
    const uint64_t n_bytes = s["n_bytes"];
    SCOPED_TRACE(fmt::format("{} row {}", name, row));
    const TensorInfo* t = f.find_tensor(name);
    ASSERT_NE(t, nullptr);
    ASSERT_EQ(t->shape[0], row_elems);
    ASSERT_EQ(*ggml_row_bytes(t->type, row_elems), n_bytes);
    std::vector<uint8_t> golden = testing::read_binary(kGoldenDir + s["file"].get<std::string>());
    ASSERT_EQ(golden.size(), n_bytes + uint64_t(row_elems) * 4);
    const uint8_t* raw = f.tensor_data(*t) + uint64_t(row) * n_bytes;
    EXPECT_EQ(std::memcmp(raw, golden.data(), n_bytes), 0);

    std::vector<float> want(static_cast<size_t>(row_elems)), got(static_cast<size_t>(row_elems));
    std::memcpy(want.data(), golden.data() + n_bytes, size_t(row_elems) * 4);
    ASSERT_TRUE(dequantize(t->type, raw, n_bytes, got.data(), row_elems).is_ok());
    if (loaded_name != name) {
      whole.assign(size_t(t->n_elements()), NAN);
      ASSERT_TRUE(f.read_tensor_f32(*t, whole.data(), &pool).is_ok());
      loaded_name = name;
    }
    float max_abs = 0;
    for (float w : want) max_abs = std::max(max_abs, std::fabs(w));
    for (int64_t i = 0; i < row_elems; ++i) {
      ASSERT_NEAR(got[size_t(i)], want[size_t(i)], max_abs * 0x1p-20f) << i;
      ASSERT_EQ(whole[size_t(row * row_elems + i)], got[size_t(i)]) << i;
    }
  }
}

}  // namespace
}  // namespace gsa::gguf

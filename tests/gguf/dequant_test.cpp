// Dequantization against goldens computed by gguf-py (scripts/gen_gguf_goldens.py), plus
// hand-worked blocks, block layouts and the error paths of dequantize().
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "gguf/gguf.h"
#include "gguf_test_util.h"

namespace gsa::gguf {
namespace {

const std::string kGoldenDir = std::string(GSA_TEST_DATA_DIR) + "/gguf/";

nlohmann::json load_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) return nullptr;
  return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
}

/// Compares against a reference with a tolerance of 2^-20 of the largest magnitude: rounding
/// order differences stay far below it, a wrong quant or scale (>= one step) far above.
void expect_close(const std::string& what, const float* got, const float* want, int64_t n) {
  float max_abs = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isfinite(want[i])) max_abs = std::max(max_abs, std::fabs(want[i]));
  }
  const float tol = max_abs * 0x1p-20f;
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool ok = std::isnan(want[i])   ? std::isnan(got[i])
                    : std::isinf(want[i]) ? got[i] == want[i]
                                          : std::fabs(got[i] - want[i]) <= tol;
    if (!ok && bad++ < 5) {
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want " << want[i];
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << n << " values differ";
}

TEST(GgufDequant, MatchesGgufPyGoldens) {
  nlohmann::json manifest = load_json(kGoldenDir + "quants.json");
  ASSERT_TRUE(manifest.is_object()) << "missing or bad " << kGoldenDir << "quants.json";
  std::set<uint32_t> covered;
  for (const auto& c : manifest["cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    const auto type = GgmlType(c["type_id"].get<uint32_t>());
    const int64_t n = c["n"];
    const uint64_t n_bytes = c["n_bytes"];
    std::vector<uint8_t> file = testing::read_binary(kGoldenDir + c["file"].get<std::string>());
    const bool has_source = c.value("has_source", false);
    ASSERT_EQ(file.size(), n_bytes + uint64_t(n) * (has_source ? 8 : 4));
    EXPECT_EQ(ggml_type_name(type), c["type"].get<std::string>());
    ASSERT_EQ(*ggml_row_bytes(type, n), n_bytes);
    std::vector<float> want(static_cast<size_t>(n)), got(static_cast<size_t>(n), NAN);
    std::memcpy(want.data(), file.data() + n_bytes, size_t(n) * 4);
    Status st = dequantize(type, file.data(), n_bytes, got.data(), n);
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    expect_close(name, got.data(), want.data(), n);
    covered.insert(uint32_t(type));
  }
  // Every format the reader must support has a golden.
  for (GgmlType t : {GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1,
                     GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K,
                     GgmlType::Q5_K, GgmlType::Q6_K}) {
    EXPECT_TRUE(covered.count(uint32_t(t))) << "no golden for " << ggml_type_name(t);
  }
}

// Our quantizer produces the bytes gguf-py produced from the same floats (both follow ggml's
// reference rounding), for every golden whose source floats were kept.
TEST(GgufQuantize, MatchesGgufPyBytes) {
  nlohmann::json manifest = load_json(kGoldenDir + "quants.json");
  ASSERT_TRUE(manifest.is_object());
  int checked = 0;
  for (const auto& c : manifest["cases"]) {
    const auto type = GgmlType(c["type_id"].get<uint32_t>());
    if (!c.value("has_source", false) || !ggml_type_can_quantize(type)) continue;
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    const int64_t n = c["n"];
    const uint64_t n_bytes = c["n_bytes"];
    std::vector<uint8_t> file = testing::read_binary(kGoldenDir + c["file"].get<std::string>());
    ASSERT_EQ(file.size(), n_bytes + uint64_t(n) * 8);
    std::vector<float> source(static_cast<size_t>(n));
    std::memcpy(source.data(), file.data() + n_bytes + uint64_t(n) * 4, size_t(n) * 4);
    Result<std::vector<uint8_t>> q = quantize(type, source.data(), n);
    ASSERT_TRUE(q.is_ok()) << q.status().to_string();
    ASSERT_EQ(q->size(), n_bytes);
    size_t diff = 0;
    for (size_t k = 0; k < n_bytes; ++k) diff += (*q)[k] != file[k];
    EXPECT_EQ(diff, 0u) << diff << " of " << n_bytes << " bytes differ";
    ++checked;
  }
  EXPECT_GE(checked, 5);  // f16, bf16, q8_0, q4_0, q4_1
}

TEST(GgufQuantize, RoundTripErrorIsBoundedAndErrorsAreStatuses) {
  std::vector<float> x(4096);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(float(i) * 0.37f) * (1.0f + float(i % 7));
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1}) {
    Result<std::vector<uint8_t>> q = quantize(t, x.data(), int64_t(x.size()));
    ASSERT_TRUE(q.is_ok()) << q.status().to_string();
    std::vector<float> y(x.size());
    ASSERT_TRUE(dequantize(t, q->data(), q->size(), y.data(), int64_t(y.size())).is_ok());
    // Worst case per element as a fraction of the block's max magnitude: half a step for Q8_0
    // and Q4_1 (step 1/127, 2/15); Q4_0 maps [-amax, amax] onto -8..7, so up to a full step 1/8.
    const float frac = t == GgmlType::Q8_0 ? 0.5f / 127 : t == GgmlType::Q4_1 ? 1.0f / 15 : 1.0f / 8;
    for (size_t b = 0; b < x.size(); b += 32) {
      float amax = 0;
      for (size_t j = b; j < b + 32; ++j) amax = std::max(amax, std::fabs(x[j]));
      for (size_t j = b; j < b + 32; ++j) {
        // Plus the f16 rounding of the scale and offset.
        ASSERT_LE(std::fabs(y[j] - x[j]), amax * frac + amax * 4e-3f)
            << ggml_type_name(t) << " " << j;
      }
    }
  }
  x[100] = NAN;
  EXPECT_EQ(quantize(GgmlType::Q8_0, x.data(), 4096).status().code(), StatusCode::InvalidArgument);
  EXPECT_TRUE(quantize(GgmlType::F16, x.data(), 4096).is_ok());
  EXPECT_EQ(quantize(GgmlType::Q4_K, x.data(), 256).status().code(), StatusCode::Unsupported);
  EXPECT_FALSE(quantize(GgmlType::Q4_0, x.data(), 33).is_ok());

  GgufWriter w;
  EXPECT_FALSE(w.add_tensor_quantized("bad", {64, 2}, GgmlType::Q8_0, std::vector<float>(64)).is_ok());
  ASSERT_TRUE(w.add_tensor_quantized("w", {64, 2}, GgmlType::Q4_1, std::vector<float>(128, 0.5f)).is_ok());
  Result<GgufFile> f = GgufFile::from_bytes(w.finish());
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  std::vector<float> out(128);
  ASSERT_TRUE(f->read_tensor_f32(f->tensors()[0], out.data()).is_ok());
  for (float v : out) EXPECT_EQ(v, 0.5f);
}

TEST(GgufDequant, HandWorkedQ4_0AndQ4_1Blocks) {
  // Q4_0: d = 2.0; byte j holds nibbles (lo = j, hi = 15 - j).
  uint8_t q40[18];
  const uint16_t two = f32_to_f16(2.0f), half = f32_to_f16(0.5f), minus = f32_to_f16(-3.0f);
  std::memcpy(q40, &two, 2);
  for (int j = 0; j < 16; ++j) q40[2 + j] = uint8_t(j | ((15 - j) << 4));
  float y[32];
  ASSERT_TRUE(dequantize(GgmlType::Q4_0, q40, sizeof(q40), y, 32).is_ok());
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 2.0f * float(j - 8));
    EXPECT_EQ(y[j + 16], 2.0f * float(7 - j));
  }
  // Q4_1: d = 0.5, m = -3.
  uint8_t q41[20];
  std::memcpy(q41, &half, 2);
  std::memcpy(q41 + 2, &minus, 2);
  for (int j = 0; j < 16; ++j) q41[4 + j] = uint8_t(j | ((15 - j) << 4));
  ASSERT_TRUE(dequantize(GgmlType::Q4_1, q41, sizeof(q41), y, 32).is_ok());
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 0.5f * float(j) - 3.0f);
    EXPECT_EQ(y[j + 16], 0.5f * float(15 - j) - 3.0f);
  }
}

TEST(GgufDequant, HandWorkedQ8_KAndQ5_0HighBits) {
  std::vector<uint8_t> q8k(292, 0);
  const float d = 0.125f;
  std::memcpy(q8k.data(), &d, 4);
  for (int j = 0; j < 256; ++j) q8k[4 + j] = uint8_t(int8_t(j - 128));
  std::vector<float> y(256);
  ASSERT_TRUE(dequantize(GgmlType::Q8_K, q8k.data(), q8k.size(), y.data(), 256).is_ok());
  for (int j = 0; j < 256; ++j) EXPECT_EQ(y[j], 0.125f * float(j - 128)) << j;

  // Q5_0 with every high bit set and all nibbles 15: value (31 - 16) * d.
  uint8_t q50[22];
  const uint16_t one = f32_to_f16(1.0f);
  std::memcpy(q50, &one, 2);
  std::memset(q50 + 2, 0xff, 20);
  ASSERT_TRUE(dequantize(GgmlType::Q5_0, q50, sizeof(q50), y.data(), 32).is_ok());
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 15.0f) << j;
  q50[2 + 3] = 0x7f;  // clear the high bit of element 31 (bit 31 of qh)
  ASSERT_TRUE(dequantize(GgmlType::Q5_0, q50, sizeof(q50), y.data(), 32).is_ok());
  EXPECT_EQ(y[31], -1.0f);
  EXPECT_EQ(y[15], 15.0f);
}

TEST(GgufDequant, PlainTypesConvertExactly) {
  const float vals[] = {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 1e-7f, INFINITY, -1e30f, 3.14159f};
  for (float v : vals) {
    const uint16_t h = f32_to_f16(v), b = f32_to_bf16(v);
    float out[9] = {};
    uint16_t many[9];
    for (auto& x : many) x = h;  // 9 values: exercises the vector path and its scalar tail
    ASSERT_TRUE(dequantize(GgmlType::F16, many, sizeof(many), out, 9).is_ok());
    for (float o : out) EXPECT_EQ(f32_bits(o), f32_bits(f16_to_f32(h)));
    ASSERT_TRUE(dequantize(GgmlType::BF16, &b, 2, out, 1).is_ok());
    EXPECT_EQ(f32_bits(out[0]), f32_bits(bf16_to_f32(b)));
    ASSERT_TRUE(dequantize(GgmlType::F32, &v, 4, out, 1).is_ok());
    EXPECT_EQ(f32_bits(out[0]), f32_bits(v));
  }
  const int32_t ints[] = {-7, 1 << 20};
  float out[2];
  ASSERT_TRUE(dequantize(GgmlType::I32, ints, sizeof(ints), out, 2).is_ok());
  EXPECT_EQ(out[0], -7.0f);
  EXPECT_EQ(out[1], float(1 << 20));
}

TEST(GgufDequant, LayoutsMatchGgml) {
  struct L {
    GgmlType t;
    int64_t elems, bytes;
  };
  const L expected[] = {{GgmlType::F32, 1, 4},     {GgmlType::F16, 1, 2},
                        {GgmlType::BF16, 1, 2},    {GgmlType::Q4_0, 32, 18},
                        {GgmlType::Q4_1, 32, 20},  {GgmlType::Q5_0, 32, 22},
                        {GgmlType::Q5_1, 32, 24},  {GgmlType::Q8_0, 32, 34},
                        {GgmlType::Q2_K, 256, 84}, {GgmlType::Q3_K, 256, 110},
                        {GgmlType::Q4_K, 256, 144}, {GgmlType::Q5_K, 256, 176},
                        {GgmlType::Q6_K, 256, 210}, {GgmlType::Q8_K, 256, 292},
                        {GgmlType::IQ4_NL, 32, 18}, {GgmlType::IQ4_XS, 256, 136}};
  for (const L& l : expected) {
    int64_t e = 0, b = 0;
    ASSERT_TRUE(ggml_type_layout(l.t, &e, &b)) << ggml_type_name(l.t);
    EXPECT_EQ(e, l.elems) << ggml_type_name(l.t);
    EXPECT_EQ(b, l.bytes) << ggml_type_name(l.t);
    EXPECT_TRUE(ggml_type_can_dequantize(l.t));
  }
  EXPECT_FALSE(ggml_type_layout(GgmlType(4), nullptr, nullptr));
  EXPECT_STREQ(ggml_type_name(GgmlType(4)), "unknown");
  EXPECT_STREQ(ggml_type_name(GgmlType::Q6_K), "q6_K");
}

TEST(GgufDequant, ErrorsAreStatuses) {
  std::vector<uint8_t> src(1024, 0);
  std::vector<float> dst(1024);
  Status st = dequantize(GgmlType::Q4_0, src.data(), src.size(), dst.data(), 48);
  EXPECT_EQ(st.code(), StatusCode::InvalidArgument);
  EXPECT_NE(st.message().find("multiple"), std::string::npos) << st.message();
  st = dequantize(GgmlType::Q6_K, src.data(), 209, dst.data(), 256);
  EXPECT_EQ(st.code(), StatusCode::InvalidArgument);
  EXPECT_NE(st.message().find("210 bytes"), std::string::npos) << st.message();
  EXPECT_EQ(dequantize(GgmlType(77), src.data(), src.size(), dst.data(), 32).code(),
            StatusCode::InvalidArgument);
  EXPECT_EQ(dequantize(GgmlType::IQ2_XS, src.data(), src.size(), dst.data(), 256).code(),
            StatusCode::Unsupported);
  EXPECT_FALSE(dequantize(GgmlType::F32, src.data(), src.size(), dst.data(), -1).is_ok());
  EXPECT_TRUE(dequantize(GgmlType::Q4_K, nullptr, 0, nullptr, 0).is_ok());
  EXPECT_FALSE(ggml_row_bytes(GgmlType::F32, INT64_MAX).is_ok());
  EXPECT_EQ(*ggml_row_bytes(GgmlType::Q4_K, 4096), 16u * 144u);
}

}  // namespace
}  // namespace gsa::gguf

// GgufFile and GgufWriter on well-formed files: every metadata type, nested arrays, typed
// getters and their errors, versions 2 and 3, alignment, the tensor index, mmap open and
// tensor reads (single-threaded and through a pool).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "gguf/gguf.h"
#include "gguf_test_util.h"

namespace gsa::gguf {
namespace {

using testing::RawBytes;

Value scalar(ValueType t, uint64_t u, int64_t i, double f) {
  Value v;
  v.type = t;
  v.u = u;
  v.i = i;
  v.f = f;
  return v;
}

TEST(GgufReader, EveryMetadataTypeRoundTrips) {
  GgufWriter w;
  w.set("u8", scalar(ValueType::U8, 250, 0, 0));
  w.set("i8", scalar(ValueType::I8, 0, -100, 0));
  w.set("u16", scalar(ValueType::U16, 65000, 0, 0));
  w.set("i16", scalar(ValueType::I16, 0, -30000, 0));
  w.set_u32("u32", 4000000000u);
  w.set_i32("i32", -2000000000);
  w.set_u64("u64", 1ull << 60);
  w.set("i64", scalar(ValueType::I64, 0, -(1ll << 50), 0));
  w.set_f32("f32", 1.5f);
  w.set("f64", scalar(ValueType::F64, 0, 0, 0.1));
  w.set_bool("bool", true);
  w.set_string("str", std::string("caf\xc3\xa9\0x", 7));
  w.set_string_array("strs", {"", "x", "yz"});
  w.set_i32_array("i32s", {-1, 0, 1});
  w.set_f32_array("f32s", {0.25f, -2.0f});
  w.set("nested", Value::make_array(ValueType::Array,
                                    {Value::make_array(ValueType::String, {Value::make_string("a")}),
                                     Value::make_array(ValueType::Bool, {Value::make_bool(false)})}));
  Result<GgufFile> f = GgufFile::from_bytes(w.finish());
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(f->version(), 3u);
  ASSERT_EQ(f->metadata().size(), 16u);
  const char* order[] = {"u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64",
                         "f32", "f64", "bool", "str", "strs", "i32s", "f32s", "nested"};
  for (size_t k = 0; k < 16; ++k) EXPECT_EQ(f->metadata()[k].first, order[k]);

  EXPECT_EQ(f->find("u8")->u, 250u);
  EXPECT_EQ(f->find("i8")->i, -100);
  EXPECT_EQ(f->find("u16")->u, 65000u);
  EXPECT_EQ(f->find("i16")->i, -30000);
  EXPECT_EQ(*f->get_u32("u32"), 4000000000u);
  EXPECT_EQ(f->find("i32")->i, -2000000000);
  EXPECT_EQ(*f->get_u64("u64"), 1ull << 60);
  EXPECT_EQ(f->find("i64")->i, -(1ll << 50));
  EXPECT_EQ(*f->get_f32("f32"), 1.5f);
  EXPECT_EQ(f->find("f64")->f, 0.1);
  EXPECT_EQ(*f->get_bool("bool"), true);
  EXPECT_EQ(*f->get_string("str"), std::string("caf\xc3\xa9\0x", 7));
  EXPECT_EQ(*f->get_string_array("strs"), (std::vector<std::string>{"", "x", "yz"}));
  EXPECT_EQ(*f->get_i32_array("i32s"), (std::vector<int32_t>{-1, 0, 1}));
  EXPECT_EQ(*f->get_f32_array("f32s"), (std::vector<float>{0.25f, -2.0f}));
  const Value* nested = f->find("nested");
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->type, ValueType::Array);
  EXPECT_EQ(nested->elem_type, ValueType::Array);
  ASSERT_EQ(nested->array.size(), 2u);
  EXPECT_EQ(nested->array[0].elem_type, ValueType::String);
  EXPECT_EQ(nested->array[0].array[0].str, "a");
  EXPECT_EQ(nested->array[1].array[0].b, false);
}

TEST(GgufReader, TypedGettersReportMismatchesWithTheKey) {
  GgufWriter w;
  w.set_string("name", "x");
  w.set_i32("neg", -3);
  w.set_u64("big", 1ull << 40);
  w.set("small", scalar(ValueType::U8, 9, 0, 0));
  w.set("dbl", scalar(ValueType::F64, 0, 0, 2.5));
  w.set_i32_array("ints", {1, 2});
  w.set_u32("one", 1);
  Result<GgufFile> f = GgufFile::from_bytes(w.finish());
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();

  EXPECT_EQ(f->get_u32("absent").status().code(), StatusCode::NotFound);
  EXPECT_NE(f->get_u32("absent").status().message().find("absent"), std::string::npos);
  Result<uint32_t> bad = f->get_u32("name");
  EXPECT_EQ(bad.status().code(), StatusCode::InvalidArgument);
  EXPECT_NE(bad.status().message().find("'name'"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("string"), std::string::npos);
  EXPECT_FALSE(f->get_u32("neg").is_ok());
  EXPECT_FALSE(f->get_u32("big").is_ok());
  EXPECT_EQ(*f->get_u64("big"), 1ull << 40);
  EXPECT_EQ(*f->get_u32("small"), 9u);
  EXPECT_EQ(*f->get_f32("dbl"), 2.5f);
  EXPECT_FALSE(f->get_f32("one").is_ok());
  EXPECT_FALSE(f->get_bool("one").is_ok());
  EXPECT_FALSE(f->get_string("one").is_ok());
  EXPECT_FALSE(f->get_string_array("ints").is_ok());
  EXPECT_FALSE(f->get_f32_array("ints").is_ok());
  EXPECT_FALSE(f->get_i32_array("one").is_ok());
  Result<std::vector<int32_t>> from_u64 = f->get_i32_array("ints");
  ASSERT_TRUE(from_u64.is_ok());
  EXPECT_EQ(from_u64->size(), 2u);
}

TEST(GgufReader, I32ArrayAcceptsOtherIntegerElementsThatFit) {
  GgufWriter w;
  w.set("u8s", Value::make_array(ValueType::U8, {scalar(ValueType::U8, 200, 0, 0)}));
  w.set("u64s", Value::make_array(ValueType::U64, {Value::make_u64(1ull << 33)}));
  Result<GgufFile> f = GgufFile::from_bytes(w.finish());
  ASSERT_TRUE(f.is_ok());
  EXPECT_EQ(*f->get_i32_array("u8s"), std::vector<int32_t>{200});
  Result<std::vector<int32_t>> big = f->get_i32_array("u64s");
  ASSERT_FALSE(big.is_ok());
  EXPECT_NE(big.status().message().find("'u64s'[0]"), std::string::npos) << big.status().message();
}

TEST(GgufReader, TensorIndexAndData) {
  Result<GgufFile> f = GgufFile::from_bytes(testing::small_valid_file());
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  ASSERT_EQ(f->tensors().size(), 3u);
  const TensorInfo* w = f->find_tensor("w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{32, 2}));
  EXPECT_EQ(w->type, GgmlType::Q8_0);
  EXPECT_EQ(w->n_elements(), 64);
  EXPECT_EQ(w->n_bytes, 68u);
  EXPECT_EQ(f->find_tensor("missing"), nullptr);
  for (const TensorInfo& t : f->tensors()) {
    EXPECT_EQ(t.offset % 32, 0u) << t.name;
    EXPECT_EQ((f->data_offset() + t.offset) % 32, 0u) << t.name;
  }
  std::vector<float> out(64, -7.0f);
  ASSERT_TRUE(f->read_tensor_f32(*w, out.data()).is_ok());
  EXPECT_EQ(out[0], 5.0f);
  for (int k = 1; k < 64; ++k) EXPECT_EQ(out[k], 0.0f) << k;
  const TensorInfo* norm = f->find_tensor("norm");
  ASSERT_NE(norm, nullptr);
  float v[4];
  ASSERT_TRUE(f->read_tensor_f32(*norm, v).is_ok());
  EXPECT_EQ(v[3], 4.0f);
  float raw;
  std::memcpy(&raw, f->tensor_data(*norm) + 4, 4);
  EXPECT_EQ(raw, 2.0f);
}

TEST(GgufReader, Version2ParsesLikeVersion3) {
  RawBytes b;
  b.header(2, 1, 1).str("general.architecture").u32(uint32_t(ValueType::String)).str("qwen2");
  b.tensor("t", {2}, GgmlType::F32, 0).pad(32).f32(1.0f).f32(-1.0f);
  Result<GgufFile> f = GgufFile::from_bytes(b.bytes());
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(f->version(), 2u);
  EXPECT_EQ(*f->get_string("general.architecture"), "qwen2");
  float v[2];
  ASSERT_TRUE(f->read_tensor_f32(f->tensors()[0], v).is_ok());
  EXPECT_EQ(v[1], -1.0f);
}

TEST(GgufReader, CustomAlignmentIsHonoured) {
  GgufWriter w;
  w.add_tensor_f32("a", {3}, {1, 2, 3});
  w.add_tensor_f32("b", {5}, {4, 5, 6, 7, 8});
  std::vector<uint8_t> bytes = w.finish(256);
  Result<GgufFile> f = GgufFile::from_bytes(bytes);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(f->alignment(), 256u);
  EXPECT_EQ(*f->get_u32("general.alignment"), 256u);
  EXPECT_EQ(f->data_offset() % 256, 0u);
  EXPECT_EQ(f->find_tensor("b")->offset, 256u);
  float v[5];
  ASSERT_TRUE(f->read_tensor_f32(*f->find_tensor("b"), v).is_ok());
  EXPECT_EQ(v[4], 8.0f);
}

TEST(GgufReader, EmptyFileWithoutTensors) {
  GgufWriter w;
  Result<GgufFile> f = GgufFile::from_bytes(w.finish());
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_TRUE(f->metadata().empty());
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_EQ(f->file_size(), 24u);
}

TEST(GgufReader, OpenMapsAFileFromDisk) {
  const std::string path = ::testing::TempDir() + "gsa_gguf_open_test.gguf";
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.add_tensor_f32("x", {2, 2}, {1, 2, 3, 4});
  ASSERT_TRUE(w.write_file(path).is_ok());
  Result<GgufFile> f = GgufFile::open(path);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(f->file_size(), w.finish().size());
  GgufFile moved = std::move(f).value();  // the mapping moves with the object
  float v[4];
  ASSERT_TRUE(moved.read_tensor_f32(moved.tensors()[0], v).is_ok());
  EXPECT_EQ(v[2], 3.0f);
  std::remove(path.c_str());

  Result<GgufFile> missing = GgufFile::open(path);
  EXPECT_EQ(missing.status().code(), StatusCode::Io);
  EXPECT_NE(missing.status().message().find(path), std::string::npos);
  EXPECT_FALSE(GgufFile::open(::testing::TempDir()).is_ok());
}

TEST(GgufReader, ParallelReadMatchesSerialRead) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> byte(0, 255);
  const int64_t rows = 64, cols = 4096;
  std::vector<uint8_t> data(size_t(rows * cols / 256 * 144));
  for (auto& x : data) x = uint8_t(byte(rng));
  for (size_t b = 0; b < data.size(); b += 144) {  // finite scales: d = dmin = 0.5
    data[b] = 0x00, data[b + 1] = 0x38, data[b + 2] = 0x00, data[b + 3] = 0x38;
  }
  GgufWriter w;
  w.add_tensor("q", {cols, rows}, GgmlType::Q4_K, data);
  Result<GgufFile> f = GgufFile::from_bytes(w.finish());
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  std::vector<float> serial(size_t(rows * cols)), parallel(size_t(rows * cols), NAN);
  ASSERT_TRUE(f->read_tensor_f32(f->tensors()[0], serial.data()).is_ok());
  ThreadPool pool(4);
  ASSERT_TRUE(f->read_tensor_f32(f->tensors()[0], parallel.data(), &pool).is_ok());
  EXPECT_EQ(std::memcmp(serial.data(), parallel.data(), serial.size() * 4), 0);
}

TEST(GgufReader, UnsupportedTensorTypeReadsAsUnsupported) {
  GgufWriter w;
  w.add_tensor("iq", {256}, GgmlType::IQ2_XXS, std::vector<uint8_t>(66, 0));
  Result<GgufFile> f = GgufFile::from_bytes(w.finish());
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  std::vector<float> out(256);
  Status st = f->read_tensor_f32(f->tensors()[0], out.data());
  EXPECT_EQ(st.code(), StatusCode::Unsupported);
  EXPECT_NE(st.message().find("iq2_xxs"), std::string::npos) << st.message();
}

// Files written by gguf-py's GGUFWriter (the fuzz seed corpus, made by gen_gguf_goldens.py).
TEST(GgufReader, ReadsFilesWrittenByGgufPy) {
  const std::string dir = std::string(GSA_SOURCE_DIR) + "/tests/fuzz/corpus/gguf/";
  Result<GgufFile> meta = GgufFile::open(dir + "metadata.gguf");
  ASSERT_TRUE(meta.is_ok()) << meta.status().to_string();
  EXPECT_EQ(*meta->get_string("general.architecture"), "llama");
  EXPECT_EQ(meta->find("t.u8")->u, 200u);
  EXPECT_EQ(meta->find("t.i16")->i, -30000);
  EXPECT_EQ(*meta->get_u64("t.u64"), 1ull << 40);
  EXPECT_EQ(*meta->find("t.i64")->as_i64(), -(1ll << 40));
  EXPECT_EQ(meta->find("t.f64")->f, 0.5);
  EXPECT_EQ(*meta->get_bool("tokenizer.ggml.add_bos_token"), true);
  EXPECT_EQ(*meta->get_string_array("tokenizer.ggml.tokens"),
            (std::vector<std::string>{"a", "b", "ab", "<s>"}));
  EXPECT_EQ(*meta->get_i32_array("tokenizer.ggml.token_type"), (std::vector<int32_t>{1, 1, 1, 3}));
  const Value* nested = meta->find("t.nested");
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->elem_type, ValueType::Array);
  ASSERT_EQ(nested->array.size(), 2u);
  EXPECT_EQ(*nested->array[0].array[1].as_i64(), 2);
  EXPECT_EQ(*nested->array[1].array[0].as_i64(), 3);

  for (const char* name : {"tensors.gguf", "aligned64.gguf"}) {
    Result<GgufFile> f = GgufFile::open(dir + name);
    ASSERT_TRUE(f.is_ok()) << f.status().to_string();
    EXPECT_EQ(f->alignment(), std::string(name) == "aligned64.gguf" ? 64u : 32u);
    ASSERT_EQ(f->tensors().size(), 5u);
    EXPECT_EQ(f->find_tensor("half")->shape, (std::vector<int64_t>{8, 2}));
    EXPECT_EQ(f->find_tensor("w.q4_k")->type, GgmlType::Q4_K);
    for (const TensorInfo& t : f->tensors()) {
      EXPECT_EQ((f->data_offset() + t.offset) % f->alignment(), 0u);
      std::vector<float> out(size_t(t.n_elements()));
      EXPECT_TRUE(f->read_tensor_f32(t, out.data()).is_ok()) << t.name;
      for (float v : out) EXPECT_TRUE(std::isfinite(v)) << t.name;
    }
  }
}

TEST(GgufValue, DisplayStrings) {
  EXPECT_EQ(Value::make_u32(30).to_display_string(), "30");
  EXPECT_EQ(Value::make_i32(-2).to_display_string(), "-2");
  EXPECT_EQ(Value::make_f32(1e-5f).to_display_string(), "1e-05");
  EXPECT_EQ(Value::make_bool(true).to_display_string(), "true");
  EXPECT_EQ(Value::make_string("a\"b\n\x01").to_display_string(), "\"a\\\"b\\n\\x01\"");
  EXPECT_EQ(Value::make_string("abcdef").to_display_string(4, 3), "\"abc\"... (6 bytes)");
  // Cut before the 2-byte UTF-8 sequence rather than inside it.
  EXPECT_EQ(Value::make_string("ab\xc3\xa9z").to_display_string(4, 3), "\"ab\"... (5 bytes)");
  std::vector<Value> items;
  for (uint32_t k = 0; k < 6; ++k) items.push_back(Value::make_u32(k));
  EXPECT_EQ(Value::make_array(ValueType::U32, items).to_display_string(2),
            "[0, 1, ... (6 items)]");
  EXPECT_EQ(Value::make_array(ValueType::U32, {}).to_display_string(), "[]");
}

TEST(GgufWriter, RejectsInconsistentInput) {
  GgufWriter w;
  w.add_tensor("t", {32}, GgmlType::Q8_0, std::vector<uint8_t>(33));
  Result<std::vector<uint8_t>> r = w.finish_checked();
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("'t'"), std::string::npos);
  EXPECT_TRUE(w.finish().empty());

  GgufWriter w2;
  w2.add_tensor("t", {31}, GgmlType::Q8_0, std::vector<uint8_t>(34));
  EXPECT_FALSE(w2.finish_checked().is_ok());

  GgufWriter w3;
  w3.set("mixed", Value::make_array(ValueType::U32, {Value::make_u32(1), Value::make_string("x")}));
  EXPECT_FALSE(w3.finish_checked().is_ok());
  EXPECT_FALSE(GgufWriter().finish_checked(48).is_ok());
}

TEST(GgufWriter, SettingAKeyTwiceReplacesIt) {
  GgufWriter w;
  w.set_u32("a", 1);
  w.set_u32("b", 2);
  w.set_string("a", "x");
  Result<GgufFile> f = GgufFile::from_bytes(w.finish());
  ASSERT_TRUE(f.is_ok());
  ASSERT_EQ(f->metadata().size(), 2u);
  EXPECT_EQ(f->metadata()[0].first, "a");
  EXPECT_EQ(*f->get_string("a"), "x");
}

}  // namespace
}  // namespace gsa::gguf

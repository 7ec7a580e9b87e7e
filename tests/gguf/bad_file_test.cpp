// Malformed GGUF input: every case must give one clear Status naming the problem, never a
// crash or an out-of-bounds read (run these under ASan+UBSan). Hand-built images use RawBytes.
#include <gtest/gtest.h>

#include <random>

#include "gguf/gguf.h"
#include "gguf_test_util.h"

namespace gsa::gguf {
namespace {

using testing::RawBytes;

void expect_error(const std::vector<uint8_t>& bytes, StatusCode code, const std::string& needle,
                  const ParseLimits& limits = {}) {
  Result<GgufFile> f = GgufFile::from_bytes(bytes, limits);
  ASSERT_FALSE(f.is_ok()) << "expected an error containing '" << needle << "'";
  EXPECT_EQ(f.status().code(), code) << f.status().to_string();
  EXPECT_NE(f.status().message().find(needle), std::string::npos)
      << "message: " << f.status().message() << "\nexpected to contain: " << needle;
}

RawBytes one_kv(uint64_t n_tensors = 0) {
  RawBytes b;
  b.header(3, n_tensors, 1).str("k").u32(uint32_t(ValueType::U32)).u32(1);
  return b;
}

TEST(GgufBadFile, TruncatedAtEveryOffset) {
  const std::vector<uint8_t> full = testing::small_valid_file();
  Result<GgufFile> f = GgufFile::from_bytes(full);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  // Bytes after the last tensor's data are padding: the file is complete without them.
  uint64_t needed = 0;
  for (const TensorInfo& t : f->tensors()) {
    needed = std::max(needed, f->data_offset() + t.offset + t.n_bytes);
  }
  ASSERT_LT(needed, full.size());
  for (size_t len = 0; len < full.size(); ++len) {
    std::vector<uint8_t> prefix(full.begin(), full.begin() + long(len));
    Result<GgufFile> g = GgufFile::from_bytes(prefix);
    if (len < needed) {
      ASSERT_FALSE(g.is_ok()) << "prefix of " << len << " bytes parsed";
      EXPECT_EQ(g.status().code(), StatusCode::InvalidArgument) << g.status().to_string();
      const std::string& m = g.status().message();
      EXPECT_TRUE(m.find("truncated") != std::string::npos ||
                  m.find("past the end") != std::string::npos)
          << len << ": " << m;
    } else {
      EXPECT_TRUE(g.is_ok()) << len << ": " << g.status().to_string();
    }
  }
}

TEST(GgufBadFile, WrongMagic) {
  std::vector<uint8_t> bytes = testing::small_valid_file();
  bytes[0] = 'g';
  expect_error(bytes, StatusCode::InvalidArgument, "not a GGUF file");
  expect_error({'G', 'G', 'U'}, StatusCode::InvalidArgument, "truncated");
  expect_error({}, StatusCode::InvalidArgument, "truncated");
}

TEST(GgufBadFile, UnsupportedVersions) {
  for (uint32_t v : {0u, 1u, 4u, 1000u}) {
    RawBytes b;
    b.header(v, 0, 0);
    expect_error(b.bytes(), StatusCode::Unsupported, fmt::format("version {}", v));
  }
  RawBytes be;
  be.header(0x03000000u, 0, 0);
  expect_error(be.bytes(), StatusCode::Unsupported, "big-endian");
}

TEST(GgufBadFile, AbsurdCounts) {
  RawBytes b1;
  b1.header(3, 1ull << 62, 0);
  expect_error(b1.bytes(), StatusCode::InvalidArgument, "tensor count");
  RawBytes b2;
  b2.header(3, 0, 1ull << 40);
  expect_error(b2.bytes(), StatusCode::InvalidArgument, "metadata count");
  RawBytes b3;  // within the limits, but more than the bytes left could hold
  b3.header(3, 0, 1000).zeros(64);
  expect_error(b3.bytes(), StatusCode::InvalidArgument, "cannot fit");
  RawBytes b4;
  b4.header(3, 0, 1).str("arr").u32(uint32_t(ValueType::Array)).u32(uint32_t(ValueType::U32));
  b4.u64(1ull << 20).zeros(16);
  expect_error(b4.bytes(), StatusCode::InvalidArgument, "array of 1048576 u32");
  RawBytes b5;
  b5.header(3, 0, 1).str("arr").u32(uint32_t(ValueType::Array)).u32(uint32_t(ValueType::U8));
  b5.u64(~0ull);
  expect_error(b5.bytes(), StatusCode::InvalidArgument, "more than the limit");
}

TEST(GgufBadFile, AbsurdStringLengths) {
  RawBytes key;
  key.header(3, 0, 1).u64(1ull << 63).zeros(16);
  expect_error(key.bytes(), StatusCode::InvalidArgument, "metadata key");
  RawBytes key2;
  key2.header(3, 0, 1).u64(100).zeros(20);
  expect_error(key2.bytes(), StatusCode::InvalidArgument, "truncated");
  RawBytes val;
  val.header(3, 0, 1).str("k").u32(uint32_t(ValueType::String)).u64(~0ull);
  expect_error(val.bytes(), StatusCode::InvalidArgument, "metadata 'k': string value");
  RawBytes name;
  name.header(3, 1, 0).u64(1ull << 40).zeros(32);
  expect_error(name.bytes(), StatusCode::InvalidArgument, "tensor name");
}

TEST(GgufBadFile, UnknownValueTypes) {
  RawBytes b;
  b.header(3, 0, 1).str("k").u32(13).u32(0);
  expect_error(b.bytes(), StatusCode::InvalidArgument, "unknown metadata value type 13");
  RawBytes arr;
  arr.header(3, 0, 1).str("k").u32(uint32_t(ValueType::Array)).u32(0xffffffffu).u64(1).zeros(8);
  expect_error(arr.bytes(), StatusCode::InvalidArgument, "unknown metadata value type 4294967295");
}

TEST(GgufBadFile, ArraysNestedTooDeep) {
  RawBytes b;
  b.header(3, 0, 1).str("deep").u32(uint32_t(ValueType::Array));
  for (int d = 0; d < 20; ++d) b.u32(uint32_t(ValueType::Array)).u64(1);
  b.u32(uint32_t(ValueType::U8)).u64(0);
  expect_error(b.bytes(), StatusCode::InvalidArgument, "nested deeper");
}

TEST(GgufBadFile, DuplicateKeysAndTensorNames) {
  RawBytes kv;
  kv.header(3, 0, 2).str("k").u32(uint32_t(ValueType::U8)).u8(1);
  kv.str("k").u32(uint32_t(ValueType::U8)).u8(2);
  expect_error(kv.bytes(), StatusCode::InvalidArgument, "duplicate metadata key 'k'");
  RawBytes t;
  t.header(3, 2, 0).tensor("w", {8}, GgmlType::F32, 0).tensor("w", {8}, GgmlType::F32, 32);
  t.pad(32).zeros(64);
  expect_error(t.bytes(), StatusCode::InvalidArgument, "duplicate tensor name 'w'");
}

TEST(GgufBadFile, TensorShapes) {
  RawBytes dims;
  dims.header(3, 1, 0).tensor("t", {1, 1, 1, 1, 1}, GgmlType::F32, 0).pad(32).zeros(32);
  expect_error(dims.bytes(), StatusCode::InvalidArgument, "tensor 't': 5 dimensions");
  RawBytes neg;
  neg.header(3, 1, 0).tensor("t", {4, -1}, GgmlType::F32, 0).pad(32).zeros(32);
  expect_error(neg.bytes(), StatusCode::InvalidArgument, "dimension 1 is negative");
  RawBytes ovf;
  ovf.header(3, 1, 0).tensor("t", {1ll << 40, 1ll << 40}, GgmlType::F32, 0).pad(32).zeros(32);
  expect_error(ovf.bytes(), StatusCode::InvalidArgument, "overflows");
  RawBytes bytes_ovf;  // 2^62 elements fit in int64, their 2^64 bytes do not fit in u64
  bytes_ovf.header(3, 1, 0).tensor("t", {1ll << 31, 1ll << 31}, GgmlType::F32, 0).pad(32);
  expect_error(bytes_ovf.bytes(), StatusCode::InvalidArgument, "overflows");
  RawBytes block;
  block.header(3, 1, 0).tensor("t", {48}, GgmlType::Q4_0, 0).pad(32).zeros(64);
  expect_error(block.bytes(), StatusCode::InvalidArgument, "not a multiple of the q4_0 block");
}

TEST(GgufBadFile, UnknownTensorType) {
  for (uint32_t type : {4u, 31u, 1000u}) {
    RawBytes b;
    b.header(3, 1, 0).tensor("t", {8}, GgmlType(type), 0).pad(32).zeros(64);
    expect_error(b.bytes(), StatusCode::InvalidArgument, fmt::format("unknown ggml type {}", type));
  }
}

TEST(GgufBadFile, OffsetsPastTheEnd) {
  RawBytes b;
  b.header(3, 1, 0).tensor("t", {16}, GgmlType::F32, 32).pad(32).zeros(64);  // needs 32 + 64
  expect_error(b.bytes(), StatusCode::InvalidArgument, "tensor 't': data at offset 32");
  RawBytes wrap;
  wrap.header(3, 1, 0).tensor("t", {16}, GgmlType::F32, ~0ull - 31).pad(32).zeros(64);
  expect_error(wrap.bytes(), StatusCode::InvalidArgument, "runs past the end");
  RawBytes nodata;  // tensors declared, file ends inside the index padding
  nodata.header(3, 1, 0).tensor("t", {1}, GgmlType::F32, 0);
  expect_error(nodata.bytes(), StatusCode::InvalidArgument, "data section starts");
}

TEST(GgufBadFile, OverlappingTensors) {
  RawBytes b;
  b.header(3, 2, 0).tensor("a", {16}, GgmlType::F32, 0).tensor("b", {8}, GgmlType::F32, 32);
  b.pad(32).zeros(128);
  expect_error(b.bytes(), StatusCode::InvalidArgument, "tensors 'a' and 'b' overlap");
}

TEST(GgufBadFile, MisalignedTensor) {
  RawBytes b;
  b.header(3, 1, 0).tensor("t", {4}, GgmlType::F32, 4).pad(32).zeros(64);
  expect_error(b.bytes(), StatusCode::InvalidArgument, "not a multiple of the alignment 32");
}

TEST(GgufBadFile, BadAlignmentValues) {
  RawBytes npot;
  npot.header(3, 0, 1).str("general.alignment").u32(uint32_t(ValueType::U32)).u32(48);
  expect_error(npot.bytes(), StatusCode::InvalidArgument, "not a power of two");
  RawBytes zero;
  zero.header(3, 0, 1).str("general.alignment").u32(uint32_t(ValueType::U32)).u32(0);
  expect_error(zero.bytes(), StatusCode::InvalidArgument, "not a power of two");
  RawBytes type;
  type.header(3, 0, 1).str("general.alignment").u32(uint32_t(ValueType::String)).str("32");
  expect_error(type.bytes(), StatusCode::InvalidArgument, "general.alignment must be u32");
}

TEST(GgufBadFile, TighterLimitsAreEnforced) {
  ParseLimits limits;
  limits.max_string_bytes = 4;
  RawBytes b;
  b.header(3, 0, 1).str("longkey").u32(uint32_t(ValueType::U8)).u8(0);
  expect_error(b.bytes(), StatusCode::InvalidArgument, "more than the limit 4", limits);
  ParseLimits few;
  few.max_total_values = 3;
  RawBytes a;
  a.header(3, 0, 1).str("a").u32(uint32_t(ValueType::Array)).u32(uint32_t(ValueType::U8)).u64(4);
  a.zeros(4);
  expect_error(a.bytes(), StatusCode::InvalidArgument, "more than 3 array elements", few);
}

TEST(GgufBadFile, KvWithoutTensorsIsValid) {
  EXPECT_TRUE(GgufFile::from_bytes(one_kv().bytes()).is_ok());
}

// Random corruption of a valid file: whatever happens, the parser returns (ASan/UBSan watch the
// reads), and successful parses describe tensors that lie inside the file.
TEST(GgufBadFile, RandomCorruptionNeverCrashes) {
  const std::vector<uint8_t> base = testing::small_valid_file();
  std::mt19937 rng(1234);
  int parsed = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<uint8_t> bytes = base;
    const int n_flips = 1 + int(rng() % 4);
    for (int k = 0; k < n_flips; ++k) bytes[rng() % bytes.size()] = uint8_t(rng());
    Result<GgufFile> f = GgufFile::from_bytes(bytes);
    if (!f.is_ok()) {
      EXPECT_FALSE(f.status().message().empty());
      continue;
    }
    ++parsed;
    for (const TensorInfo& t : f->tensors()) {
      EXPECT_LE(f->data_offset() + t.offset + t.n_bytes, f->file_size());
      if (ggml_type_can_dequantize(t.type) && t.n_elements() <= 4096) {
        std::vector<float> out(size_t(t.n_elements()));
        EXPECT_TRUE(f->read_tensor_f32(t, out.data()).is_ok());
      }
    }
  }
  EXPECT_GT(parsed, 0);  // flips inside tensor data keep the file valid
}

}  // namespace
}  // namespace gsa::gguf

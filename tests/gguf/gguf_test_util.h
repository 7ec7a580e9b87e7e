// Helpers shared by the gguf tests: a raw little-endian byte builder for hand-made (often
// malformed) GGUF images, golden-file loading, and a small valid file used as a mutation base.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "gguf/gguf.h"

namespace gsa::gguf::testing {

/// Appends little-endian fields; used to write GGUF images field by field.
class RawBytes {
 public:
  RawBytes& u8(uint8_t v) { return put(v); }
  RawBytes& u32(uint32_t v) { return put(v); }
  RawBytes& u64(uint64_t v) { return put(v); }
  RawBytes& i64(int64_t v) { return put(v); }
  RawBytes& f32(float v) { return put(v); }
  RawBytes& str(const std::string& s) {
    u64(s.size());
    bytes_.insert(bytes_.end(), s.begin(), s.end());
    return *this;
  }
  RawBytes& header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    return u32(0x46554747).u32(version).u64(n_tensors).u64(n_kv);
  }
  /// One tensor index entry.
  RawBytes& tensor(const std::string& name, const std::vector<int64_t>& shape, GgmlType type,
                   uint64_t offset) {
    str(name).u32(uint32_t(shape.size()));
    for (int64_t d : shape) i64(d);
    return u32(uint32_t(type)).u64(offset);
  }
  RawBytes& pad(size_t alignment) {
    bytes_.resize((bytes_.size() + alignment - 1) / alignment * alignment, 0);
    return *this;
  }
  RawBytes& zeros(size_t n) {
    bytes_.resize(bytes_.size() + n, 0);
    return *this;
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  size_t size() const { return bytes_.size(); }

 private:
  template <typename T>
  RawBytes& put(T v) {
    const size_t at = bytes_.size();
    bytes_.resize(at + sizeof(T));
    std::memcpy(bytes_.data() + at, &v, sizeof(T));
    return *this;
  }
  std::vector<uint8_t> bytes_;
};

inline std::vector<uint8_t> read_binary(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// A small valid file with every metadata type, a nested array and three tensors.
inline std::vector<uint8_t> small_valid_file() {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.block_count", 2);
  w.set_f32("llama.rope.freq_base", 10000.0f);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set_string_array("tokenizer.ggml.tokens", {"a", "b", "<s>"});
  w.set_i32_array("tokenizer.ggml.token_type", {1, 1, 3});
  w.set_f32_array("tokenizer.ggml.scores", {0.5f, -1.0f, 0.0f});
  Value nested = Value::make_array(
      ValueType::Array, {Value::make_array(ValueType::U32, {Value::make_u32(7)}),
                         Value::make_array(ValueType::U32, {})});
  w.set("test.nested", nested);
  w.add_tensor_f32("norm", {4}, {1.0f, 2.0f, 3.0f, 4.0f});
  std::vector<uint8_t> q8(34 * 2, 0);
  q8[0] = 0x00, q8[1] = 0x3c;  // d = 1.0 (f16) in the first block
  q8[2] = 5;
  w.add_tensor("w", {32, 2}, GgmlType::Q8_0, q8);
  w.add_tensor_f32("bias", {2}, {-1.0f, 1.0f});
  return w.finish();
}

}  // namespace gsa::gguf::testing

// GGUF (v2/v3) model files: a bounds-checked reader over a read-only mapping, typed metadata
// access, the tensor index, ggml block-quantized dequantization to f32, and an in-memory writer.
// Every malformed input is reported as a Status naming the problem; nothing here aborts on input.
// It does not interpret model hyperparameters (model/ does) or tokenizer data (tokenizer/ does).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace gsa {
class ThreadPool;
}

namespace gsa::gguf {

/// ggml tensor element types, numbered as ggml numbers them (the values are stored in files).
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
};

/// "q4_K", "f32", ...; "unknown" for values outside the enum.
const char* ggml_type_name(GgmlType t);
/// Elements per block and bytes per block; false for unknown types. Known-but-not-dequantizable
/// types (IQ*, integer types) still have a layout, so files holding them can be indexed.
bool ggml_type_layout(GgmlType t, int64_t* block_elems, int64_t* block_bytes);
/// True when dequantize() supports t.
bool ggml_type_can_dequantize(GgmlType t);
/// Bytes of n elements (n >= 0 and a multiple of the block size); error otherwise or on overflow.
Result<uint64_t> ggml_row_bytes(GgmlType t, int64_t n);
/// Dequantizes n elements (a multiple of the block size) from src (src_bytes readable) to f32.
/// dst must hold n floats. Unsupported type, bad n or too few source bytes give an error.
Status dequantize(GgmlType t, const void* src, uint64_t src_bytes, float* dst, int64_t n);

/// True when quantize() supports t (F32, F16, BF16, Q8_0, Q4_0, Q4_1).
bool ggml_type_can_quantize(GgmlType t);
/// Quantizes n floats (a multiple of the block size) to t with ggml's reference rounding
/// (bit-exact with ggml's quantize_row_*_ref and gguf-py). Non-finite input to a block format
/// is an error.
Result<std::vector<uint8_t>> quantize(GgmlType t, const float* src, int64_t n);

/// GGUF metadata value types, numbered as the file format numbers them.
enum class ValueType : uint32_t { U8 = 0, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64 };

const char* value_type_name(ValueType t);

/// One metadata value. Scalars live in `u` (unsigned types), `i` (signed types), `f` (floats) or
/// `b`; strings in `str`; arrays in `array` with `elem_type` (arrays may nest).
struct Value {
  ValueType type = ValueType::U8;
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0.0;
  bool b = false;
  std::string str;
  ValueType elem_type = ValueType::U8;  // element type when type == Array
  std::vector<Value> array;

  bool is_integer() const;
  bool is_float() const { return type == ValueType::F32 || type == ValueType::F64; }
  /// Typed accessors; InvalidArgument naming both types on a mismatch.
  Result<uint64_t> as_u64() const;  // any integer type that is >= 0
  Result<int64_t> as_i64() const;   // any integer type that fits
  Result<double> as_f64() const;    // F32/F64
  Result<bool> as_bool() const;
  Result<std::string> as_string() const;
  /// Short display form for listings (`gsa info`): 30, 1e-05, true, "llama" (strings cut at
  /// max_chars), ["a", "b", ... (49152 items)] (arrays show max_elems elements).
  std::string to_display_string(size_t max_elems = 4, size_t max_chars = 60) const;

  static Value make_u32(uint32_t v);
  static Value make_i32(int32_t v);
  static Value make_u64(uint64_t v);
  static Value make_f32(float v);
  static Value make_bool(bool v);
  static Value make_string(std::string v);
  /// An array of `elem` values; every element must have type `elem`.
  static Value make_array(ValueType elem, std::vector<Value> values);
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // ne[0] first, as GGUF stores it: ne[0] is the contiguous row length
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;   // relative to the data section
  uint64_t n_bytes = 0;  // bytes of the whole tensor
  int64_t n_elements() const;
};

/// Hard limits applied while parsing, so a hostile header cannot make us allocate without bound.
/// A parsed value takes about 100 bytes of memory, so max_total_values also bounds the memory of
/// the metadata (about 0.4 GiB at the default; real vocabularies use under 1M values).
struct ParseLimits {
  uint64_t max_string_bytes = 1u << 26;  // one key or string value
  uint64_t max_array_elems = 1u << 22;   // one metadata array
  uint64_t max_kv = 1u << 20;            // metadata entries
  uint64_t max_tensors = 1u << 20;       // tensor index entries
  uint32_t max_array_depth = 8;          // nesting of arrays of arrays
  uint32_t max_dims = 4;                 // GGML_MAX_DIMS
  uint64_t max_total_values = 1u << 22;  // elements over all metadata arrays
};

class GgufFile {
 public:
  GgufFile();
  ~GgufFile();
  GgufFile(GgufFile&&) noexcept;
  GgufFile& operator=(GgufFile&&) noexcept;
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  /// Maps `path` read-only and parses it. Errors name the path.
  static Result<GgufFile> open(const std::string& path, const ParseLimits& limits = {});
  /// Parses an in-memory file (tests, fuzzing). Takes ownership of `bytes`.
  static Result<GgufFile> from_bytes(std::vector<uint8_t> bytes, const ParseLimits& limits = {});

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  /// Metadata in file order.
  const std::vector<std::pair<std::string, Value>>& metadata() const { return metadata_; }
  const Value* find(std::string_view key) const;

  /// Typed getters: NotFound if absent, InvalidArgument naming the key if the type differs.
  Result<std::string> get_string(std::string_view key) const;
  Result<uint32_t> get_u32(std::string_view key) const;  // accepts any integer type that fits
  Result<uint64_t> get_u64(std::string_view key) const;  // accepts any non-negative integer
  Result<float> get_f32(std::string_view key) const;     // accepts F32/F64
  Result<bool> get_bool(std::string_view key) const;
  Result<std::vector<std::string>> get_string_array(std::string_view key) const;
  Result<std::vector<int32_t>> get_i32_array(std::string_view key) const;  // any integer elems that fit
  Result<std::vector<float>> get_f32_array(std::string_view key) const;    // F32/F64 elems

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;
  /// Pointer into the mapping; t.n_bytes readable bytes (checked at parse time).
  const uint8_t* tensor_data(const TensorInfo& t) const;
  uint64_t file_size() const { return size_; }
  /// Offset of the data section from the start of the file.
  uint64_t data_offset() const { return data_offset_; }

  /// Dequantizes a whole tensor to f32 into dst (t.n_elements() floats). t must come from this
  /// file's tensors(). With a pool, rows are split across its threads.
  Status read_tensor_f32(const TensorInfo& t, float* dst) const;
  Status read_tensor_f32(const TensorInfo& t, float* dst, ThreadPool* pool) const;

 private:
  struct Storage;
  static Result<GgufFile> parse(std::unique_ptr<Storage> storage, const ParseLimits& limits);
  Status parse_header(const ParseLimits& limits);

  std::unique_ptr<Storage> storage_;
  const uint8_t* data_ = nullptr;  // whole file
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> metadata_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> kv_index_;      // key -> index in metadata_
  std::map<std::string, size_t, std::less<>> tensor_index_;  // name -> index in tensors_
};

/// Builds GGUF v3 files in memory (unit tests across gsa make tiny synthetic models with it, and
/// tools write synthetic-weight models at real shapes). Setting a key twice replaces the value.
class GgufWriter {
 public:
  void set(std::string key, Value v);
  void set_u32(std::string key, uint32_t v);
  void set_i32(std::string key, int32_t v);
  void set_u64(std::string key, uint64_t v);
  void set_f32(std::string key, float v);
  void set_bool(std::string key, bool v);
  void set_string(std::string key, std::string v);
  void set_string_array(std::string key, const std::vector<std::string>& v);
  void set_i32_array(std::string key, const std::vector<int32_t>& v);
  void set_f32_array(std::string key, const std::vector<float>& v);

  /// data must hold exactly ggml_row_bytes(type, product of shape) bytes (checked in finish()).
  void add_tensor(std::string name, std::vector<int64_t> shape, GgmlType type,
                  std::vector<uint8_t> data);
  /// Convenience: an F32 tensor from floats.
  void add_tensor_f32(std::string name, std::vector<int64_t> shape, const std::vector<float>& v);
  /// Quantizes values (product of shape elements, ne[0] first) to type and adds the tensor.
  Status add_tensor_quantized(std::string name, std::vector<int64_t> shape, GgmlType type,
                              const std::vector<float>& values);

  /// Serializes. Writes `general.alignment` when alignment != 32 (a value set by the caller is
  /// replaced by `alignment`). Returns an empty vector
  /// only if a tensor's data size does not match its shape (use finish_checked for the reason).
  std::vector<uint8_t> finish(uint32_t alignment = 32) const;
  Result<std::vector<uint8_t>> finish_checked(uint32_t alignment = 32) const;
  Status write_file(const std::string& path, uint32_t alignment = 32) const;

 private:
  struct PendingTensor {
    std::string name;
    std::vector<int64_t> shape;  // ne[0] first
    GgmlType type;
    std::vector<uint8_t> data;
  };
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace gsa::gguf

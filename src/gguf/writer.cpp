// GgufWriter: serializes metadata and tensors into a GGUF v3 file image in memory, laid out the
// way llama.cpp lays it out (tensor data in index order, each at a multiple of the alignment).
// It checks sizes and array element types; it does not quantize (callers pass block bytes).
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/checked.h"
#include "gguf/gguf.h"

namespace gsa::gguf {
namespace {

class ByteSink {
 public:
  template <typename T>
  void put(T v) {
    const size_t at = out_.size();
    out_.resize(at + sizeof(T));
    std::memcpy(out_.data() + at, &v, sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    out_.insert(out_.end(), s.begin(), s.end());
  }
  void put_bytes(const std::vector<uint8_t>& b) { out_.insert(out_.end(), b.begin(), b.end()); }
  void pad_to(uint64_t alignment) {
    out_.resize((out_.size() + alignment - 1) / alignment * alignment, 0);
  }
  std::vector<uint8_t>& bytes() { return out_; }

 private:
  std::vector<uint8_t> out_;
};

Status put_value(ByteSink* sink, const Value& v, const std::string& key) {
  switch (v.type) {
    case ValueType::U8: sink->put<uint8_t>(uint8_t(v.u)); break;
    case ValueType::U16: sink->put<uint16_t>(uint16_t(v.u)); break;
    case ValueType::U32: sink->put<uint32_t>(uint32_t(v.u)); break;
    case ValueType::U64: sink->put<uint64_t>(v.u); break;
    case ValueType::I8: sink->put<int8_t>(int8_t(v.i)); break;
    case ValueType::I16: sink->put<int16_t>(int16_t(v.i)); break;
    case ValueType::I32: sink->put<int32_t>(int32_t(v.i)); break;
    case ValueType::I64: sink->put<int64_t>(v.i); break;
    case ValueType::F32: sink->put<float>(float(v.f)); break;
    case ValueType::F64: sink->put<double>(v.f); break;
    case ValueType::Bool: sink->put<uint8_t>(v.b ? 1 : 0); break;
    case ValueType::String: sink->put_string(v.str); break;
    case ValueType::Array:
      sink->put<uint32_t>(uint32_t(v.elem_type));
      sink->put<uint64_t>(v.array.size());
      for (const Value& e : v.array) {
        if (e.type != v.elem_type) {
          return invalid_argument("metadata '{}': array of {} holds a {}", key,
                                  value_type_name(v.elem_type), value_type_name(e.type));
        }
        GSA_RETURN_IF_ERROR(put_value(sink, e, key));
      }
      break;
    default: return invalid_argument("metadata '{}': unknown value type {}", key, uint32_t(v.type));
  }
  return Status::ok();
}

}  // namespace

void GgufWriter::set(std::string key, Value v) {
  for (auto& kv : kv_) {
    if (kv.first == key) {
      kv.second = std::move(v);
      return;
    }
  }
  kv_.emplace_back(std::move(key), std::move(v));
}

void GgufWriter::set_u32(std::string key, uint32_t v) { set(std::move(key), Value::make_u32(v)); }
void GgufWriter::set_i32(std::string key, int32_t v) { set(std::move(key), Value::make_i32(v)); }
void GgufWriter::set_u64(std::string key, uint64_t v) { set(std::move(key), Value::make_u64(v)); }
void GgufWriter::set_f32(std::string key, float v) { set(std::move(key), Value::make_f32(v)); }
void GgufWriter::set_bool(std::string key, bool v) { set(std::move(key), Value::make_bool(v)); }
void GgufWriter::set_string(std::string key, std::string v) {
  set(std::move(key), Value::make_string(std::move(v)));
}

void GgufWriter::set_string_array(std::string key, const std::vector<std::string>& v) {
  std::vector<Value> a;
  a.reserve(v.size());
  for (const std::string& s : v) a.push_back(Value::make_string(s));
  set(std::move(key), Value::make_array(ValueType::String, std::move(a)));
}

void GgufWriter::set_i32_array(std::string key, const std::vector<int32_t>& v) {
  std::vector<Value> a;
  a.reserve(v.size());
  for (int32_t x : v) a.push_back(Value::make_i32(x));
  set(std::move(key), Value::make_array(ValueType::I32, std::move(a)));
}

void GgufWriter::set_f32_array(std::string key, const std::vector<float>& v) {
  std::vector<Value> a;
  a.reserve(v.size());
  for (float x : v) a.push_back(Value::make_f32(x));
  set(std::move(key), Value::make_array(ValueType::F32, std::move(a)));
}

void GgufWriter::add_tensor(std::string name, std::vector<int64_t> shape, GgmlType type,
                            std::vector<uint8_t> data) {
  tensors_.push_back({std::move(name), std::move(shape), type, std::move(data)});
}

void GgufWriter::add_tensor_f32(std::string name, std::vector<int64_t> shape,
                                const std::vector<float>& v) {
  std::vector<uint8_t> bytes(v.size() * sizeof(float));
  if (!v.empty()) std::memcpy(bytes.data(), v.data(), bytes.size());
  add_tensor(std::move(name), std::move(shape), GgmlType::F32, std::move(bytes));
}

Result<std::vector<uint8_t>> GgufWriter::finish_checked(uint32_t alignment) const {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
    return invalid_argument("alignment {} is not a power of two", alignment);
  }
  std::vector<std::pair<std::string, Value>> kv = kv_;
  bool has_alignment = false;
  for (auto& e : kv) {
    if (e.first == "general.alignment") {
      e.second = Value::make_u32(alignment);
      has_alignment = true;
    }
  }
  if (!has_alignment && alignment != 32) kv.emplace_back("general.alignment", Value::make_u32(alignment));

  // Tensor offsets inside the data section, each padded to the alignment.
  std::vector<uint64_t> offsets;
  uint64_t data_bytes = 0;
  for (const PendingTensor& t : tensors_) {
    uint64_t n = 1;
    for (int64_t d : t.shape) {
      if (d < 0 || !checked_mul(n, uint64_t(d), &n) || n > uint64_t(INT64_MAX)) {
        return invalid_argument("tensor '{}': bad shape", t.name);
      }
    }
    Result<uint64_t> need = ggml_row_bytes(t.type, int64_t(n));
    if (!need.is_ok()) return need.status().with_context(fmt::format("tensor '{}'", t.name));
    if (*need != t.data.size()) {
      return invalid_argument("tensor '{}': {} data bytes given, {} {} elements need {}", t.name,
                              t.data.size(), n, ggml_type_name(t.type), *need);
    }
    offsets.push_back(data_bytes);
    data_bytes = (data_bytes + t.data.size() + alignment - 1) / alignment * alignment;
  }

  ByteSink sink;
  sink.put<uint32_t>(0x46554747);  // "GGUF"
  sink.put<uint32_t>(3);
  sink.put<uint64_t>(tensors_.size());
  sink.put<uint64_t>(kv.size());
  for (const auto& [key, value] : kv) {
    sink.put_string(key);
    sink.put<uint32_t>(uint32_t(value.type));
    GSA_RETURN_IF_ERROR(put_value(&sink, value, key));
  }
  for (size_t k = 0; k < tensors_.size(); ++k) {
    const PendingTensor& t = tensors_[k];
    sink.put_string(t.name);
    sink.put<uint32_t>(uint32_t(t.shape.size()));
    for (int64_t d : t.shape) sink.put<int64_t>(d);
    sink.put<uint32_t>(uint32_t(t.type));
    sink.put<uint64_t>(offsets[k]);
  }
  if (!tensors_.empty()) sink.pad_to(alignment);
  for (const PendingTensor& t : tensors_) {
    sink.put_bytes(t.data);
    sink.pad_to(alignment);
  }
  return std::move(sink.bytes());
}

std::vector<uint8_t> GgufWriter::finish(uint32_t alignment) const {
  Result<std::vector<uint8_t>> r = finish_checked(alignment);
  if (!r.is_ok()) return {};
  return std::move(r).value();
}

Status GgufWriter::write_file(const std::string& path, uint32_t alignment) const {
  GSA_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, finish_checked(alignment));
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return io_error("cannot create '{}': {}", path, std::strerror(errno));
  const size_t written = std::fwrite(bytes.data(), 1, bytes.size(), f);
  const bool closed = std::fclose(f) == 0;
  if (written != bytes.size() || !closed) {
    return io_error("cannot write {} bytes to '{}'", bytes.size(), path);
  }
  return Status::ok();
}

}  // namespace gsa::gguf

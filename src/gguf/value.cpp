// GGUF metadata values: type names, constructors and the typed accessors that turn a type
// mismatch into an InvalidArgument naming both types. Parsing lives in gguf_file.cpp.
#include <algorithm>
#include <limits>

#include "gguf/gguf.h"

namespace gsa::gguf {

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::U8: return "u8";
    case ValueType::I8: return "i8";
    case ValueType::U16: return "u16";
    case ValueType::I16: return "i16";
    case ValueType::U32: return "u32";
    case ValueType::I32: return "i32";
    case ValueType::F32: return "f32";
    case ValueType::Bool: return "bool";
    case ValueType::String: return "string";
    case ValueType::Array: return "array";
    case ValueType::U64: return "u64";
    case ValueType::I64: return "i64";
    case ValueType::F64: return "f64";
  }
  return "unknown";
}

namespace {
bool is_unsigned(ValueType t) {
  return t == ValueType::U8 || t == ValueType::U16 || t == ValueType::U32 || t == ValueType::U64;
}
bool is_signed(ValueType t) {
  return t == ValueType::I8 || t == ValueType::I16 || t == ValueType::I32 || t == ValueType::I64;
}
}  // namespace

bool Value::is_integer() const { return is_unsigned(type) || is_signed(type); }

Result<uint64_t> Value::as_u64() const {
  if (is_unsigned(type)) return u;
  if (is_signed(type)) {
    if (i < 0) return invalid_argument("value {} is negative, expected an unsigned integer", i);
    return uint64_t(i);
  }
  return invalid_argument("expected an integer, got {}", value_type_name(type));
}

Result<int64_t> Value::as_i64() const {
  if (is_signed(type)) return i;
  if (is_unsigned(type)) {
    if (u > uint64_t(std::numeric_limits<int64_t>::max())) {
      return invalid_argument("value {} does not fit in i64", u);
    }
    return int64_t(u);
  }
  return invalid_argument("expected an integer, got {}", value_type_name(type));
}

Result<double> Value::as_f64() const {
  if (is_float()) return f;
  return invalid_argument("expected f32 or f64, got {}", value_type_name(type));
}

Result<bool> Value::as_bool() const {
  if (type == ValueType::Bool) return b;
  return invalid_argument("expected bool, got {}", value_type_name(type));
}

Result<std::string> Value::as_string() const {
  if (type == ValueType::String) return str;
  return invalid_argument("expected string, got {}", value_type_name(type));
}

namespace {
std::string display_string(const std::string& s, size_t max_chars) {
  size_t limit = std::min(max_chars, s.size());
  while (limit > 0 && limit < s.size() && (static_cast<unsigned char>(s[limit]) & 0xc0) == 0x80) {
    --limit;  // never cut inside a UTF-8 sequence
  }
  std::string out = "\"";
  for (size_t k = 0; k < limit; ++k) {
    const unsigned char c = static_cast<unsigned char>(s[k]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += char(c);
    }
  }
  out += s.size() > limit ? fmt::format("\"... ({} bytes)", s.size()) : "\"";
  return out;
}
}  // namespace

std::string Value::to_display_string(size_t max_elems, size_t max_chars) const {
  switch (type) {
    case ValueType::U8:
    case ValueType::U16:
    case ValueType::U32:
    case ValueType::U64: return fmt::format("{}", u);
    case ValueType::I8:
    case ValueType::I16:
    case ValueType::I32:
    case ValueType::I64: return fmt::format("{}", i);
    case ValueType::F32: return fmt::format("{}", float(f));
    case ValueType::F64: return fmt::format("{}", f);
    case ValueType::Bool: return b ? "true" : "false";
    case ValueType::String: return display_string(str, max_chars);
    case ValueType::Array: {
      std::string out = "[";
      for (size_t k = 0; k < array.size() && k < max_elems; ++k) {
        if (k > 0) out += ", ";
        out += array[k].to_display_string(max_elems, max_chars);
      }
      if (array.size() > max_elems) out += fmt::format(", ... ({} items)", array.size());
      return out + "]";
    }
  }
  return "?";
}

Value Value::make_u32(uint32_t v) {
  Value x;
  x.type = ValueType::U32;
  x.u = v;
  return x;
}
Value Value::make_i32(int32_t v) {
  Value x;
  x.type = ValueType::I32;
  x.i = v;
  return x;
}
Value Value::make_u64(uint64_t v) {
  Value x;
  x.type = ValueType::U64;
  x.u = v;
  return x;
}
Value Value::make_f32(float v) {
  Value x;
  x.type = ValueType::F32;
  x.f = v;
  return x;
}
Value Value::make_bool(bool v) {
  Value x;
  x.type = ValueType::Bool;
  x.b = v;
  return x;
}
Value Value::make_string(std::string v) {
  Value x;
  x.type = ValueType::String;
  x.str = std::move(v);
  return x;
}
Value Value::make_array(ValueType elem, std::vector<Value> values) {
  Value x;
  x.type = ValueType::Array;
  x.elem_type = elem;
  x.array = std::move(values);
  return x;
}

// ---- GgufFile typed getters --------------------------------------------------------------------

namespace {
template <typename T>
Result<T> with_key(Result<T> r, std::string_view key) {
  if (r.is_ok()) return r;
  return Status(r.status().code(), fmt::format("metadata '{}': {}", key, r.status().message()));
}
}  // namespace

Result<std::string> GgufFile::get_string(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return not_found("metadata key '{}' not found", key);
  return with_key(v->as_string(), key);
}

Result<uint64_t> GgufFile::get_u64(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return not_found("metadata key '{}' not found", key);
  return with_key(v->as_u64(), key);
}

Result<uint32_t> GgufFile::get_u32(std::string_view key) const {
  GSA_ASSIGN_OR_RETURN(const uint64_t x, get_u64(key));
  if (x > std::numeric_limits<uint32_t>::max()) {
    return invalid_argument("metadata '{}': value {} does not fit in u32", key, x);
  }
  return uint32_t(x);
}

Result<float> GgufFile::get_f32(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return not_found("metadata key '{}' not found", key);
  GSA_ASSIGN_OR_RETURN(const double x, with_key(v->as_f64(), key));
  return float(x);
}

Result<bool> GgufFile::get_bool(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return not_found("metadata key '{}' not found", key);
  return with_key(v->as_bool(), key);
}

namespace {
Result<const Value*> find_array(const GgufFile& f, std::string_view key) {
  const Value* v = f.find(key);
  if (!v) return not_found("metadata key '{}' not found", key);
  if (v->type != ValueType::Array) {
    return invalid_argument("metadata '{}': expected an array, got {}", key,
                            value_type_name(v->type));
  }
  return v;
}
}  // namespace

Result<std::vector<std::string>> GgufFile::get_string_array(std::string_view key) const {
  GSA_ASSIGN_OR_RETURN(const Value* v, find_array(*this, key));
  if (v->elem_type != ValueType::String) {
    return invalid_argument("metadata '{}': expected an array of string, got an array of {}", key,
                            value_type_name(v->elem_type));
  }
  std::vector<std::string> out;
  out.reserve(v->array.size());
  for (const Value& e : v->array) out.push_back(e.str);
  return out;
}

Result<std::vector<int32_t>> GgufFile::get_i32_array(std::string_view key) const {
  GSA_ASSIGN_OR_RETURN(const Value* v, find_array(*this, key));
  std::vector<int32_t> out;
  out.reserve(v->array.size());
  for (size_t k = 0; k < v->array.size(); ++k) {
    Result<int64_t> x = v->array[k].as_i64();
    if (!x.is_ok()) {
      return invalid_argument("metadata '{}'[{}]: {}", key, k, x.status().message());
    }
    if (*x < std::numeric_limits<int32_t>::min() || *x > std::numeric_limits<int32_t>::max()) {
      return invalid_argument("metadata '{}'[{}]: value {} does not fit in i32", key, k, *x);
    }
    out.push_back(int32_t(*x));
  }
  return out;
}

Result<std::vector<float>> GgufFile::get_f32_array(std::string_view key) const {
  GSA_ASSIGN_OR_RETURN(const Value* v, find_array(*this, key));
  if (v->elem_type != ValueType::F32 && v->elem_type != ValueType::F64) {
    return invalid_argument("metadata '{}': expected an array of f32, got an array of {}", key,
                            value_type_name(v->elem_type));
  }
  std::vector<float> out;
  out.reserve(v->array.size());
  for (const Value& e : v->array) out.push_back(float(e.f));
  return out;
}

}  // namespace gsa::gguf

// GgufFile: maps a GGUF v2/v3 file read-only and parses its header, metadata and tensor index
// through a bounds-checked cursor. Every length and count is checked against the bytes left and
// a limit before anything is allocated; tensor extents are checked against the data section.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>

#include <fmt/ranges.h>

#include "core/checked.h"
#include "core/thread_pool.h"
#include "gguf/gguf.h"

namespace gsa::gguf {

/// The bytes behind a GgufFile: either an owned vector or a read-only mapping.
struct GgufFile::Storage {
  std::vector<uint8_t> bytes;
  void* map = nullptr;
  size_t map_len = 0;

  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage() {
    if (map) munmap(map, map_len);
  }
  const uint8_t* data() const { return map ? static_cast<const uint8_t*>(map) : bytes.data(); }
  uint64_t size() const { return map ? map_len : bytes.size(); }
};

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kDefaultAlignment = 32;

/// Reads little-endian fields from [data, data + size); every read checks the bytes left and
/// reports what it was reading and where.
class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size) : data_(data), size_(size) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  Status need(uint64_t n, const char* what) const {
    if (n > left()) {
      return invalid_argument("truncated file: {} needs {} bytes at offset {}, only {} left", what,
                              n, pos_, left());
    }
    return Status::ok();
  }
  template <typename T>
  Status read(T* out, const char* what) {
    GSA_RETURN_IF_ERROR(need(sizeof(T), what));
    std::memcpy(out, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::ok();
  }
  Status read_string(std::string* out, uint64_t max_len, const char* what) {
    uint64_t len = 0;
    GSA_RETURN_IF_ERROR(read(&len, what));
    if (len > max_len) {
      return invalid_argument("{} at offset {} has length {}, more than the limit {}", what,
                              pos_ - 8, len, max_len);
    }
    GSA_RETURN_IF_ERROR(need(len, what));
    out->assign(reinterpret_cast<const char*>(data_ + pos_), size_t(len));
    pos_ += len;
    return Status::ok();
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

/// Smallest number of bytes one value of type t can occupy in a file (0 for unknown types).
uint64_t min_value_bytes(ValueType t) {
  switch (t) {
    case ValueType::U8:
    case ValueType::I8:
    case ValueType::Bool: return 1;
    case ValueType::U16:
    case ValueType::I16: return 2;
    case ValueType::U32:
    case ValueType::I32:
    case ValueType::F32: return 4;
    case ValueType::U64:
    case ValueType::I64:
    case ValueType::F64: return 8;
    case ValueType::String: return 8;  // the length
    case ValueType::Array: return 12;  // element type + count
  }
  return 0;
}

class MetadataParser {
 public:
  MetadataParser(Cursor* cur, const ParseLimits& limits) : cur_(cur), limits_(limits) {}

  Status read_value(ValueType type, uint32_t depth, Value* out) {
    out->type = type;
    switch (type) {
      case ValueType::U8: return read_scalar<uint8_t>(&out->u);
      case ValueType::U16: return read_scalar<uint16_t>(&out->u);
      case ValueType::U32: return read_scalar<uint32_t>(&out->u);
      case ValueType::U64: return read_scalar<uint64_t>(&out->u);
      case ValueType::I8: return read_scalar<int8_t>(&out->i);
      case ValueType::I16: return read_scalar<int16_t>(&out->i);
      case ValueType::I32: return read_scalar<int32_t>(&out->i);
      case ValueType::I64: return read_scalar<int64_t>(&out->i);
      case ValueType::F32: {
        float f = 0;
        GSA_RETURN_IF_ERROR(cur_->read(&f, "f32 value"));
        out->f = f;
        return Status::ok();
      }
      case ValueType::F64: return cur_->read(&out->f, "f64 value");
      case ValueType::Bool: {
        uint8_t b = 0;
        GSA_RETURN_IF_ERROR(cur_->read(&b, "bool value"));
        out->b = b != 0;
        return Status::ok();
      }
      case ValueType::String:
        return cur_->read_string(&out->str, limits_.max_string_bytes, "string value");
      case ValueType::Array: return read_array(depth, out);
    }
    return invalid_argument("unknown metadata value type {} at offset {}", uint32_t(type),
                            cur_->pos() - 4);
  }

  Status read_type(ValueType* out, const char* what) {
    uint32_t t = 0;
    GSA_RETURN_IF_ERROR(cur_->read(&t, what));
    if (t > uint32_t(ValueType::F64)) {
      return invalid_argument("unknown metadata value type {} at offset {}", t, cur_->pos() - 4);
    }
    *out = ValueType(t);
    return Status::ok();
  }

 private:
  template <typename T, typename Out>
  Status read_scalar(Out* out) {
    T v{};
    GSA_RETURN_IF_ERROR(cur_->read(&v, "integer value"));
    *out = Out(v);
    return Status::ok();
  }

  Status read_array(uint32_t depth, Value* out) {
    if (depth >= limits_.max_array_depth) {
      return invalid_argument("metadata arrays nested deeper than {} at offset {}",
                              limits_.max_array_depth, cur_->pos());
    }
    GSA_RETURN_IF_ERROR(read_type(&out->elem_type, "array element type"));
    uint64_t count = 0;
    GSA_RETURN_IF_ERROR(cur_->read(&count, "array length"));
    if (count > limits_.max_array_elems) {
      return invalid_argument("array at offset {} has {} elements, more than the limit {}",
                              cur_->pos() - 8, count, limits_.max_array_elems);
    }
    if (count > cur_->left() / min_value_bytes(out->elem_type)) {
      return invalid_argument("truncated file: array of {} {} at offset {} needs more than the {} "
                              "bytes left",
                              count, value_type_name(out->elem_type), cur_->pos() - 8,
                              cur_->left());
    }
    total_values_ += count;
    if (total_values_ > limits_.max_total_values) {
      return invalid_argument("metadata holds more than {} array elements in all",
                              limits_.max_total_values);
    }
    out->array.resize(size_t(count));
    for (Value& e : out->array) {
      GSA_RETURN_IF_ERROR(read_value(out->elem_type, depth + 1, &e));
    }
    return Status::ok();
  }

  Cursor* cur_;
  const ParseLimits& limits_;
  uint64_t total_values_ = 0;
};

Status parse_tensor_info(Cursor* cur, const ParseLimits& limits, uint32_t alignment,
                         TensorInfo* t) {
  GSA_RETURN_IF_ERROR(cur->read_string(&t->name, limits.max_string_bytes, "tensor name"));
  uint32_t n_dims = 0;
  GSA_RETURN_IF_ERROR(cur->read(&n_dims, "tensor dimension count"));
  if (n_dims > limits.max_dims) {
    return invalid_argument("tensor '{}': {} dimensions, at most {} supported", t->name, n_dims,
                            limits.max_dims);
  }
  t->shape.resize(n_dims);
  for (uint32_t d = 0; d < n_dims; ++d) {
    GSA_RETURN_IF_ERROR(cur->read(&t->shape[d], "tensor dimension"));
    if (t->shape[d] < 0) {
      return invalid_argument("tensor '{}': dimension {} is negative ({})", t->name, d,
                              t->shape[d]);
    }
  }
  uint32_t type = 0;
  GSA_RETURN_IF_ERROR(cur->read(&type, "tensor type"));
  t->type = GgmlType(type);
  int64_t block_elems = 0, block_bytes = 0;
  if (!ggml_type_layout(t->type, &block_elems, &block_bytes)) {
    return invalid_argument("tensor '{}': unknown ggml type {}", t->name, type);
  }
  GSA_RETURN_IF_ERROR(cur->read(&t->offset, "tensor offset"));

  uint64_t n_elems = 1;
  for (int64_t d : t->shape) {
    if (!checked_mul(n_elems, uint64_t(d), &n_elems) || n_elems > uint64_t(INT64_MAX)) {
      return invalid_argument("tensor '{}': element count of shape {} overflows", t->name,
                              fmt::join(t->shape, "x"));
    }
  }
  const int64_t row = t->shape.empty() ? 1 : t->shape[0];
  if (row % block_elems != 0) {
    return invalid_argument("tensor '{}': row length {} is not a multiple of the {} block size {}",
                            t->name, row, ggml_type_name(t->type), block_elems);
  }
  // n_elems is a multiple of the row length, hence of the block size.
  Result<uint64_t> bytes = ggml_row_bytes(t->type, int64_t(n_elems));
  if (!bytes.is_ok()) return bytes.status().with_context(fmt::format("tensor '{}'", t->name));
  t->n_bytes = *bytes;
  if (t->offset % alignment != 0) {
    return invalid_argument("tensor '{}': offset {} is not a multiple of the alignment {}",
                            t->name, t->offset, alignment);
  }
  return Status::ok();
}

}  // namespace

int64_t TensorInfo::n_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

GgufFile::GgufFile() = default;
GgufFile::~GgufFile() = default;
GgufFile::GgufFile(GgufFile&&) noexcept = default;
GgufFile& GgufFile::operator=(GgufFile&&) noexcept = default;

Result<GgufFile> GgufFile::open(const std::string& path, const ParseLimits& limits) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_error("cannot open '{}': {}", path, std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return io_error("cannot stat '{}': {}", path, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return invalid_argument("'{}' is not a regular file", path);
  }
  auto storage = std::make_unique<Storage>();
  if (st.st_size > 0) {
    void* p = mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return io_error("cannot map '{}': {}", path, std::strerror(err));
    }
    storage->map = p;
    storage->map_len = size_t(st.st_size);
  }
  ::close(fd);
  Result<GgufFile> f = parse(std::move(storage), limits);
  if (!f.is_ok()) return f.status().with_context(path);
  return f;
}

Result<GgufFile> GgufFile::from_bytes(std::vector<uint8_t> bytes, const ParseLimits& limits) {
  auto storage = std::make_unique<Storage>();
  storage->bytes = std::move(bytes);
  return parse(std::move(storage), limits);
}

Result<GgufFile> GgufFile::parse(std::unique_ptr<Storage> storage, const ParseLimits& limits) {
  GgufFile f;
  f.data_ = storage->data();
  f.size_ = storage->size();
  f.storage_ = std::move(storage);
  GSA_RETURN_IF_ERROR(f.parse_header(limits));
  return f;
}

Status GgufFile::parse_header(const ParseLimits& limits) {
  Cursor cur(data_, size_);
  uint32_t magic = 0;
  GSA_RETURN_IF_ERROR(cur.read(&magic, "magic"));
  if (magic != kMagic) {
    return invalid_argument("not a GGUF file: magic is {:02x} {:02x} {:02x} {:02x}, expected "
                            "47 47 55 46 (\"GGUF\")",
                            data_[0], data_[1], data_[2], data_[3]);
  }
  GSA_RETURN_IF_ERROR(cur.read(&version_, "version"));
  if ((version_ & 0xffffu) == 0 && version_ != 0) {
    return unsupported("big-endian GGUF files are not supported (version field {:#x})", version_);
  }
  if (version_ != 2 && version_ != 3) {
    return unsupported("GGUF version {} is not supported (only 2 and 3)", version_);
  }
  uint64_t n_tensors = 0, n_kv = 0;
  GSA_RETURN_IF_ERROR(cur.read(&n_tensors, "tensor count"));
  GSA_RETURN_IF_ERROR(cur.read(&n_kv, "metadata count"));
  if (n_tensors > limits.max_tensors) {
    return invalid_argument("tensor count {} exceeds the limit {}", n_tensors, limits.max_tensors);
  }
  if (n_kv > limits.max_kv) {
    return invalid_argument("metadata count {} exceeds the limit {}", n_kv, limits.max_kv);
  }
  // Each entry takes at least 13 bytes (key length, type, one byte), each tensor info 24.
  if (n_kv > cur.left() / 13 || n_tensors > cur.left() / 24) {
    return invalid_argument("truncated file: {} metadata entries and {} tensors cannot fit in the "
                            "{} bytes left",
                            n_kv, n_tensors, cur.left());
  }

  MetadataParser mp(&cur, limits);
  metadata_.reserve(size_t(n_kv));
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key;
    GSA_RETURN_IF_ERROR(cur.read_string(&key, limits.max_string_bytes, "metadata key"));
    if (kv_index_.count(key)) return invalid_argument("duplicate metadata key '{}'", key);
    ValueType type;
    Value v;
    Status st = mp.read_type(&type, "metadata value type");
    if (st.is_ok()) st = mp.read_value(type, 0, &v);
    if (!st.is_ok()) return st.with_context(fmt::format("metadata '{}'", key));
    kv_index_.emplace(key, metadata_.size());
    metadata_.emplace_back(std::move(key), std::move(v));
  }

  alignment_ = kDefaultAlignment;
  if (const Value* a = find("general.alignment")) {
    if (a->type != ValueType::U32) {
      return invalid_argument("general.alignment must be u32, got {}", value_type_name(a->type));
    }
    if (a->u == 0 || (a->u & (a->u - 1)) != 0) {
      return invalid_argument("general.alignment {} is not a power of two", a->u);
    }
    alignment_ = uint32_t(a->u);
  }

  tensors_.resize(size_t(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    TensorInfo& t = tensors_[size_t(k)];
    GSA_RETURN_IF_ERROR(parse_tensor_info(&cur, limits, alignment_, &t));
    if (!tensor_index_.emplace(t.name, size_t(k)).second) {
      return invalid_argument("duplicate tensor name '{}'", t.name);
    }
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t header_end = cur.pos();
  data_offset_ = (header_end + alignment_ - 1) / alignment_ * alignment_;
  const uint64_t data_size = data_offset_ <= size_ ? size_ - data_offset_ : 0;
  if (!tensors_.empty() && data_offset_ > size_) {
    return invalid_argument("truncated file: data section starts at {}, past the end ({} bytes)",
                            data_offset_, size_);
  }
  std::vector<size_t> order;
  order.reserve(tensors_.size());
  for (size_t k = 0; k < tensors_.size(); ++k) {
    const TensorInfo& t = tensors_[k];
    uint64_t end = 0;
    if (!checked_add(t.offset, t.n_bytes, &end) || end > data_size) {
      return invalid_argument("tensor '{}': data at offset {} + {} bytes runs past the end of the "
                              "data section ({} bytes)",
                              t.name, t.offset, t.n_bytes, data_size);
    }
    if (t.n_bytes > 0) order.push_back(k);
  }
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return tensors_[a].offset < tensors_[b].offset; });
  for (size_t k = 1; k < order.size(); ++k) {
    const TensorInfo& prev = tensors_[order[k - 1]];
    const TensorInfo& cur_t = tensors_[order[k]];
    if (prev.offset + prev.n_bytes > cur_t.offset) {
      return invalid_argument("tensors '{}' and '{}' overlap (offsets {} + {} bytes and {})",
                              prev.name, cur_t.name, prev.offset, prev.n_bytes, cur_t.offset);
    }
  }
  return Status::ok();
}

const Value* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &metadata_[it->second].second;
}

const TensorInfo* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const uint8_t* GgufFile::tensor_data(const TensorInfo& t) const {
  return data_ + data_offset_ + t.offset;
}

Status GgufFile::read_tensor_f32(const TensorInfo& t, float* dst) const {
  return read_tensor_f32(t, dst, nullptr);
}

Status GgufFile::read_tensor_f32(const TensorInfo& t, float* dst, ThreadPool* pool) const {
  const uint64_t data_size = data_offset_ <= size_ ? size_ - data_offset_ : 0;
  uint64_t end = 0;
  if (!checked_add(t.offset, t.n_bytes, &end) || end > data_size) {
    return invalid_argument("tensor '{}': extent past the end of the data section", t.name);
  }
  const int64_t n = t.n_elements();
  GSA_ASSIGN_OR_RETURN(const uint64_t need, ggml_row_bytes(t.type, n));
  if (need != t.n_bytes) {
    return invalid_argument("tensor '{}': {} bytes recorded, {} expected", t.name, t.n_bytes, need);
  }
  if (!ggml_type_can_dequantize(t.type)) {
    return unsupported("tensor '{}': dequantization of {} is not supported", t.name,
                       ggml_type_name(t.type));
  }
  const uint8_t* src = tensor_data(t);
  const int64_t row = t.shape.empty() ? 1 : t.shape[0];
  if (!pool || pool->n_threads() <= 1 || row == 0 || n < (1 << 16)) {
    return dequantize(t.type, src, t.n_bytes, dst, n);
  }
  GSA_ASSIGN_OR_RETURN(const uint64_t row_bytes, ggml_row_bytes(t.type, row));
  const int64_t n_rows = n / row;
  std::mutex mu;
  Status first_error;
  pool->parallel_for(
      n_rows,
      [&](int64_t begin, int64_t stop, int) {
        Status st = dequantize(t.type, src + uint64_t(begin) * row_bytes,
                               uint64_t(stop - begin) * row_bytes, dst + begin * row,
                               (stop - begin) * row);
        if (!st.is_ok()) {
          std::lock_guard<std::mutex> lock(mu);
          if (first_error.is_ok()) first_error = st;
        }
      },
      std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(row, 1)));
  return first_error;
}

}  // namespace gsa::gguf

// libFuzzer target for the GGUF reader: parses arbitrary bytes, exercises every metadata getter
// and dequantizes every small tensor; a file that parses must also survive a write/re-read round
// trip through GgufWriter with the same metadata and tensor bytes (else it traps).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gguf/gguf.h"

using gsa::gguf::GgufFile;
using gsa::gguf::GgufWriter;

namespace {

void check(bool cond) {
  if (!cond) __builtin_trap();
}

void touch_metadata(const GgufFile& f) {
  for (const auto& [key, value] : f.metadata()) {
    (void)f.get_string(key);
    (void)f.get_u32(key);
    (void)f.get_u64(key);
    (void)f.get_f32(key);
    (void)f.get_bool(key);
    (void)f.get_string_array(key);
    (void)f.get_i32_array(key);
    (void)f.get_f32_array(key);
    check(f.find(key) == &value);
  }
}

void round_trip(const GgufFile& f) {
  GgufWriter w;
  for (const auto& [key, value] : f.metadata()) w.set(key, value);
  for (const auto& t : f.tensors()) {
    const uint8_t* p = f.tensor_data(t);
    w.add_tensor(t.name, t.shape, t.type, std::vector<uint8_t>(p, p + t.n_bytes));
  }
  gsa::Result<std::vector<uint8_t>> bytes = w.finish_checked(f.alignment());
  check(bytes.is_ok());
  gsa::Result<GgufFile> g = GgufFile::from_bytes(std::move(bytes).value());
  check(g.is_ok());
  check(g->metadata().size() == f.metadata().size());
  for (size_t k = 0; k < f.metadata().size(); ++k) {
    check(g->metadata()[k].first == f.metadata()[k].first);
    check(g->metadata()[k].second.type == f.metadata()[k].second.type);
  }
  check(g->tensors().size() == f.tensors().size());
  for (size_t k = 0; k < f.tensors().size(); ++k) {
    const auto& a = f.tensors()[k];
    const auto& b = g->tensors()[k];
    check(a.name == b.name && a.shape == b.shape && a.type == b.type && a.n_bytes == b.n_bytes);
    check(a.n_bytes == 0 || std::memcmp(f.tensor_data(a), g->tensor_data(b), a.n_bytes) == 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gsa::gguf::ParseLimits limits;
  limits.max_total_values = 1 << 20;
  gsa::Result<GgufFile> f = GgufFile::from_bytes(std::vector<uint8_t>(data, data + size), limits);
  if (!f.is_ok()) {
    check(!f.status().message().empty());
    return 0;
  }
  touch_metadata(*f);
  for (const auto& t : f->tensors()) {
    check(f->data_offset() + t.offset + t.n_bytes <= f->file_size());
    if (!gsa::gguf::ggml_type_can_dequantize(t.type) || t.n_elements() > (1 << 20)) continue;
    std::vector<float> out(static_cast<size_t>(t.n_elements()));
    check(f->read_tensor_f32(t, out.data()).is_ok());
  }
  round_trip(*f);
  return 0;
}

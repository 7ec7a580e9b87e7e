// Weight loading (dequantize -> backend weight type), synthetic weights, and the forward pass.
#include "model/model.h"

#include <cmath>
#include <cstring>

#include "core/log.h"
#include "core/timer.h"

namespace gsa::model {

using backend::Backend;

// A weight matrix [rows, cols] in backend memory: plain (F32/BF16/F16) or kept in its GGUF block
// format (type Ggml, ggml type id in `ggml`) where the backend multiplies such weights directly.
struct Mat {
  void* p = nullptr;
  DType type = DType::F32;
  uint32_t ggml = 0;
};

struct LayerWeights {
  float* attn_norm = nullptr;  // [dim]
  Mat w_qkv;               // [q_dim + 2 * kv_dim, dim]: q, k, v rows in one matrix, or empty
                           // when they stay apart (GGUF formats that differ between them)
  Mat wq;                  // [q_dim, dim] (a view into w_qkv when that is set)
  Mat wk;                  // [kv_dim, dim]
  Mat wv;                  // [kv_dim, dim]
  float* b_qkv = nullptr;      // [q_dim + 2 * kv_dim] (qkv_bias); bq, bk, bv are views into it
  float* bq = nullptr;         // [q_dim]
  float* bk = nullptr;         // [kv_dim]
  float* bv = nullptr;         // [kv_dim]
  float* q_norm = nullptr;     // [head_dim] (qk_norm)
  float* k_norm = nullptr;     // [head_dim]
  Mat wo;                  // [dim, q_dim]
  float* ffn_norm = nullptr;   // [dim]
  Mat w_gate_up;    // [2 * ffn_dim, dim]: gate rows, then up rows
  Mat w_down;          // [dim, ffn_dim]
};

struct Model::Weights {
  Backend* backend = nullptr;
  std::vector<void*> owned;
  Mat token_embd;              // [vocab, dim]
  Mat output;                  // [vocab, dim] (== token_embd when tied)
  float* output_norm = nullptr;// [dim]
  std::vector<LayerWeights> layers;
  ~Weights() {
    for (void* p : owned) backend->free(p);
  }
};

struct Model::Scratch {
  Backend* backend = nullptr;
  int64_t cap_tokens = 0, cap_logits = 0, cap_meta = 0;
  void* x = nullptr;      // [T, dim]
  void* xn = nullptr;     // [T, dim]
  void* qkv = nullptr;    // [T, q_dim + 2 * kv_dim] (fused projection)
  void* q = nullptr;      // [T, q_dim]
  void* k = nullptr;      // [T, kv_dim]
  void* v = nullptr;      // [T, kv_dim]
  void* attn = nullptr;   // [T, q_dim]
  void* tmp = nullptr;    // [T, dim]
  void* gu = nullptr;     // [T, 2 * ffn]
  void* h = nullptr;      // [T, ffn]
  void* xg = nullptr;     // [L, dim]
  void* logits = nullptr; // [L, vocab]
  int32_t* meta = nullptr;// packed int32 inputs
  int32_t* amax = nullptr;// [L] greedy tokens
  std::vector<void*> owned;
  void release() {
    for (void* p : owned) backend->free(p);
    owned.clear();
  }
  ~Scratch() { release(); }
};

Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

namespace {

// Converts f32 host values to `type` in a host staging vector.
std::vector<uint8_t> convert_weights(const float* src, int64_t n, DType type) {
  std::vector<uint8_t> out(size_t(n) * dtype_size(type));
  if (type == DType::F32) {
    std::memcpy(out.data(), src, size_t(n) * 4);
  } else if (type == DType::BF16) {
    auto* d = reinterpret_cast<uint16_t*>(out.data());
    for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
  } else {
    auto* d = reinterpret_cast<uint16_t*>(out.data());
    for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
  }
  return out;
}

}  // namespace

Status Model::alloc_weights(bool matrices) {
  w_ = std::make_unique<Weights>();
  w_->backend = backend_;
  const int64_t wsz = int64_t(dtype_size(opt_.w_type));
  auto alloc = [&](int64_t bytes, void** out) -> Status {
    auto p = backend_->alloc(size_t(bytes));
    if (!p) return p.status().with_context("model weights");
    w_->owned.push_back(*p);
    weight_bytes_ += uint64_t(bytes);
    *out = *p;
    return Status::ok();
  };
  auto allocm = [&](int64_t bytes, Mat* m) -> Status {
    m->type = opt_.w_type;
    if (!matrices) return Status::ok();
    return alloc(bytes, &m->p);
  };
  auto allocf = [&](int64_t n, float** out) -> Status {
    void* p = nullptr;
    GSA_RETURN_IF_ERROR(alloc(n * 4, &p));
    *out = static_cast<float*>(p);
    return Status::ok();
  };
  const HParams& h = hp_;
  GSA_RETURN_IF_ERROR(allocm(int64_t(h.vocab) * h.dim * wsz, &w_->token_embd));
  if (h.tied_output) w_->output = w_->token_embd;
  else GSA_RETURN_IF_ERROR(allocm(int64_t(h.vocab) * h.dim * wsz, &w_->output));
  GSA_RETURN_IF_ERROR(allocf(h.dim, &w_->output_norm));
  w_->layers.resize(size_t(h.n_layers));
  for (auto& L : w_->layers) {
    GSA_RETURN_IF_ERROR(allocf(h.dim, &L.attn_norm));
    // One q|k|v matrix (the loader may split it again); wq, wk, wv view its rows.
    const int64_t qkv_rows = int64_t(h.q_dim()) + 2 * int64_t(h.kv_dim());
    GSA_RETURN_IF_ERROR(allocm(qkv_rows * h.dim * wsz, &L.w_qkv));
    L.wq = L.wk = L.wv = L.w_qkv;
    if (matrices) {
      L.wk.p = static_cast<uint8_t*>(L.w_qkv.p) + int64_t(h.q_dim()) * h.dim * wsz;
      L.wv.p = static_cast<uint8_t*>(L.wk.p) + int64_t(h.kv_dim()) * h.dim * wsz;
    }
    if (h.qkv_bias) {
      GSA_RETURN_IF_ERROR(allocf(qkv_rows, &L.b_qkv));
      L.bq = L.b_qkv;
      L.bk = L.bq + h.q_dim();
      L.bv = L.bk + h.kv_dim();
    }
    if (h.qk_norm) {
      GSA_RETURN_IF_ERROR(allocf(h.head_dim, &L.q_norm));
      GSA_RETURN_IF_ERROR(allocf(h.head_dim, &L.k_norm));
    }
    GSA_RETURN_IF_ERROR(allocm(int64_t(h.dim) * h.q_dim() * wsz, &L.wo));
    GSA_RETURN_IF_ERROR(allocf(h.dim, &L.ffn_norm));
    GSA_RETURN_IF_ERROR(allocm(int64_t(2) * h.ffn_dim * h.dim * wsz, &L.w_gate_up));
    GSA_RETURN_IF_ERROR(allocm(int64_t(h.dim) * h.ffn_dim * wsz, &L.w_down));
  }
  return Status::ok();
}

Result<Model> Model::load(const gguf::GgufFile& f, Backend* backend, ModelOptions opt) {
  Model m;
  GSA_ASSIGN_OR_RETURN(m.hp_, hparams_from_gguf(f));
  m.backend_ = backend;
  m.opt_ = opt;
  GSA_RETURN_IF_ERROR(m.alloc_weights(false));
  const HParams& h = m.hp_;
  std::vector<float> host;
  ThreadPool* pool = opt.pool;

  // The tensor `name`, checked to have shape {ne0} or {ne0, ne1}.
  auto find = [&](const std::string& name, int64_t ne0, int64_t ne1) -> Result<const gguf::TensorInfo*> {
    const gguf::TensorInfo* t = f.find_tensor(name);
    if (!t) return not_found("tensor '{}' is missing", name);
    const bool ok = ne1 == 0 ? (t->shape.size() == 1 && t->shape[0] == ne0)
                             : (t->shape.size() == 2 && t->shape[0] == ne0 && t->shape[1] == ne1);
    if (!ok) {
      std::string got;
      for (size_t i = 0; i < t->shape.size(); ++i) got += (i ? ", " : "") + std::to_string(t->shape[i]);
      return invalid_argument("tensor '{}': expected [{}{}], got [{}]", name, ne0,
                              ne1 ? ", " + std::to_string(ne1) : std::string(), got);
    }
    return t;
  };
  // Reads tensor `name` as f32 into host[offset...].
  auto read = [&](const std::string& name, int64_t ne0, int64_t ne1, size_t offset) -> Status {
    GSA_ASSIGN_OR_RETURN(const gguf::TensorInfo* t, find(name, ne0, ne1));
    const int64_t n = ne0 * (ne1 ? ne1 : 1);
    if (host.size() < offset + size_t(n)) host.resize(offset + size_t(n));
    return f.read_tensor_f32(*t, host.data() + offset, pool);
  };
  auto alloc = [&](uint64_t bytes, void** out) -> Status {
    auto p = backend->alloc(size_t(bytes));
    if (!p) return p.status().with_context("model weights");
    m.w_->owned.push_back(*p);
    m.weight_bytes_ += bytes;
    *out = *p;
    return Status::ok();
  };
  // Matrix [rows = out, cols = in] from one or more tensors stacked by rows. Kept in its GGUF
  // format when every part has the same type and the backend multiplies it directly;
  // otherwise dequantized and converted to opt.w_type.
  // Parts may have different row counts (q, k, v); `views` (optional) gets a view per part.
  auto matp = [&](const std::vector<std::pair<std::string, int64_t>>& names, int64_t in, Mat* dst,
                  std::vector<Mat*> views = {}) -> Status {
    std::vector<const gguf::TensorInfo*> parts;
    int64_t rows = 0;
    for (const auto& [n, out] : names) {
      GSA_ASSIGN_OR_RETURN(const gguf::TensorInfo* t, find(n, in, out));
      parts.push_back(t);
      rows += out;
    }
    const auto type = parts[0]->type;
    bool native = opt.native_weights && type != gguf::GgmlType::F32 &&
                  backend->supports_ggml_weights(uint32_t(type));
    for (const auto* t : parts) native = native && t->type == type;
    if (native) {
      uint64_t bytes = 0;
      for (const auto* t : parts) bytes += t->n_bytes;
      GSA_RETURN_IF_ERROR(alloc(bytes, &dst->p));
      dst->type = DType::Ggml;
      dst->ggml = uint32_t(type);
      uint64_t off = 0;
      for (size_t i = 0; i < parts.size(); ++i) {
        const auto* t = parts[i];
        if (i < views.size()) *views[i] = {static_cast<uint8_t*>(dst->p) + off, dst->type, dst->ggml};
        GSA_RETURN_IF_ERROR(backend->upload(static_cast<uint8_t*>(dst->p) + off, f.tensor_data(*t), t->n_bytes));
        off += t->n_bytes;
      }
      return Status::ok();
    }
    size_t off = 0;
    for (const auto& [n, out] : names) {
      GSA_RETURN_IF_ERROR(read(n, in, out, off));
      off += size_t(in * out);
    }
    dst->type = opt.w_type;
    const uint64_t wsz = dtype_size(opt.w_type);
    GSA_RETURN_IF_ERROR(alloc(uint64_t(rows * in) * wsz, &dst->p));
    uint64_t voff = 0;
    for (size_t i = 0; i < names.size(); ++i) {
      if (i < views.size()) *views[i] = {static_cast<uint8_t*>(dst->p) + voff, dst->type, 0};
      voff += uint64_t(names[i].second * in) * wsz;
    }
    auto bytes = convert_weights(host.data(), rows * in, opt.w_type);
    return backend->upload(dst->p, bytes.data(), bytes.size());
  };
  auto mat = [&](std::initializer_list<std::string> names, int64_t in, int64_t out, Mat* dst) -> Status {
    std::vector<std::pair<std::string, int64_t>> parts;
    for (const auto& n : names) parts.emplace_back(n, out);
    return matp(parts, in, dst);
  };
  // The GGUF format a tensor keeps on this backend, or -1 when it is converted to opt.w_type.
  auto kept_format = [&](const std::string& name) -> int64_t {
    const gguf::TensorInfo* t = f.find_tensor(name);
    if (!t || !opt.native_weights || t->type == gguf::GgmlType::F32 ||
        !backend->supports_ggml_weights(uint32_t(t->type)))
      return -1;
    return int64_t(t->type);
  };
  auto v1 = [&](const std::string& name, float* dst, int64_t n) -> Status {
    GSA_RETURN_IF_ERROR(read(name, n, 0, 0));
    return backend->upload(dst, host.data(), size_t(n) * 4);
  };

  GSA_RETURN_IF_ERROR(mat({"token_embd.weight"}, h.dim, h.vocab, &m.w_->token_embd));
  if (h.tied_output) m.w_->output = m.w_->token_embd;
  else GSA_RETURN_IF_ERROR(mat({"output.weight"}, h.dim, h.vocab, &m.w_->output));
  GSA_RETURN_IF_ERROR(v1("output_norm.weight", m.w_->output_norm, h.dim));
  for (int l = 0; l < h.n_layers; ++l) {
    LayerWeights& L = m.w_->layers[size_t(l)];
    const std::string p = "blk." + std::to_string(l) + ".";
    GSA_RETURN_IF_ERROR(v1(p + "attn_norm.weight", L.attn_norm, h.dim));
    // q, k, v in one matrix (one GEMM per layer) unless that would force a format change on
    // one of them (e.g. Q4_K q and k with a Q6_K v stay three matrices in their formats).
    const int64_t fq = kept_format(p + "attn_q.weight"), fk = kept_format(p + "attn_k.weight"),
                  fv = kept_format(p + "attn_v.weight");
    if (fq == fk && fk == fv) {
      GSA_RETURN_IF_ERROR(matp({{p + "attn_q.weight", h.q_dim()}, {p + "attn_k.weight", h.kv_dim()},
                                {p + "attn_v.weight", h.kv_dim()}},
                               h.dim, &L.w_qkv, {&L.wq, &L.wk, &L.wv}));
    } else {
      L.w_qkv = {};
      GSA_RETURN_IF_ERROR(mat({p + "attn_q.weight"}, h.dim, h.q_dim(), &L.wq));
      GSA_RETURN_IF_ERROR(mat({p + "attn_k.weight"}, h.dim, h.kv_dim(), &L.wk));
      GSA_RETURN_IF_ERROR(mat({p + "attn_v.weight"}, h.dim, h.kv_dim(), &L.wv));
    }
    if (h.qkv_bias) {
      GSA_RETURN_IF_ERROR(v1(p + "attn_q.bias", L.bq, h.q_dim()));
      GSA_RETURN_IF_ERROR(v1(p + "attn_k.bias", L.bk, h.kv_dim()));
      GSA_RETURN_IF_ERROR(v1(p + "attn_v.bias", L.bv, h.kv_dim()));
    }
    if (h.qk_norm) {
      GSA_RETURN_IF_ERROR(v1(p + "attn_q_norm.weight", L.q_norm, h.head_dim));
      GSA_RETURN_IF_ERROR(v1(p + "attn_k_norm.weight", L.k_norm, h.head_dim));
    }
    GSA_RETURN_IF_ERROR(mat({p + "attn_output.weight"}, h.q_dim(), h.dim, &L.wo));
    GSA_RETURN_IF_ERROR(v1(p + "ffn_norm.weight", L.ffn_norm, h.dim));
    GSA_RETURN_IF_ERROR(mat({p + "ffn_gate.weight", p + "ffn_up.weight"}, h.dim, h.ffn_dim, &L.w_gate_up));
    GSA_RETURN_IF_ERROR(mat({p + "ffn_down.weight"}, h.ffn_dim, h.dim, &L.w_down));
  }
  GSA_RETURN_IF_ERROR(backend->synchronize());
  return m;
}

Result<Model> Model::random(const HParams& hp, Backend* backend, ModelOptions opt, uint64_t seed) {
  GSA_RETURN_IF_ERROR(hp.validate());
  Model m;
  m.hp_ = hp;
  m.backend_ = backend;
  m.opt_ = opt;
  GSA_RETURN_IF_ERROR(m.alloc_weights(true));
  uint64_t s = seed;
  auto fill = [&](void* p, int64_t n, DType t, float scale) -> Status {
    backend::FillRandomParams fp;
    fp.dst = p;
    fp.n = n;
    fp.scale = scale;
    fp.seed = ++s;
    fp.type = t;
    return backend->fill_random(fp);
  };
  const HParams& h = hp;
  const DType wt = opt.w_type;
  const float ws = 1.0f / std::sqrt(float(h.dim));
  GSA_RETURN_IF_ERROR(fill(m.w_->token_embd.p, int64_t(h.vocab) * h.dim, wt, 1.0f));
  if (!h.tied_output) GSA_RETURN_IF_ERROR(fill(m.w_->output.p, int64_t(h.vocab) * h.dim, wt, ws));
  GSA_RETURN_IF_ERROR(fill(m.w_->output_norm, h.dim, DType::F32, 1.0f));
  for (auto& L : m.w_->layers) {
    GSA_RETURN_IF_ERROR(fill(L.attn_norm, h.dim, DType::F32, 1.0f));
    GSA_RETURN_IF_ERROR(fill(L.wq.p, int64_t(h.q_dim()) * h.dim, wt, ws));
    GSA_RETURN_IF_ERROR(fill(L.wk.p, int64_t(h.kv_dim()) * h.dim, wt, ws));
    GSA_RETURN_IF_ERROR(fill(L.wv.p, int64_t(h.kv_dim()) * h.dim, wt, ws));
    if (h.qkv_bias) {
      GSA_RETURN_IF_ERROR(fill(L.bq, h.q_dim(), DType::F32, 0.1f));
      GSA_RETURN_IF_ERROR(fill(L.bk, h.kv_dim(), DType::F32, 0.1f));
      GSA_RETURN_IF_ERROR(fill(L.bv, h.kv_dim(), DType::F32, 0.1f));
    }
    if (h.qk_norm) {
      GSA_RETURN_IF_ERROR(fill(L.q_norm, h.head_dim, DType::F32, 1.0f));
      GSA_RETURN_IF_ERROR(fill(L.k_norm, h.head_dim, DType::F32, 1.0f));
    }
    GSA_RETURN_IF_ERROR(fill(L.wo.p, int64_t(h.dim) * h.q_dim(), wt, 1.0f / std::sqrt(float(h.q_dim()))));
    GSA_RETURN_IF_ERROR(fill(L.ffn_norm, h.dim, DType::F32, 1.0f));
    GSA_RETURN_IF_ERROR(fill(L.w_gate_up.p, int64_t(2) * h.ffn_dim * h.dim, wt, ws));
    GSA_RETURN_IF_ERROR(fill(L.w_down.p, int64_t(h.dim) * h.ffn_dim, wt, 1.0f / std::sqrt(float(h.ffn_dim))));
  }
  GSA_RETURN_IF_ERROR(backend->synchronize());
  return m;
}

Status Model::ensure_scratch(int64_t T, int64_t L, int64_t n_meta) {
  if (s_ && T <= s_->cap_tokens && L <= s_->cap_logits && n_meta <= s_->cap_meta) return Status::ok();
  const HParams& h = hp_;
  T = std::max<int64_t>(T, s_ ? s_->cap_tokens : 0);
  L = std::max<int64_t>(std::max<int64_t>(L, 1), s_ ? s_->cap_logits : 0);
  n_meta = std::max<int64_t>(n_meta * 2, s_ ? s_->cap_meta : 0);
  if (s_) s_->release();
  s_ = std::make_unique<Scratch>();
  s_->backend = backend_;
  const int64_t a = int64_t(dtype_size(opt_.act_type));
  auto alloc = [&](int64_t bytes, void** out) -> Status {
    auto p = backend_->alloc(size_t(std::max<int64_t>(bytes, 64)));
    if (!p) return p.status().with_context("activation scratch");
    s_->owned.push_back(*p);
    *out = *p;
    return Status::ok();
  };
  GSA_RETURN_IF_ERROR(alloc(T * h.dim * a, &s_->x));
  GSA_RETURN_IF_ERROR(alloc(T * h.dim * a, &s_->xn));
  GSA_RETURN_IF_ERROR(alloc(T * (int64_t(h.q_dim()) + 2 * h.kv_dim()) * a, &s_->qkv));
  GSA_RETURN_IF_ERROR(alloc(T * h.q_dim() * a, &s_->q));
  GSA_RETURN_IF_ERROR(alloc(T * h.kv_dim() * a, &s_->k));
  GSA_RETURN_IF_ERROR(alloc(T * h.kv_dim() * a, &s_->v));
  GSA_RETURN_IF_ERROR(alloc(T * h.q_dim() * a, &s_->attn));
  GSA_RETURN_IF_ERROR(alloc(T * h.dim * a, &s_->tmp));
  GSA_RETURN_IF_ERROR(alloc(T * 2 * h.ffn_dim * a, &s_->gu));
  GSA_RETURN_IF_ERROR(alloc(T * h.ffn_dim * a, &s_->h));
  GSA_RETURN_IF_ERROR(alloc(L * h.dim * a, &s_->xg));
  GSA_RETURN_IF_ERROR(alloc(L * h.vocab * 4, &s_->logits));
  void* meta = nullptr;
  GSA_RETURN_IF_ERROR(alloc(n_meta * 4, &meta));
  void* amax = nullptr;
  GSA_RETURN_IF_ERROR(alloc(L * 4, &amax));
  s_->amax = static_cast<int32_t*>(amax);
  s_->meta = static_cast<int32_t*>(meta);
  s_->cap_tokens = T;
  s_->cap_logits = L;
  s_->cap_meta = n_meta;
  return Status::ok();
}

Status Model::forward(const ForwardInput& in, kv::KvCache& kv, LayerPlanner* planner,
                      const backend::RepUpdateParams& rep, std::vector<float>* logits,
                      std::vector<int32_t>* greedy) {
  Timer enqueue_timer;
  const HParams& h = hp_;
  const int64_t T = int64_t(in.tokens.size());
  const int n_seqs = int(in.q_indptr.size()) - 1;
  const int64_t L = int64_t(in.logit_rows.size());
  if (T == 0 || n_seqs <= 0) return invalid_argument("forward: empty batch");
  if (in.pos.size() != size_t(T) || in.slots.size() != size_t(T) ||
      in.kv_indptr.size() != size_t(n_seqs) + 1 || in.kv_last_len.size() != size_t(n_seqs))
    return invalid_argument("forward: inconsistent batch arrays");
  for (int32_t t : in.tokens)
    if (t < 0 || t >= h.vocab) return invalid_argument("token id {} outside the vocabulary [0, {})", t, h.vocab);
  for (int32_t r : in.logit_rows)
    if (r < 0 || r >= T) return invalid_argument("logit row {} outside [0, {})", r, T);

  // Pack every int32 input into one upload.
  const std::vector<int32_t>* arrays[] = {&in.tokens, &in.pos, &in.slots, &in.q_indptr,
                                          &in.kv_indptr, &in.kv_indices, &in.kv_last_len,
                                          &in.full_blocks, &in.logit_rows};
  std::vector<int32_t> packed;
  int32_t offs[9];
  for (int i = 0; i < 9; ++i) {
    offs[i] = int32_t(packed.size());
    packed.insert(packed.end(), arrays[i]->begin(), arrays[i]->end());
    packed.resize((packed.size() + 15) / 16 * 16, 0);  // keep each array 64-byte aligned
  }
  GSA_RETURN_IF_ERROR(ensure_scratch(T, L, int64_t(packed.size())));
  Scratch& s = *s_;
  GSA_RETURN_IF_ERROR(backend_->upload(s.meta, packed.data(), packed.size() * 4));
  const int32_t* d_tokens = s.meta + offs[0];
  const int32_t* d_pos = s.meta + offs[1];
  const int32_t* d_slots = s.meta + offs[2];
  const int32_t* d_q_indptr = s.meta + offs[3];
  AttentionLists dense{s.meta + offs[4], s.meta + offs[5], s.meta + offs[6], false};
  const int32_t* d_full = s.meta + offs[7];
  const int32_t* d_rows = s.meta + offs[8];

  Backend& b = *backend_;
  const DType at = opt_.act_type;
  const kv::KvConfig& kc = kv.config();

  backend::EmbedParams ep;
  ep.ids = d_tokens; ep.table = w_->token_embd.p; ep.out = s.x;
  ep.n_tokens = T; ep.vocab = h.vocab; ep.dim = h.dim; ep.table_type = w_->token_embd.type;
  ep.table_ggml = w_->token_embd.ggml; ep.act_type = at;
  GSA_RETURN_IF_ERROR(b.embed(ep));

  auto matmul = [&](const void* x, const Mat& w, const float* bias, void* y, int64_t n, int64_t k) {
    backend::MatmulParams mp;
    mp.x = x; mp.w = w.p; mp.bias = bias; mp.y = y; mp.m = T; mp.n = n; mp.k = k;
    mp.act_type = at; mp.w_type = w.type; mp.w_ggml = w.ggml;
    return b.matmul(mp);
  };
  auto rmsnorm = [&](const void* x, const float* w, void* y, int64_t rows, int64_t dim) {
    backend::RmsNormParams np;
    np.x = x; np.w = w; np.y = y; np.n_rows = rows; np.dim = dim; np.eps = h.norm_eps; np.act_type = at;
    return b.rmsnorm(np);
  };
  // y += x, then out = rmsnorm(y) * w (one launch on the GPU).
  auto add_rmsnorm = [&](const void* x, void* y, const float* w, void* out) {
    backend::AddRmsNormParams ap;
    ap.x = x; ap.y = y; ap.w = w; ap.out = out; ap.n_rows = T; ap.dim = h.dim; ap.eps = h.norm_eps;
    ap.act_type = at;
    return b.add_rmsnorm(ap);
  };
  auto add = [&](const void* x, void* y, int64_t n) {
    backend::AddParams ap;
    ap.x = x; ap.y = y; ap.n = n; ap.act_type = at;
    return b.add(ap);
  };

  for (int l = 0; l < h.n_layers; ++l) {
    const LayerWeights& W = w_->layers[size_t(l)];
    // Layers after the first get their input norm from the previous layer's last residual add.
    if (l == 0) GSA_RETURN_IF_ERROR(rmsnorm(s.x, W.attn_norm, s.xn, T, h.dim));
    // RoPE on q and k, K/V into the cache, representations of blocks that fill: one launch
    // per layer for a decode batch on the GPU.
    backend::RopeAppendParams ra;
    ra.q = s.q; ra.k = s.k; ra.v = s.v; ra.pos = d_pos; ra.slot_mapping = d_slots;
    ra.k_cache = kv.k(l); ra.v_cache = kv.v(l);
    ra.reps = in.full_blocks.empty() ? nullptr : kv.reps(l);
    ra.full_blocks = d_full; ra.n_full = int(in.full_blocks.size());
    ra.kind = rep.kind; ra.sub_block = rep.sub_block; ra.hash_w = rep.hash_w;
    ra.n_tokens = T; ra.n_blocks = kc.n_blocks; ra.block_size = kc.block_size;
    ra.n_heads = h.n_heads; ra.n_kv_heads = h.n_kv_heads; ra.head_dim = h.head_dim;
    ra.rot_dim = h.rot_dim; ra.theta = h.rope_theta; ra.neox = h.rope_neox;
    ra.one_token_per_seq = T == n_seqs;
    ra.act_type = at; ra.kv_type = kc.kv_type;
    if (W.w_qkv.p) {
      // One GEMM for q, k and v. The fused decode kernel reads the rows where they are;
      // otherwise they are copied apart first.
      const int64_t qkv_dim = int64_t(h.q_dim()) + 2 * h.kv_dim();
      GSA_RETURN_IF_ERROR(matmul(s.xn, W.w_qkv, W.b_qkv, s.qkv, qkv_dim, h.dim));
      const size_t es = dtype_size(at);
      char* qkv = static_cast<char*>(s.qkv);
      backend::RopeAppendParams strided = ra;
      strided.q = qkv;
      strided.k = qkv + size_t(h.q_dim()) * es;
      strided.v = qkv + size_t(h.q_dim() + h.kv_dim()) * es;
      strided.q_out = s.q;
      strided.q_stride = strided.k_stride = strided.v_stride = qkv_dim;
      if (!h.qk_norm && b.supports_strided_rope_append(strided)) {
        GSA_RETURN_IF_ERROR(b.rope_append(strided));
      } else {
        const size_t pitch = size_t(qkv_dim) * es;
        GSA_RETURN_IF_ERROR(b.copy_2d(s.q, size_t(h.q_dim()) * es, strided.q, pitch, size_t(h.q_dim()) * es, size_t(T)));
        GSA_RETURN_IF_ERROR(b.copy_2d(s.k, size_t(h.kv_dim()) * es, strided.k, pitch, size_t(h.kv_dim()) * es, size_t(T)));
        GSA_RETURN_IF_ERROR(b.copy_2d(s.v, size_t(h.kv_dim()) * es, strided.v, pitch, size_t(h.kv_dim()) * es, size_t(T)));
        if (h.qk_norm) {
          GSA_RETURN_IF_ERROR(rmsnorm(s.q, W.q_norm, s.q, T * h.n_heads, h.head_dim));
          GSA_RETURN_IF_ERROR(rmsnorm(s.k, W.k_norm, s.k, T * h.n_kv_heads, h.head_dim));
        }
        GSA_RETURN_IF_ERROR(b.rope_append(ra));
      }
    } else {
      GSA_RETURN_IF_ERROR(matmul(s.xn, W.wq, W.bq, s.q, h.q_dim(), h.dim));
      GSA_RETURN_IF_ERROR(matmul(s.xn, W.wk, W.bk, s.k, h.kv_dim(), h.dim));
      GSA_RETURN_IF_ERROR(matmul(s.xn, W.wv, W.bv, s.v, h.kv_dim(), h.dim));
      if (h.qk_norm) {
        GSA_RETURN_IF_ERROR(rmsnorm(s.q, W.q_norm, s.q, T * h.n_heads, h.head_dim));
        GSA_RETURN_IF_ERROR(rmsnorm(s.k, W.k_norm, s.k, T * h.n_kv_heads, h.head_dim));
      }
      GSA_RETURN_IF_ERROR(b.rope_append(ra));
    }

    AttentionLists lists = dense;
    if (planner) GSA_RETURN_IF_ERROR(planner->plan_layer(l, s.q, &lists));

    backend::AttentionParams ap;
    ap.q = s.q; ap.k_cache = kv.k(l); ap.v_cache = kv.v(l); ap.out = s.attn;
    ap.q_indptr = d_q_indptr; ap.q_pos = d_pos;
    ap.kv_indptr = lists.indptr; ap.kv_indices = lists.indices; ap.kv_last_len = lists.last_len;
    ap.n_seqs = n_seqs; ap.n_tokens = T; ap.n_heads = h.n_heads; ap.n_kv_heads = h.n_kv_heads;
    ap.head_dim = h.head_dim; ap.block_size = kc.block_size; ap.n_blocks = kc.n_blocks;
    ap.per_kv_head = lists.per_kv_head;
    ap.act_type = at; ap.kv_type = kc.kv_type;
    GSA_RETURN_IF_ERROR(b.attention(ap));

    GSA_RETURN_IF_ERROR(matmul(s.attn, W.wo, nullptr, s.tmp, h.dim, h.q_dim()));
    GSA_RETURN_IF_ERROR(add_rmsnorm(s.tmp, s.x, W.ffn_norm, s.xn));
    GSA_RETURN_IF_ERROR(matmul(s.xn, W.w_gate_up, nullptr, s.gu, 2 * int64_t(h.ffn_dim), h.dim));
    backend::SwigluParams sp;
    sp.gate_up = s.gu; sp.out = s.h; sp.n_rows = T; sp.dim = h.ffn_dim; sp.act_type = at;
    GSA_RETURN_IF_ERROR(b.swiglu(sp));
    GSA_RETURN_IF_ERROR(matmul(s.h, W.w_down, nullptr, s.tmp, h.dim, h.ffn_dim));
    if (l + 1 < h.n_layers) {
      GSA_RETURN_IF_ERROR(add_rmsnorm(s.tmp, s.x, w_->layers[size_t(l) + 1].attn_norm, s.xn));
    } else {
      GSA_RETURN_IF_ERROR(add(s.tmp, s.x, T * h.dim));
    }
  }

  if (L == 0) {
    if (logits) logits->clear();
    return b.synchronize();
  }
  // Only the rows that need logits go through the output head.
  backend::EmbedParams gp;
  gp.ids = d_rows; gp.table = s.x; gp.out = s.xg; gp.n_tokens = L; gp.vocab = T; gp.dim = h.dim;
  gp.table_type = at; gp.act_type = at;
  GSA_RETURN_IF_ERROR(b.embed(gp));
  GSA_RETURN_IF_ERROR(rmsnorm(s.xg, w_->output_norm, s.xg, L, h.dim));
  backend::MatmulParams mp;
  mp.x = s.xg; mp.w = w_->output.p; mp.y = s.logits; mp.m = L; mp.n = h.vocab; mp.k = h.dim;
  mp.act_type = at; mp.w_type = w_->output.type; mp.w_ggml = w_->output.ggml;
  mp.y_f32 = true;  // logits in f32: bf16 would round near-ties away before the argmax
  GSA_RETURN_IF_ERROR(b.matmul(mp));
  if (greedy) {
    // Greedy decoding: only the chosen ids leave the backend.
    backend::ArgmaxParams xp;
    xp.x = s.logits; xp.out = s.amax; xp.n_rows = L; xp.n_cols = h.vocab; xp.act_type = DType::F32;
    GSA_RETURN_IF_ERROR(b.argmax(xp));
    last_enqueue_seconds_ = enqueue_timer.seconds();
    GSA_RETURN_IF_ERROR(b.synchronize());
    Timer out_timer;
    greedy->resize(size_t(L));
    GSA_RETURN_IF_ERROR(b.download(greedy->data(), s.amax, size_t(L) * 4));
    last_logits_seconds_ = out_timer.seconds();
    return Status::ok();
  }
  const size_t n_out = size_t(L) * size_t(h.vocab);
  last_enqueue_seconds_ = enqueue_timer.seconds();
  GSA_RETURN_IF_ERROR(b.synchronize());
  Timer out_timer;
  logits->resize(n_out);
  GSA_RETURN_IF_ERROR(b.download(logits->data(), s.logits, n_out * 4));
  last_logits_seconds_ = out_timer.seconds();
  return b.synchronize();
}

}  // namespace gsa::model

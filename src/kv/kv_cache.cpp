// KvCache implementation: allocation per layer, slot reservation with copy-on-write.
#include "kv/kv_cache.h"

#include "core/checked.h"

namespace gsa::kv {

uint64_t KvCache::layer_block_bytes() const {
  return uint64_t(cfg_.n_kv_heads) * cfg_.block_size * cfg_.head_dim * dtype_size(cfg_.kv_type);
}

uint64_t KvCache::bytes_needed(const KvConfig& c) {
  uint64_t per_block = uint64_t(c.n_kv_heads) * c.block_size * c.head_dim * dtype_size(c.kv_type);
  uint64_t per_layer = 0, total = 0;
  if (!checked_mul(per_block * 2 + uint64_t(c.n_kv_heads) * uint64_t(c.rep_bytes),
                   uint64_t(c.n_blocks), &per_layer) ||
      !checked_mul(per_layer, uint64_t(c.n_layers), &total))
    return UINT64_MAX;
  return total;
}

Result<KvCache> KvCache::create(backend::Backend* backend, const KvConfig& cfg) {
  if (cfg.n_layers <= 0 || cfg.n_kv_heads <= 0 || cfg.head_dim <= 0 || cfg.block_size <= 0 ||
      cfg.n_blocks <= 0 || cfg.rep_bytes < 0)
    return invalid_argument("KV cache: bad config (layers {}, kv heads {}, head dim {}, block {}, blocks {})",
                            cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, cfg.block_size, cfg.n_blocks);
  KvCache c;
  c.backend_ = backend;
  c.cfg_ = cfg;
  c.pool_ = BlockPool(cfg.n_blocks);
  const uint64_t kv_bytes = c.layer_block_bytes() * uint64_t(cfg.n_blocks);
  const uint64_t rep_bytes = uint64_t(cfg.rep_bytes) * cfg.n_kv_heads * uint64_t(cfg.n_blocks);
  for (int l = 0; l < cfg.n_layers; ++l) {
    auto k = backend->alloc(kv_bytes);
    if (!k) return k.status().with_context(fmt::format("KV cache ({} MiB)", bytes_needed(cfg) >> 20));
    c.k_.push_back(*k);
    auto v = backend->alloc(kv_bytes);
    if (!v) return v.status().with_context(fmt::format("KV cache ({} MiB)", bytes_needed(cfg) >> 20));
    c.v_.push_back(*v);
    if (rep_bytes) {
      auto r = backend->alloc(rep_bytes);
      if (!r) return r.status().with_context("representation table");
      c.reps_.push_back(*r);
    }
  }
  return c;
}

KvCache::~KvCache() {
  prefix_.clear(pool_);
  free_all();
}

void KvCache::free_all() {
  if (!backend_) return;
  for (void* p : k_) backend_->free(p);
  for (void* p : v_) backend_->free(p);
  for (void* p : reps_) backend_->free(p);
  k_.clear();
  v_.clear();
  reps_.clear();
}

KvCache::KvCache(KvCache&& o) noexcept { *this = std::move(o); }

KvCache& KvCache::operator=(KvCache&& o) noexcept {
  if (this != &o) {
    prefix_.clear(pool_);
    free_all();
    backend_ = o.backend_;
    cfg_ = o.cfg_;
    pool_ = std::move(o.pool_);
    k_ = std::move(o.k_);
    v_ = std::move(o.v_);
    reps_ = std::move(o.reps_);
    prefix_ = std::move(o.prefix_);
    o.prefix_ = PrefixCache();
    index_hook_ = std::move(o.index_hook_);
    o.index_hook_ = nullptr;
    o.backend_ = nullptr;
  }
  return *this;
}

Status KvCache::reserve(BlockTable* t, int32_t n_new, std::vector<int32_t>* slots) {
  const int32_t bs = cfg_.block_size;
  const int32_t have = int32_t(t->blocks.size());
  const int32_t need = (t->n_tokens + n_new + bs - 1) / bs;
  std::vector<int32_t> fresh;
  auto undo = [&] {
    for (int32_t id : fresh) pool_.release(id);
  };
  // Copy-on-write: the partial last block is shared and about to be written.
  int32_t cow_from = -1;
  if (n_new > 0 && t->n_tokens % bs != 0 && have > 0 && pool_.ref_count(t->blocks.back()) > 1) {
    auto id = allocate_block();
    if (!id) return id.status();
    fresh.push_back(*id);
    cow_from = t->blocks.back();
  }
  for (int32_t i = have; i < need; ++i) {
    auto id = allocate_block();
    if (!id) {
      undo();
      return id.status().with_context(fmt::format("sequence needs {} more blocks", need - i));
    }
    fresh.push_back(*id);
  }
  if (cow_from >= 0) {
    const int32_t to = fresh.front();
    const uint64_t bytes = layer_block_bytes();
    for (int l = 0; l < cfg_.n_layers; ++l) {
      auto* kb = static_cast<uint8_t*>(k_[size_t(l)]);
      auto* vb = static_cast<uint8_t*>(v_[size_t(l)]);
      Status s = backend_->copy(kb + uint64_t(to) * bytes, kb + uint64_t(cow_from) * bytes, bytes);
      if (s.is_ok()) s = backend_->copy(vb + uint64_t(to) * bytes, vb + uint64_t(cow_from) * bytes, bytes);
      if (!s.is_ok()) {
        undo();
        return s;
      }
    }
    pool_.release(cow_from);
    t->blocks.back() = to;
  }
  for (size_t i = cow_from >= 0 ? 1 : 0; i < fresh.size(); ++i) t->blocks.push_back(fresh[i]);
  for (int32_t i = 0; i < n_new; ++i) {
    const int32_t pos = t->n_tokens + i;
    slots->push_back(t->blocks[size_t(pos / bs)] * bs + pos % bs);
  }
  t->n_tokens += n_new;
  return Status::ok();
}

BlockTable KvCache::fork(const BlockTable& src) {
  for (int32_t id : src.blocks) pool_.ref(id);
  return src;
}

void KvCache::release(BlockTable* t) {
  for (int32_t id : t->blocks) pool_.release(id);
  t->blocks.clear();
  t->hashes.clear();
  t->n_tokens = 0;
}

Result<int32_t> KvCache::allocate_block() {
  if (pool_.n_free() == 0 && prefix_.size() > 0) prefix_.evict(pool_, 1);
  return pool_.allocate();
}

int32_t KvCache::match_prefix(std::span<const int32_t> tokens, BlockTable* t) {
  GSA_ASSERT(t->blocks.empty() && t->n_tokens == 0);
  if (!cfg_.prefix_cache || tokens.empty()) return 0;
  const int32_t bs = cfg_.block_size;
  const int32_t max_blocks = int32_t((tokens.size() - 1) / size_t(bs));
  uint64_t parent = 0;
  for (int32_t i = 0; i < max_blocks; ++i) {
    auto span = tokens.subspan(size_t(i) * bs, size_t(bs));
    const int32_t id = prefix_.find(parent, span);
    if (id < 0) break;
    pool_.ref(id);
    t->blocks.push_back(id);
    parent = PrefixCache::chain_hash(parent, span);
    t->hashes.push_back(parent);
    t->n_tokens += bs;
  }
  return t->n_tokens;
}

void KvCache::index_full_blocks(BlockTable* t, std::span<const int32_t> tokens) {
  if (!cfg_.prefix_cache) return;
  const int32_t bs = cfg_.block_size;
  const size_t full = size_t(t->n_tokens / bs);
  GSA_ASSERT(tokens.size() >= size_t(t->n_tokens));
  while (t->hashes.size() < full) {
    const size_t i = t->hashes.size();
    const uint64_t parent = i ? t->hashes[i - 1] : 0;
    t->hashes.push_back(prefix_.insert(pool_, parent, tokens.subspan(i * bs, size_t(bs)), t->blocks[i]));
    if (index_hook_) index_hook_(t->hashes.back(), t->blocks[i]);
  }
}

}  // namespace gsa::kv

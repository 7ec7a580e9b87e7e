#include "engine/store_tier.h"

#include <cstdio>

#include "core/log.h"
#include "kv/prefix_cache.h"

namespace gsa::engine {

Result<std::unique_ptr<StoreTier>> StoreTier::open(const std::string& dir, kv::KvCache* kv,
                                                   backend::Backend* b, uint64_t model_id, RepsFn reps) {
  const kv::KvConfig& kc = kv->config();
  offload::StoreGeometry g;
  g.n_layers = kc.n_layers;
  g.layer_bytes = int64_t(2 * kv->layer_block_bytes());
  auto store = offload::FileBlockStore::open(dir, g, model_id);
  if (!store) return store.status().with_context("--kv-offload-dir");
  std::unique_ptr<StoreTier> t(new StoreTier());
  t->kv_ = kv;
  t->b_ = b;
  t->store_ = std::move(*store);
  t->reps_ = std::move(reps);
  t->buf_.resize(size_t(g.layer_bytes));
  return t;
}

void StoreTier::write_through(uint64_t hash, int32_t block) {
  if (!stored_.insert(hash).second) return;  // once per process, whether or not it succeeds
  if (store_->contains(hash)) return;
  const uint64_t bytes = kv_->layer_block_bytes();
  const uint64_t off = uint64_t(block) * bytes;
  Status st = Status::ok();
  for (int l = 0; l < kv_->config().n_layers && st.is_ok(); ++l) {
    st = b_->download(buf_.data(), static_cast<const uint8_t*>(kv_->k(l)) + off, bytes);
    if (st.is_ok()) st = b_->download(buf_.data() + bytes, static_cast<const uint8_t*>(kv_->v(l)) + off, bytes);
    if (st.is_ok()) st = store_->write_layer(hash, l, buf_);
  }
  if (st.is_ok()) {
    ++stats_.blocks_stored;
    return;
  }
  if (stats_.store_failures++ == 0)
    log_warn("KV store: a block was not written ({}); it stays in memory only", st.to_string());
  (void)store_->remove(hash);
}

int32_t StoreTier::extend(std::span<const int32_t> tokens, kv::BlockTable* t) {
  const int32_t bs = kv_->config().block_size;
  const uint64_t bytes = kv_->layer_block_bytes();
  const int n_layers = kv_->config().n_layers;
  if (tokens.empty() || t->n_tokens % bs != 0) return t->n_tokens;
  const int32_t max_blocks = int32_t((tokens.size() - 1) / size_t(bs));
  std::vector<int32_t> loaded;
  std::vector<int32_t> slots;
  for (int32_t i = int32_t(t->blocks.size()); i < max_blocks; ++i) {
    const uint64_t parent = i ? t->hashes[size_t(i - 1)] : 0;
    const uint64_t hash = kv::PrefixCache::chain_hash(parent, tokens.subspan(size_t(i) * bs, size_t(bs)));
    if (!store_->contains(hash)) break;
    // Every layer read and verified before a block is taken: a failure leaves the table as it was.
    std::vector<std::byte>& all = load_buf_;
    all.resize(size_t(n_layers) * buf_.size());
    Status st = Status::ok();
    for (int l = 0; l < n_layers && st.is_ok(); ++l)
      st = store_->read_layer(hash, l, std::span<std::byte>(all.data() + size_t(l) * buf_.size(), buf_.size()));
    if (!st.is_ok()) {
      if (stats_.load_failures++ == 0)
        log_warn("KV store: a stored block is unusable ({}); recomputing from there", st.to_string());
      (void)store_->remove(hash);  // so the recomputed block is written again
      break;
    }
    slots.clear();
    if (!kv_->reserve(t, bs, &slots).is_ok()) break;  // no free block: recompute the rest
    const int32_t id = t->blocks.back();
    const uint64_t off = uint64_t(id) * bytes;
    for (int l = 0; l < n_layers && st.is_ok(); ++l) {
      const std::byte* src = all.data() + size_t(l) * buf_.size();
      st = b_->upload(static_cast<uint8_t*>(kv_->k(l)) + off, src, bytes);
      if (st.is_ok()) st = b_->upload(static_cast<uint8_t*>(kv_->v(l)) + off, src + bytes, bytes);
    }
    if (!st.is_ok()) {
      ++stats_.load_failures;
      kv_->release(t);  // the table holds only matched and loaded blocks: start over without them
      return 0;
    }
    stored_.insert(hash);  // before indexing, whose hook would write it back
    kv_->index_full_blocks(t, tokens);
    loaded.push_back(id);
  }
  if (!loaded.empty() && reps_) {
    if (Status st = reps_(loaded); !st.is_ok()) {
      stats_.load_failures += int64_t(loaded.size());
      log_warn("KV store: representations of loaded blocks failed ({}); recomputing them", st.to_string());
      kv_->release(t);
      return 0;
    }
  }
  stats_.blocks_loaded += int64_t(loaded.size());
  return t->n_tokens;
}

Result<uint64_t> model_fingerprint(const std::string& model_path, const kv::KvConfig& kc) {
  std::FILE* f = std::fopen(model_path.c_str(), "rb");
  if (!f) return io_error("{}: cannot open for the KV store's fingerprint", model_path);
  std::vector<std::byte> head(size_t(1) << 20);
  const size_t got = std::fread(head.data(), 1, head.size(), f);
  std::fseek(f, 0, SEEK_END);
  const long size = std::ftell(f);
  std::fclose(f);
  head.resize(got);
  const int64_t shape[] = {int64_t(size), kc.block_size, int64_t(kc.kv_type), kc.n_layers, kc.n_kv_heads, kc.head_dim};
  const auto* p = reinterpret_cast<const std::byte*>(shape);
  head.insert(head.end(), p, p + sizeof(shape));
  return offload::layer_checksum(0, 0, head);  // XXH3-64 of it (the store's checksum, seed of hash 0)
}

}  // namespace gsa::engine

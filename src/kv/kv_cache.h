// KvCache: the paged K/V memory of every layer in backend memory, the optional representation
// table (one entry per (layer, block, kv head)), the block pool, and per-sequence block tables.
// It does not decide what to attend to (sparse/) nor run kernels beyond copy-on-write copies.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "kv/block_pool.h"
#include "kv/prefix_cache.h"

namespace gsa::kv {

struct KvConfig {
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int block_size = 128;
  int32_t n_blocks = 0;
  DType kv_type = DType::F32;
  int64_t rep_bytes = 0;  // bytes of one (block, kv head) representation; 0 = no table
  bool prefix_cache = true;  // keep full blocks for reuse by later prompts with the same prefix
};

/// One sequence's blocks in logical order and its token count.
struct BlockTable {
  std::vector<int32_t> blocks;   // physical ids
  int32_t n_tokens = 0;
  std::vector<uint64_t> hashes;  // prefix-cache chain hash of each leading full block
};

class KvCache {
 public:
  KvCache() = default;
  ~KvCache();
  KvCache(KvCache&& o) noexcept;
  KvCache& operator=(KvCache&& o) noexcept;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  /// Allocates n_layers * 2 * n_blocks * n_kv_heads * block_size * head_dim elements (+ the
  /// representation table) on `backend` (borrowed). OutOfMemory names the bytes asked for.
  static Result<KvCache> create(backend::Backend* backend, const KvConfig& cfg);
  /// Bytes create() would allocate for cfg.
  static uint64_t bytes_needed(const KvConfig& cfg);

  const KvConfig& config() const { return cfg_; }
  BlockPool& pool() { return pool_; }
  const BlockPool& pool() const { return pool_; }

  void* k(int layer) const { return k_[size_t(layer)]; }        // [n_blocks, n_kv_heads, block_size, head_dim]
  void* v(int layer) const { return v_[size_t(layer)]; }        // [n_blocks, n_kv_heads, block_size, head_dim]
  void* reps(int layer) const { return reps_.empty() ? nullptr : reps_[size_t(layer)]; }  // [n_blocks, n_kv_heads, rep_bytes]
  uint64_t layer_block_bytes() const;  // bytes of one block's K (or V) in one layer

  /// Makes room for n_new more tokens in `table`: allocates blocks as needed and, if the last
  /// block is shared with another sequence and will be written, replaces it by a private copy
  /// (copy-on-write). Appends the slot (block * block_size + offset) of each new token to
  /// `slots`. On OutOfMemory the table is left as it was.
  Status reserve(BlockTable* table, int32_t n_new, std::vector<int32_t>* slots);
  /// A new table sharing every block of `src` by reference.
  BlockTable fork(const BlockTable& src);
  /// Drops the table's references; blocks with no other owner return to the pool (or stay in
  /// the prefix cache until evicted).
  void release(BlockTable* table);

  /// Starts an empty `table` with the longest run of cached full blocks that `tokens` begins
  /// with, leaving at least one token of `tokens` uncovered. Returns the tokens covered.
  int32_t match_prefix(std::span<const int32_t> tokens, BlockTable* table);
  /// Indexes the table's blocks that became full (all leading full blocks not yet indexed);
  /// `tokens` are the sequence's tokens, at least table->n_tokens of them.
  void index_full_blocks(BlockTable* table, std::span<const int32_t> tokens);
  const PrefixCache& prefix_cache() const { return prefix_; }
  /// Called by index_full_blocks with (chain hash, block) of each block it indexes, after the
  /// block is full: where a KV store writes blocks through (engine::StoreTier). Empty: none.
  void set_index_hook(std::function<void(uint64_t, int32_t)> hook) { index_hook_ = std::move(hook); }
  /// Blocks a reserve could take now: free ones and cached ones no sequence references.
  int32_t n_available() const { return pool_.n_free() + prefix_.n_evictable(pool_); }

 private:
  backend::Backend* backend_ = nullptr;
  KvConfig cfg_;
  BlockPool pool_;
  std::vector<void*> k_, v_, reps_;  // [n_layers]
  PrefixCache prefix_;
  std::function<void(uint64_t, int32_t)> index_hook_;
  void free_all();
  /// A free block, evicting an unused cached block when none is free.
  Result<int32_t> allocate_block();
};

}  // namespace gsa::kv

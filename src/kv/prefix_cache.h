// PrefixCache: full KV blocks indexed by the hash chain of the tokens they hold (block i's key
// covers tokens [0, (i+1) * block_size) of its sequence), so a new request whose prompt starts
// with cached blocks takes them by reference instead of recomputing them. The cache holds one
// reference to each indexed block; blocks referenced only by the cache are evicted least
// recently used first when the pool runs dry. Keys are verified against the stored tokens, so
// a hash collision can never hand out the wrong KV.
#pragma once

#include <cstdint>
#include <set>
#include <span>
#include <unordered_map>
#include <vector>

#include "kv/block_pool.h"

namespace gsa::kv {

class PrefixCache {
 public:
  /// Chain hash of one block given the previous block's hash (0 for the first block).
  static uint64_t chain_hash(uint64_t parent, std::span<const int32_t> tokens);

  /// Indexes full block `block` holding `tokens` after a prefix whose last block had hash
  /// `parent`; takes a reference in `pool`. Returns the block's hash. A key that is already
  /// indexed (by another physical block) is left as it is.
  uint64_t insert(BlockPool& pool, uint64_t parent, std::span<const int32_t> tokens, int32_t block);
  /// The cached block for (parent, tokens), or -1; refreshes its recency.
  int32_t find(uint64_t parent, std::span<const int32_t> tokens);
  /// Frees up to `n` blocks that only the cache references, least recently used first.
  /// Returns how many were freed.
  int32_t evict(BlockPool& pool, int32_t n);
  /// Drops every entry (and the cache's references).
  void clear(BlockPool& pool);

  /// Blocks that evict() could free now: cached blocks no sequence references.
  int32_t n_evictable(const BlockPool& pool) const;

  int32_t size() const { return int32_t(entries_.size()); }
  int64_t hits() const { return hits_; }

 private:
  struct Entry {
    int32_t block = -1;
    uint64_t parent = 0;
    uint64_t tick = 0;
    std::vector<int32_t> tokens;
  };
  std::unordered_map<uint64_t, Entry> entries_;  // hash -> entry
  std::set<std::pair<uint64_t, uint64_t>> lru_;  // (tick, hash)
  uint64_t tick_ = 0;
  int64_t hits_ = 0;
};

}  // namespace gsa::kv

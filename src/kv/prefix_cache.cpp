// PrefixCache implementation.
#include "kv/prefix_cache.h"

#include <algorithm>

namespace gsa::kv {

uint64_t PrefixCache::chain_hash(uint64_t parent, std::span<const int32_t> tokens) {
  // splitmix64-style mixing of each token into the parent's hash; 0 is reserved for "none".
  uint64_t h = parent ^ 0x9E3779B97F4A7C15ull;
  for (int32_t t : tokens) {
    h ^= uint64_t(uint32_t(t)) + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
    h ^= h >> 31;
  }
  return h ? h : 1;
}

uint64_t PrefixCache::insert(BlockPool& pool, uint64_t parent, std::span<const int32_t> tokens,
                             int32_t block) {
  const uint64_t h = chain_hash(parent, tokens);
  auto it = entries_.find(h);
  if (it != entries_.end()) return h;
  Entry e;
  e.block = block;
  e.parent = parent;
  e.tick = ++tick_;
  e.tokens.assign(tokens.begin(), tokens.end());
  pool.ref(block);
  lru_.insert({e.tick, h});
  entries_.emplace(h, std::move(e));
  return h;
}

int32_t PrefixCache::find(uint64_t parent, std::span<const int32_t> tokens) {
  const uint64_t h = chain_hash(parent, tokens);
  auto it = entries_.find(h);
  if (it == entries_.end()) return -1;
  Entry& e = it->second;
  if (e.parent != parent || !std::equal(tokens.begin(), tokens.end(), e.tokens.begin(), e.tokens.end()))
    return -1;
  lru_.erase({e.tick, h});
  e.tick = ++tick_;
  lru_.insert({e.tick, h});
  ++hits_;
  return e.block;
}

int32_t PrefixCache::evict(BlockPool& pool, int32_t n) {
  int32_t freed = 0;
  for (auto it = lru_.begin(); it != lru_.end() && freed < n;) {
    auto e = entries_.find(it->second);
    if (e != entries_.end() && pool.ref_count(e->second.block) == 1) {
      pool.release(e->second.block);
      entries_.erase(e);
      it = lru_.erase(it);
      ++freed;
    } else {
      ++it;
    }
  }
  return freed;
}

int32_t PrefixCache::n_evictable(const BlockPool& pool) const {
  int32_t n = 0;
  for (const auto& [h, e] : entries_) n += pool.ref_count(e.block) == 1;
  return n;
}

void PrefixCache::clear(BlockPool& pool) {
  for (auto& [h, e] : entries_) pool.release(e.block);
  entries_.clear();
  lru_.clear();
}

}  // namespace gsa::kv

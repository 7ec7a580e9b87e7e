// StoreTier: the file store behind the prefix cache (`--kv-offload file`). Full KV blocks are
// written through to an offload::FileBlockStore (one checksummed file per block, keyed by its
// prefix-cache chain hash) as they are indexed; a prompt whose prefix the in-memory cache does
// not hold continues its prefix match in the store, each found block's K and V read back into a
// fresh block and its representations recomputed. So a later process, or this one after the
// cache evicted the blocks, reuses a long prompt's KV instead of recomputing it.
//
// Trust: a block is used only when every layer reads back verified (offload/block_store.h);
// a missing, short or corrupt file ends the match there and the rest of the prompt is
// recomputed, counted in load_failures, and the bad file removed so the recomputed block is
// written again. Writes that fail (full disk) are counted and skipped:
// the block stays in memory, the request goes on.
//
// Write-through is synchronous: one download of each layer's K and V per new full block (a
// memory copy on the CPU backend).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include "backend/backend.h"
#include "kv/kv_cache.h"
#include "offload/block_store.h"

namespace gsa::engine {

struct StoreTierStats {
  int64_t blocks_stored = 0;   // blocks written through
  int64_t blocks_loaded = 0;   // blocks a prefix match read back from the store
  int64_t store_failures = 0;  // writes that failed (the block stays in memory only)
  int64_t load_failures = 0;   // reads that failed verification or I/O (recomputed instead)
};

class StoreTier {
 public:
  /// Recomputes the representations of the listed blocks (every layer) after their K was loaded.
  using RepsFn = std::function<Status(std::span<const int32_t> blocks)>;

  /// Opens the store in `dir` for the blocks of `kv` (all borrowed; they outlive the tier).
  /// model_id tells one model's blocks from another's (model_fingerprint).
  static Result<std::unique_ptr<StoreTier>> open(const std::string& dir, kv::KvCache* kv,
                                                 backend::Backend* b, uint64_t model_id, RepsFn reps);

  /// Writes full block `block` (chain hash `hash`) unless the store has it: the KvCache's
  /// indexing hook (KvCache::set_index_hook).
  void write_through(uint64_t hash, int32_t block);
  /// Continues a prefix match in the store: appends to `t` each next full block of `tokens`
  /// found there (leaving at least one token uncovered, as KvCache::match_prefix does) and
  /// indexes it in the prefix cache. Returns the tokens `t` covers then (0 when a failure
  /// after blocks were taken made it release the table).
  int32_t extend(std::span<const int32_t> tokens, kv::BlockTable* t);

  StoreTierStats stats() const { return stats_; }

 private:
  StoreTier() = default;
  kv::KvCache* kv_ = nullptr;
  backend::Backend* b_ = nullptr;
  std::unique_ptr<offload::FileBlockStore> store_;
  RepsFn reps_;
  std::unordered_set<uint64_t> stored_;  // hashes written or found in the store
  std::vector<std::byte> buf_;           // one layer of one block: K then V
  std::vector<std::byte> load_buf_;      // extend: every layer of one block, read before it is taken
  StoreTierStats stats_;
};

/// A fingerprint of the model's KV: the GGUF file's size and first 1 MiB, the KV element type,
/// block size and shape. Two engines share stored blocks only when these are equal.
Result<uint64_t> model_fingerprint(const std::string& model_path, const kv::KvConfig& kc);

}  // namespace gsa::engine

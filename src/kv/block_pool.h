// BlockPool: the free list and reference counts of physical KV blocks. It owns ids only, not
// memory (KvCache owns the memory). Blocks are shared by reference between sequences that share
// a prefix (parallel sampling); a block returns to the free list when its last reference goes.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"

namespace gsa::kv {

class BlockPool {
 public:
  explicit BlockPool(int32_t n_blocks = 0);

  int32_t n_blocks() const { return int32_t(ref_.size()); }
  int32_t n_free() const { return int32_t(free_.size()); }

  /// A fresh block with one reference; OutOfMemory when none is free.
  Result<int32_t> allocate();
  /// Adds a reference to a live block.
  void ref(int32_t id);
  /// Drops a reference; the block is free again when none remain.
  void release(int32_t id);
  int32_t ref_count(int32_t id) const { return ref_[size_t(id)]; }
  /// Bumped each time a block is (re)allocated, so derived data (representations) computed for
  /// an earlier owner can be recognized as stale.
  uint32_t generation(int32_t id) const { return gen_[size_t(id)]; }

 private:
  std::vector<int32_t> ref_;   // [n_blocks]
  std::vector<uint32_t> gen_;  // [n_blocks]
  std::vector<int32_t> free_;  // stack of free ids; lowest ids are handed out first
};

}  // namespace gsa::kv

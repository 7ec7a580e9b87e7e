// BlockPool implementation.
#include "kv/block_pool.h"

namespace gsa::kv {

BlockPool::BlockPool(int32_t n_blocks)
    : ref_(size_t(n_blocks), 0), gen_(size_t(n_blocks), 0) {
  free_.reserve(size_t(n_blocks));
  for (int32_t i = n_blocks - 1; i >= 0; --i) free_.push_back(i);
}

Result<int32_t> BlockPool::allocate() {
  if (free_.empty())
    return out_of_memory("KV cache is full: all {} blocks are in use", n_blocks());
  const int32_t id = free_.back();
  free_.pop_back();
  ref_[size_t(id)] = 1;
  ++gen_[size_t(id)];
  return id;
}

void BlockPool::ref(int32_t id) {
  GSA_ASSERT(id >= 0 && id < n_blocks() && ref_[size_t(id)] > 0);
  ++ref_[size_t(id)];
}

void BlockPool::release(int32_t id) {
  GSA_ASSERT(id >= 0 && id < n_blocks() && ref_[size_t(id)] > 0);
  if (--ref_[size_t(id)] == 0) free_.push_back(id);
}

}  // namespace gsa::kv

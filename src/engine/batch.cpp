// Batch builder: ForwardInput assembly for prefill and decode steps.
#include "engine/batch.h"

namespace gsa::engine {

namespace {

// Closes one sequence's row group: its query rows end here and its KV is the table's blocks.
void add_sequence(model::ForwardInput& in, const kv::BlockTable& t, int block_size) {
  in.q_indptr.push_back(int32_t(in.tokens.size()));
  for (int32_t b : t.blocks) in.kv_indices.push_back(b);
  in.kv_indptr.push_back(int32_t(in.kv_indices.size()));
  in.kv_last_len.push_back(t.n_tokens - (int32_t(t.blocks.size()) - 1) * block_size);
}

}  // namespace

model::ForwardInput build_prefill_input(const std::vector<PrefillChunk>& chunks, int block_size) {
  model::ForwardInput in;
  in.q_indptr.push_back(0);
  in.kv_indptr.push_back(0);
  for (const PrefillChunk& c : chunks) {
    const auto tokens = c.job->tokens();
    const kv::BlockTable& t = c.job->table;
    for (int32_t i = 0; i < c.n; ++i) {
      const int32_t p = c.start + i;
      in.tokens.push_back(tokens[size_t(p)]);
      in.pos.push_back(p);
      in.slots.push_back(c.slots[size_t(i)]);
      if ((p + 1) % block_size == 0) in.full_blocks.push_back(t.blocks[size_t(p / block_size)]);
    }
    add_sequence(in, t, block_size);
    if (c.completes && !c.job->resume) in.logit_rows.push_back(int32_t(in.tokens.size()) - 1);
  }
  return in;
}

model::ForwardInput build_decode_input(const std::vector<Seq*>& seqs, const std::vector<int32_t>& slots,
                                       int block_size, std::vector<sparse::SeqInput>* sel) {
  model::ForwardInput in;
  in.q_indptr.push_back(0);
  in.kv_indptr.push_back(0);
  for (size_t i = 0; i < seqs.size(); ++i) {
    const Seq& s = *seqs[i];
    const int32_t p = s.table.n_tokens - 1;
    in.tokens.push_back(s.last_token);
    in.pos.push_back(p);
    in.slots.push_back(slots[i]);
    if ((p + 1) % block_size == 0) in.full_blocks.push_back(s.table.blocks[size_t(p / block_size)]);
    add_sequence(in, s.table, block_size);
    in.logit_rows.push_back(int32_t(in.tokens.size()) - 1);
    if (sel) {
      const RequestInput& r = s.req->in;
      sel->push_back({s.id, s.table.n_tokens, s.table.blocks.data(), int32_t(s.table.blocks.size()),
                      r.sparse_budget_tokens, r.sparse_min_context, r.sparse_oracle, r.sparse_rank_by});
    }
  }
  return in;
}

}  // namespace gsa::engine

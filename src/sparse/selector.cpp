// Selector: per-step planning of GSA block lists. Sparse lists come from an inline
// cpu::block_select over the sequences that select this step (lag = 0), from the previous
// selection extended with the blocks added since (select_every), or from the asynchronous CPU
// selector (lag >= 1). Lists are built in per-layer host vectors whose capacity is kept.
#include "sparse/selector.h"

#include <algorithm>
#include <unordered_map>

#include "backend/cpu/cpu_kernels.h"
#include "sparse/async_selector.h"

namespace gsa::sparse {

namespace {

/// A selection of one (sequence, layer), kept as logical indices.
struct LayerSel {
  int64_t step = -1;             // step whose query produced it; -1: none
  int32_t n_blocks = 0;          // blocks of the sequence at that step
  int32_t list_size = 0;
  std::vector<int32_t> logical;  // [lists_per_seq, list_size]
};

struct SeqState {
  int64_t sparse_steps = 0;      // sparse decode steps seen (drives select_every)
  std::vector<LayerSel> layers;  // [n_layers], lag = 0 only
};

struct SeqPlan {
  SeqInput in;
  bool sparse = false;
  bool select_now = false;
  SeqState* state = nullptr;
};

struct LayerOut {
  std::vector<int32_t> indptr, indices, last_len;
  std::vector<ListSource> source;  // [n_seqs]
  bool done = false;
};

}  // namespace

backend::Rank rank_of(const SparseConfig& cfg, const SeqInput& in) {
  if (in.oracle || cfg.selection == Selection::Oracle) return backend::Rank::Oracle;
  const RankBy by = in.rank_by >= 0 ? RankBy(in.rank_by) : cfg.rank_by;
  return by == RankBy::Mass     ? backend::Rank::Mass
         : by == RankBy::Rerank ? backend::Rank::Rerank
                                : backend::Rank::Score;
}

struct Selector::Impl {
  int64_t step = -1;
  std::vector<SeqPlan> plan;
  std::unordered_map<int64_t, SeqState> states;
  std::vector<LayerOut> out;  // [n_layers]
  bool any_sparse = false;
  // Inline selection scratch: the sub-batch of sequences that select this step.
  std::vector<int> sub;
  std::vector<float> sub_q;
  std::vector<int32_t> sub_bt_indptr, sub_bt, sub_seq_len, sub_out_indptr, sub_out, sub_last_len;
  std::vector<uint8_t> sub_rank;  // backend::Rank per sub-batch sequence
  std::vector<AsyncJobInput> jobs;
  std::vector<int64_t> ids;  // begin_step's duplicate check
  AsyncResult async_tmp;
  SelectorStats stats;
};

Selector::Selector(const SparseConfig& cfg, const SelectorDims& dims, ThreadPool* pool)
    : cfg_(cfg), dims_(dims), pool_(pool), impl_(std::make_unique<Impl>()) {}

Selector::~Selector() = default;

Result<std::unique_ptr<Selector>> Selector::create(const SparseConfig& cfg,
                                                   const SelectorDims& dims, ThreadPool* pool) {
  GSA_RETURN_IF_ERROR(validate(cfg));
  if (dims.n_layers <= 0 || dims.n_heads <= 0 || dims.n_kv_heads <= 0 || dims.head_dim <= 0 ||
      dims.n_heads % dims.n_kv_heads != 0 || dims.async_queue_slots < 0)
    return invalid_argument("selector: bad dims n_layers {}, n_heads {}, n_kv_heads {}, "
                            "head_dim {}, async_queue_slots {}", dims.n_layers, dims.n_heads,
                            dims.n_kv_heads, dims.head_dim, dims.async_queue_slots);
  if (cfg.representation == backend::RepKind::Hash && dims.head_dim % 32 != 0)
    return invalid_argument("selector: hash representation needs head_dim % 32 == 0, got {}",
                            dims.head_dim);
  if (cfg.representation == backend::RepKind::Quant && dims.head_dim % 16 != 0)
    return invalid_argument("selector: quant representation needs head_dim % 16 == 0, got {} "
                            "(--representation minmax works with any head_dim)", dims.head_dim);
  std::unique_ptr<Selector> self(new Selector(cfg, dims, pool));
  if (cfg.representation == backend::RepKind::Hash)
    self->hash_w_ = make_hash_matrix(dims.head_dim, cfg.hash_seed);
  self->impl_->out.resize(size_t(dims.n_layers));
  if (cfg.lag >= 1) {
    AsyncSelectorOptions opt;
    opt.n_layers = dims.n_layers;
    opt.n_heads = dims.n_heads;
    opt.n_kv_heads = dims.n_kv_heads;
    opt.head_dim = dims.head_dim;
    opt.n_workers = cfg.cpu_workers;
    opt.queue_slots = dims.async_queue_slots > 0 ? dims.async_queue_slots : 64 * dims.n_layers;
    GSA_ASSIGN_OR_RETURN(self->async_, AsyncSelector::create(cfg, opt, self->hash_w_));
  }
  return self;
}

Status Selector::begin_step(std::span<const SeqInput> seqs) {
  Impl& m = *impl_;
  const int bs = cfg_.block_size;
  m.ids.clear();
  for (size_t s = 0; s < seqs.size(); ++s) {
    const SeqInput& in = seqs[s];
    const int64_t n = in.n_blocks;
    if (in.seq_len < 1 || n != (int64_t(in.seq_len) + bs - 1) / bs || !in.block_table)
      return invalid_argument("selector: sequence {} (batch position {}) has {} tokens, {} blocks "
                              "of {} and block_table {}", in.seq_id, s, in.seq_len, n, bs,
                              in.block_table ? "set" : "null");
    m.ids.push_back(in.seq_id);
  }
  std::sort(m.ids.begin(), m.ids.end());
  const auto dup = std::adjacent_find(m.ids.begin(), m.ids.end());
  if (dup != m.ids.end())
    return invalid_argument("selector: sequence {} appears twice in one step", *dup);
  ++m.step;
  ++m.stats.steps;
  m.plan.resize(seqs.size());
  m.any_sparse = false;
  for (size_t s = 0; s < seqs.size(); ++s) {
    SeqPlan& sp = m.plan[s];
    sp.in = seqs[s];
    sp.sparse = sparse_eligible(cfg_, sp.in.seq_len, sp.in.min_context);
    sp.state = nullptr;
    sp.select_now = false;
    if (!sp.sparse) continue;
    m.any_sparse = true;
    SeqState& st = m.states[sp.in.seq_id];
    if (st.layers.empty() && cfg_.lag == 0) st.layers.resize(size_t(dims_.n_layers));
    sp.select_now = st.sparse_steps % cfg_.select_every == 0;
    ++st.sparse_steps;
    sp.state = &st;
  }
  for (LayerOut& lo : m.out) lo.done = false;
  return Status::ok();
}

namespace {

// Appends list l of a selection (logical indices [lists, list_size], computed when the sequence
// had sel_n_blocks blocks) extended with the blocks added since, as physical ids of the current
// table. Every block past sel_n_blocks is new; the old local blocks are in the selection, so
// the current local/partial blocks are all included and no index passes the end.
void append_extended(const int32_t* logical, int list_size, int32_t sel_n_blocks, int l,
                     const SeqInput& in, int block_size, std::vector<int32_t>* indices,
                     std::vector<int32_t>* last_len) {
  const int32_t* lg = logical + size_t(l) * list_size;
  int32_t last = -1;
  for (int k = 0; k < list_size; ++k) {
    indices->push_back(in.block_table[lg[k]]);
    last = lg[k];
  }
  for (int32_t j = sel_n_blocks; j < in.n_blocks; ++j) {
    indices->push_back(in.block_table[j]);
    last = j;
  }
  const int32_t n = in.n_blocks;
  last_len->push_back(last == n - 1 ? in.seq_len - (n - 1) * block_size : block_size);
}

void append_dense(const SeqInput& in, int block_size, std::vector<int32_t>* indices,
                  std::vector<int32_t>* last_len) {
  indices->insert(indices->end(), in.block_table, in.block_table + in.n_blocks);
  last_len->push_back(in.seq_len - (in.n_blocks - 1) * block_size);
}

}  // namespace

void DeferredJobs::clear() {
  rows.clear();
  seq_ids.clear();
  seq_len.clear();
  n_blocks.clear();
  budget_tokens.clear();
  rank.clear();
  table_off.clear();
  tables.clear();
}

Status Selector::submit_deferred(const DeferredJobs& d, const float* q, const void* reps) {
  if (!async_) return invalid_argument("selector: submit_deferred needs lag >= 1");
  if (d.empty()) return Status::ok();
  if (!q || !reps) return invalid_argument("selector: submit_deferred with null q or reps");
  const int64_t q_stride = int64_t(dims_.n_heads) * dims_.head_dim;
  std::vector<AsyncJobInput> jobs(d.rows.size());
  for (size_t i = 0; i < d.rows.size(); ++i)
    jobs[i] = {d.seq_ids[i], d.seq_len[i], d.tables.data() + d.table_off[i], d.n_blocks[i],
               q + d.rows[i] * q_stride, d.budget_tokens[i], d.rank[i]};
  return async_->submit(d.step, d.layer, jobs, reps);
}

Result<BlockLists> Selector::select_layer(int layer, const float* q, const void* reps,
                                          DeferredJobs* deferred, const void* k_cache) {
  Impl& m = *impl_;
  if (m.step < 0) return invalid_argument("selector: select_layer before begin_step");
  if (layer < 0 || layer >= dims_.n_layers)
    return invalid_argument("selector: layer {} outside [0, {})", layer, dims_.n_layers);
  LayerOut& lo = m.out[size_t(layer)];
  if (lo.done) return invalid_argument("selector: layer {} selected twice in one step", layer);
  const int bs = cfg_.block_size;
  const int lists_per_seq = cfg_.scope == Scope::PerKvHead ? dims_.n_kv_heads : 1;
  const int64_t q_stride = int64_t(dims_.n_heads) * dims_.head_dim;
  const int n_seqs = int(m.plan.size());

  // Sequences that compute a selection now (lag = 0 inline, or submitted to the async selector).
  m.sub.clear();
  const bool dense_layer = layer < cfg_.dense_layers;
  for (int s = 0; s < n_seqs && !dense_layer; ++s)
    if (m.plan[size_t(s)].select_now) m.sub.push_back(s);
  if (deferred && cfg_.lag == 0)
    return invalid_argument("selector: deferred submission needs lag >= 1");
  if (deferred) deferred->clear();
  if (!m.sub.empty() && !deferred && (!q || !reps))
    return invalid_argument("selector: layer {} has sparse sequences but null q or reps", layer);

  if (cfg_.lag == 0 && !m.sub.empty()) {
    const int n_sub = int(m.sub.size());
    m.sub_q.resize(size_t(n_sub) * q_stride);
    m.sub_bt_indptr.assign(1, 0);
    m.sub_bt.clear();
    m.sub_seq_len.clear();
    m.sub_out_indptr.assign(1, 0);
    m.sub_rank.clear();
    for (int i = 0; i < n_sub; ++i) {
      const SeqInput& in = m.plan[size_t(m.sub[size_t(i)])].in;
      m.sub_rank.push_back(uint8_t(rank_of(cfg_, in)));
      std::copy(q + m.sub[size_t(i)] * q_stride, q + (m.sub[size_t(i)] + 1) * q_stride,
                m.sub_q.begin() + i * q_stride);
      m.sub_bt.insert(m.sub_bt.end(), in.block_table, in.block_table + in.n_blocks);
      m.sub_bt_indptr.push_back(int32_t(m.sub_bt.size()));
      m.sub_seq_len.push_back(in.seq_len);
      const int size = budget_blocks(cfg_, in.n_blocks, in.budget_tokens);
      for (int l = 0; l < lists_per_seq; ++l) m.sub_out_indptr.push_back(m.sub_out_indptr.back() + size);
    }
    m.sub_out.resize(size_t(m.sub_out_indptr.back()));
    m.sub_last_len.resize(size_t(n_sub) * lists_per_seq);
    backend::BlockSelectParams p = select_params(cfg_, dims_.n_heads, dims_.n_kv_heads, dims_.head_dim);
    p.q = m.sub_q.data();
    p.reps = reps;
    p.block_table_indptr = m.sub_bt_indptr.data();
    p.block_table = m.sub_bt.data();
    p.seq_len = m.sub_seq_len.data();
    p.out_indptr = m.sub_out_indptr.data();
    p.out_indices = m.sub_out.data();
    p.out_last_len = m.sub_last_len.data();
    p.n_seqs = n_sub;
    p.block_size = bs;
    p.per_kv_head = lists_per_seq > 1;
    p.hash_w = hash_w_.empty() ? nullptr : hash_w_.data();
    p.rank = m.sub_rank.data();
    for (uint8_t r : m.sub_rank) {
      p.any_mass |= r == uint8_t(backend::Rank::Mass);
      p.any_oracle |= r == uint8_t(backend::Rank::Oracle) || r == uint8_t(backend::Rank::Rerank);
    }
    if (p.any_oracle) {
      if (!k_cache)
        return invalid_argument("selector: layer {} has oracle sequences but no K cache", layer);
      p.k_cache = k_cache;
      p.kv_type = DType::F32;
    }
    GSA_RETURN_IF_ERROR(cpu::block_select(p, pool_));
    // Keep each new selection as logical indices (for reuse): the output is sorted by logical
    // index, so one forward walk over the block table maps every id.
    for (int i = 0; i < n_sub; ++i) {
      const SeqPlan& sp = m.plan[size_t(m.sub[size_t(i)])];
      LayerSel& sel = sp.state->layers[size_t(layer)];
      const int size = (m.sub_out_indptr[size_t(i + 1) * lists_per_seq] -
                        m.sub_out_indptr[size_t(i) * lists_per_seq]) / lists_per_seq;
      sel.step = m.step;
      sel.n_blocks = sp.in.n_blocks;
      sel.list_size = size;
      sel.logical.resize(size_t(lists_per_seq) * size);
      for (int l = 0; l < lists_per_seq; ++l) {
        const int32_t* ids = m.sub_out.data() + m.sub_out_indptr[size_t(i) * lists_per_seq + l];
        int32_t j = 0;
        for (int k = 0; k < size; ++k) {
          while (j < sp.in.n_blocks && sp.in.block_table[j] != ids[k]) ++j;
          GSA_ASSERT(j < sp.in.n_blocks, "selector: selected id not in the block table");
          sel.logical[size_t(l) * size + k] = j++;
        }
      }
    }
  }

  lo.indptr.assign(1, 0);
  lo.indices.clear();
  lo.last_len.clear();
  lo.source.assign(size_t(n_seqs), ListSource::Dense);
  for (int s = 0; s < n_seqs; ++s) {
    const SeqPlan& sp = m.plan[size_t(s)];
    const SeqInput& in = sp.in;
    const LayerSel* sel = nullptr;
    ListSource src = ListSource::Dense;
    if (dense_layer) {
      // Every list dense (no selection exists for this layer).
    } else if (sp.sparse && cfg_.lag == 0) {
      const LayerSel& cand = sp.state->layers[size_t(layer)];
      if (cand.step >= 0 && cand.n_blocks <= in.n_blocks) {
        sel = &cand;
        src = cand.step == m.step ? ListSource::Selected : ListSource::Reused;
      }
    } else if (sp.sparse) {
      // The newest finished result; the current step's job is submitted after this lookup.
      if (async_->latest(in.seq_id, layer, &m.async_tmp) && m.async_tmp.n_blocks <= in.n_blocks) {
        src = m.async_tmp.step >= m.step - cfg_.lag ? ListSource::Async : ListSource::Stale;
      }
    }
    for (int l = 0; l < lists_per_seq; ++l) {
      if (sel) {
        append_extended(sel->logical.data(), sel->list_size, sel->n_blocks, l, in, bs,
                        &lo.indices, &lo.last_len);
      } else if (src == ListSource::Async || src == ListSource::Stale) {
        append_extended(m.async_tmp.logical.data(), m.async_tmp.list_size, m.async_tmp.n_blocks,
                        l, in, bs, &lo.indices, &lo.last_len);
      } else {
        append_dense(in, bs, &lo.indices, &lo.last_len);
      }
      lo.indptr.push_back(int32_t(lo.indices.size()));
    }
    lo.source[size_t(s)] = src;
    SelectorStats& st = m.stats;
    switch (src) {
      case ListSource::Dense: ++st.lists_dense; break;
      case ListSource::Selected: ++st.lists_selected; break;
      case ListSource::Reused: ++st.lists_reused; break;
      case ListSource::Async: ++st.lists_async; break;
      case ListSource::Stale: ++st.lists_stale; break;
    }
    st.blocks_attended += lo.indptr.back() - lo.indptr[lo.indptr.size() - 1 - lists_per_seq];
    st.blocks_total += int64_t(in.n_blocks) * lists_per_seq;
  }

  if (cfg_.lag >= 1 && !m.sub.empty() && deferred) {
    deferred->step = m.step;
    deferred->layer = layer;
    for (int s : m.sub) {
      const SeqInput& in = m.plan[size_t(s)].in;
      deferred->rows.push_back(s);
      deferred->seq_ids.push_back(in.seq_id);
      deferred->seq_len.push_back(in.seq_len);
      deferred->n_blocks.push_back(in.n_blocks);
      deferred->budget_tokens.push_back(in.budget_tokens);
      deferred->rank.push_back(uint8_t(rank_of(cfg_, in)));
      deferred->table_off.push_back(int32_t(deferred->tables.size()));
      deferred->tables.insert(deferred->tables.end(), in.block_table, in.block_table + in.n_blocks);
    }
  } else if (cfg_.lag >= 1 && !m.sub.empty()) {
    m.jobs.clear();
    for (int s : m.sub) {
      const SeqInput& in = m.plan[size_t(s)].in;
      m.jobs.push_back({in.seq_id, in.seq_len, in.block_table, in.n_blocks, q + s * q_stride,
                        in.budget_tokens, uint8_t(rank_of(cfg_, in))});
    }
    GSA_RETURN_IF_ERROR(async_->submit(m.step, layer, m.jobs, reps));
  }
  lo.done = true;
  BlockLists bl;
  bl.indptr = lo.indptr.data();
  bl.indices = lo.indices.data();
  bl.last_len = lo.last_len.data();
  bl.n_lists = n_seqs * lists_per_seq;
  bl.per_kv_head = lists_per_seq > 1;
  return bl;
}

ListSource Selector::source(int s, int layer) const {
  const LayerOut& lo = impl_->out[size_t(layer)];
  return size_t(s) < lo.source.size() ? lo.source[size_t(s)] : ListSource::Dense;
}

bool Selector::is_sparse(int s) const {
  return size_t(s) < impl_->plan.size() && impl_->plan[size_t(s)].sparse;
}

void Selector::release(int64_t seq_id) {
  if (async_) async_->cancel(seq_id);
  impl_->states.erase(seq_id);
}

void Selector::drain() {
  if (async_) async_->drain();
}

SelectorStats Selector::stats() const { return impl_->stats; }

}  // namespace gsa::sparse

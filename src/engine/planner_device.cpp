// The planner for selector=device on the CUDA backend: selection on the GPU, lists that never
// leave it.
#include <algorithm>
#include <vector>

#include "engine/planner.h"

namespace gsa::engine {
namespace {

// GSA selection on the device (CUDA): one block_select launch per layer writes the lists the
// attention op reads, with no host synchronization inside the step. The host sizes the lists
// (budget per sequence, or every block for a dense one) and uploads the step's block tables
// once. Supports selector=device, lag 0, select_every 1 (selector=cpu: HostSelectPlanner).
class DevicePlanner final : public sparse::Planner {
 public:
  DevicePlanner(std::unique_ptr<sparse::Selector> sel, backend::Backend* b, kv::KvCache* kv,
                const sparse::SparseConfig& cfg, const model::HParams& h)
      : sel_(std::move(sel)), b_(b), kv_(kv), cfg_(cfg), h_(h) {}
  ~DevicePlanner() override {
    if (ws_) b_->free(ws_);
    if (hash_w_) b_->free(hash_w_);
  }

  Status init(const std::vector<float>& hash_w) {
    if (hash_w.empty()) return Status::ok();
    GSA_ASSIGN_OR_RETURN(void* p, b_->alloc(hash_w.size() * 4));
    hash_w_ = static_cast<float*>(p);
    return b_->upload(hash_w_, hash_w.data(), hash_w.size() * 4);
  }

  // Every step selects from its own query (lag 0), so the oracle and rerank are always possible
  // here.
  Status check_request(const sparse::SeqInput&) const override { return Status::ok(); }

  const std::vector<float>& hash_matrix() const override { return sel_->hash_matrix(); }

  Status begin_step(std::span<const sparse::SeqInput> seqs, std::span<const int32_t>) override {
    step_ = next_step_++;
    const int n = int(seqs.size());
    const int per = cfg_.scope == sparse::Scope::PerKvHead ? h_.n_kv_heads : 1;
    host_.clear();
    // [bt_indptr n+1][bt][seq_len n][dense last_len n][ranks, bytes in (n+3)/4 words]
    // [out_indptr n*per+1]; out_indices and last_len follow.
    host_.push_back(0);
    int64_t bt_total = 0;
    for (const auto& in : seqs) host_.push_back(int32_t(bt_total += in.n_blocks));
    for (const auto& in : seqs) host_.insert(host_.end(), in.block_table, in.block_table + in.n_blocks);
    for (const auto& in : seqs) host_.push_back(in.seq_len);
    for (const auto& in : seqs) host_.push_back(in.seq_len - (in.n_blocks - 1) * cfg_.block_size);
    const size_t flags_at = host_.size();
    host_.resize(flags_at + size_t(n + 3) / 4, 0);
    any_oracle_ = any_mass_ = false;
    for (int i = 0; i < n; ++i) {
      const sparse::SeqInput& in = seqs[size_t(i)];
      const backend::Rank rank = sparse::sparse_eligible(cfg_, in.seq_len, in.min_context)
                                     ? sparse::rank_of(cfg_, in)
                                     : backend::Rank::Score;
      reinterpret_cast<uint8_t*>(host_.data() + flags_at)[i] = uint8_t(rank);
      any_oracle_ |= rank == backend::Rank::Oracle || rank == backend::Rank::Rerank;
      any_mass_ |= rank == backend::Rank::Mass;
    }
    host_.push_back(0);
    int64_t out_total = 0, total = 0;
    any_sparse_ = false;
    source_sparse_.clear();
    for (const auto& in : seqs) {
      const bool sparse = sparse::sparse_eligible(cfg_, in.seq_len, in.min_context);
      any_sparse_ |= sparse;
      source_sparse_.push_back(sparse ? sparse::ListSource::Selected : sparse::ListSource::Dense);
      const int size = sparse ? sparse::budget_blocks(cfg_, in.n_blocks, in.budget_tokens) : in.n_blocks;
      for (int l = 0; l < per; ++l) host_.push_back(int32_t(out_total += size));
      total += int64_t(in.n_blocks) * per;
    }
    source_dense_.assign(size_t(n), sparse::ListSource::Dense);
    // Layers below dense_layers attend every block.
    const int dense = std::min(cfg_.dense_layers, h_.n_layers);
    stats_.lists.blocks_attended += out_total * (h_.n_layers - dense) + total * dense;
    stats_.lists.blocks_total += total * h_.n_layers;
    stats_.lists.steps++;
    off_bt_ = n + 1;
    off_len_ = off_bt_ + bt_total;
    off_dense_last_ = off_len_ + n;
    off_rank_ = int64_t(flags_at);
    off_out_indptr_ = off_rank_ + (n + 3) / 4;
    off_out_ = off_out_indptr_ + int64_t(n) * per + 1;
    off_last_ = off_out_ + out_total;
    const int64_t words = off_last_ + int64_t(n) * per;
    if (words > cap_) {
      if (ws_) b_->free(ws_);
      ws_ = nullptr;
      cap_ = words * 2;
      GSA_ASSIGN_OR_RETURN(void* p, b_->alloc(size_t(cap_) * 4));
      ws_ = static_cast<int32_t*>(p);
    }
    n_seqs_ = n;
    per_ = per;
    return b_->upload(ws_, host_.data(), host_.size() * 4);
  }

  Result<sparse::LayerPlan> plan_layer(int layer, const void* q) override {
    sparse::LayerPlan out;
    out.step = step_;
    out.layer = layer;
    // Dense layers, and steps where no sequence is sparse: every block, no selection kernel.
    if (layer < cfg_.dense_layers || !any_sparse_) {
      out.indptr = ws_;
      out.indices = ws_ + off_bt_;
      out.last_len = ws_ + off_dense_last_;
      out.n_lists = n_seqs_;
      out.per_kv_head = false;
      out.source = source_dense_;
      return out;
    }
    backend::BlockSelectParams p = sparse::select_params(cfg_, h_.n_heads, h_.n_kv_heads, h_.head_dim);
    p.q = q;
    p.reps = kv_->reps(layer);
    p.block_table_indptr = ws_;
    p.block_table = ws_ + off_bt_;
    p.seq_len = ws_ + off_len_;
    p.out_indptr = ws_ + off_out_indptr_;
    p.out_indices = ws_ + off_out_;
    p.out_last_len = ws_ + off_last_;
    p.n_seqs = n_seqs_;
    p.per_kv_head = per_ > 1;
    p.hash_w = hash_w_;
    p.act_type = DType::BF16;
    p.rank = reinterpret_cast<const uint8_t*>(ws_ + off_rank_);
    p.any_mass = any_mass_;
    if (any_oracle_) {
      p.any_oracle = true;
      p.k_cache = kv_->k(layer);
      p.kv_type = DType::BF16;
    }
    GSA_RETURN_IF_ERROR(b_->block_select(p));
    out.indptr = p.out_indptr;
    out.indices = p.out_indices;
    out.last_len = p.out_last_len;
    out.n_lists = n_seqs_ * per_;
    out.per_kv_head = per_ > 1;
    out.source = source_sparse_;
    return out;
  }

  // The device reads the representation table the forward writes: no copy to refresh.
  Status reps_written(std::span<const int32_t>) override { return Status::ok(); }
  // The Selector holds no per-sequence state here (it never plans a step), but releasing it
  // keeps the contract whatever it holds.
  void release(int64_t seq_id) override { sel_->release(seq_id); }
  void drain() override { sel_->drain(); }
  sparse::PlannerStats stats() const override { return stats_; }

 private:
  std::unique_ptr<sparse::Selector> sel_;  // validation and the hash matrix only
  backend::Backend* b_;
  kv::KvCache* kv_;
  sparse::SparseConfig cfg_;
  model::HParams h_;
  sparse::PlannerStats stats_;
  float* hash_w_ = nullptr;
  int32_t* ws_ = nullptr;
  int64_t cap_ = 0;
  std::vector<int32_t> host_;
  int64_t off_bt_ = 0, off_len_ = 0, off_out_indptr_ = 0, off_out_ = 0, off_last_ = 0;
  int64_t off_dense_last_ = 0, off_rank_ = 0;
  int n_seqs_ = 0, per_ = 1;
  bool any_oracle_ = false, any_mass_ = false, any_sparse_ = false;
  int64_t step_ = -1, next_step_ = 0;
  std::vector<sparse::ListSource> source_sparse_;  // [n_seqs] Selected where eligible
  std::vector<sparse::ListSource> source_dense_;   // [n_seqs] all Dense (dense layers)
};

}  // namespace

Result<std::unique_ptr<sparse::Planner>> make_device_planner(std::unique_ptr<sparse::Selector> sel,
                                                             backend::Backend* b, kv::KvCache* kv,
                                                             const model::HParams& h) {
  const sparse::SparseConfig sc = sel->config();
  if (sc.lag != 0 || sc.select_every != 1)
    return unsupported("on cuda, device selection runs with lag 0 and select_every 1 "
                       "(selector=cpu takes lag and select_every)");
  auto p = std::make_unique<DevicePlanner>(std::move(sel), b, kv, sc, h);
  GSA_RETURN_IF_ERROR(p->init(p->hash_matrix()));
  return std::unique_ptr<sparse::Planner>(std::move(p));
}

}  // namespace gsa::engine

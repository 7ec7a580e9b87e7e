// Pieces shared by the `gsa eval` subcommands (niah, ruler): running one request to completion,
// the attended fraction of a run, and the observer that measures, per layer, how much of full
// attention's softmax mass falls inside the blocks GSA selected (it reads the CPU backend's f32
// KV cache directly; it does not run on the GPU).
#pragma once

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include "engine/engine.h"

namespace gsa::cli {

/// Adds `in` to an engine with no other work and steps it until the request finishes; returns
/// the generated text. An engine failure or an error event of the request is an error.
inline Result<std::string> run_to_completion(engine::Engine& e, engine::RequestInput in) {
  auto id = e.add_request(std::move(in));
  if (!id) return id.status();
  std::string answer;
  std::vector<engine::TokenEvent> events;
  while (e.has_work()) {
    events.clear();
    GSA_RETURN_IF_ERROR(e.step(&events));
    for (const auto& ev : events) {
      answer += ev.text;
      if (ev.finish == engine::FinishReason::Error) return internal_error("{}", ev.error);
    }
  }
  return answer;
}

/// Share of KV blocks attended over the (sequence, layer) lists since the last reset_stats()
/// (1.0 when nothing was selected: dense decoding).
inline double attended_fraction(const engine::EngineStats& s) {
  return s.selector.blocks_total ? double(s.selector.blocks_attended) / double(s.selector.blocks_total)
                                 : 1.0;
}

// Accumulates, per layer, the share of full-attention softmax mass inside the selected blocks
// of sparse sequences (CPU backend, f32 KV).
class MassObserver final : public engine::AttentionObserver {
 public:
  MassObserver(const model::HParams& h, int block_size)
      : h_(h), bs_(block_size), sum_(size_t(h.n_layers), 0.0), n_(size_t(h.n_layers), 0) {}

  void observe(int layer, const void* qv, std::span<const sparse::SeqInput> seqs,
               const sparse::BlockLists& lists, const kv::KvCache& kv) override {
    const float* q = static_cast<const float*>(qv);
    const float* K = static_cast<const float*>(kv.k(layer));
    const int hd = h_.head_dim, group = h_.n_heads / h_.n_kv_heads;
    const int per = lists.per_kv_head ? h_.n_kv_heads : 1;
    const float scale = 1.0f / std::sqrt(float(hd));
    for (size_t s = 0; s < seqs.size(); ++s) {
      const sparse::SeqInput& in = seqs[s];
      const int list0 = int(s) * per;
      if (lists.indptr[list0 + per] - lists.indptr[list0] == in.n_blocks * per) continue;  // dense
      std::vector<char> in_sel(size_t(in.n_blocks) * size_t(per), 0);
      for (int l = 0; l < per; ++l) {
        for (int i = lists.indptr[list0 + l]; i < lists.indptr[list0 + l + 1]; ++i) {
          const int32_t phys = lists.indices[i];
          for (int32_t b = 0; b < in.n_blocks; ++b)
            if (in.block_table[b] == phys) in_sel[size_t(l) * in.n_blocks + size_t(b)] = 1;
        }
      }
      double seq_mass = 0;
      for (int hh = 0; hh < h_.n_heads; ++hh) {
        const int kh = hh / group;
        const float* qh = q + (s * size_t(h_.n_heads) + size_t(hh)) * hd;
        scores_.resize(size_t(in.seq_len));
        float mx = -INFINITY;
        for (int t = 0; t < in.seq_len; ++t) {
          const int32_t phys = in.block_table[t / bs_];
          const float* k = K + ((size_t(phys) * h_.n_kv_heads + kh) * bs_ + size_t(t % bs_)) * hd;
          float d = 0;
          for (int i = 0; i < hd; ++i) d += qh[i] * k[i];
          scores_[size_t(t)] = d * scale;
          mx = std::max(mx, scores_[size_t(t)]);
        }
        double z = 0, inside = 0;
        const int l = lists.per_kv_head ? kh : 0;
        for (int t = 0; t < in.seq_len; ++t) {
          const double p = std::exp(double(scores_[size_t(t)] - mx));
          z += p;
          if (in_sel[size_t(l) * in.n_blocks + size_t(t / bs_)]) inside += p;
        }
        seq_mass += inside / z;
      }
      sum_[size_t(layer)] += seq_mass / h_.n_heads;
      n_[size_t(layer)]++;
    }
  }
  std::vector<double> per_layer() const {
    std::vector<double> out;
    for (size_t l = 0; l < sum_.size(); ++l) out.push_back(n_[l] ? sum_[l] / double(n_[l]) : 1.0);
    return out;
  }
  void reset() {
    std::fill(sum_.begin(), sum_.end(), 0.0);
    std::fill(n_.begin(), n_.end(), 0);
  }

 private:
  model::HParams h_;
  int bs_;
  std::vector<double> sum_;
  std::vector<int64_t> n_;
  std::vector<float> scores_;
};

}  // namespace gsa::cli

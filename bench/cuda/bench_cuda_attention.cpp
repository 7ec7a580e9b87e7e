// Decode attention on the GPU, dense vs GSA sparse, at serving shapes: time per step, KV bytes
// read per second and % of the measured read ceiling; block selection (scoring + top-k) as a
// share of sparse attention; the pinned side-stream copies of the pipelined CPU selector.
// A driver with its own main: prints a table and writes JSON lines (--json FILE); never asserts.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "bench_cuda_common.h"

namespace {

using gsa::DType;
using namespace gsa::backend;
using gsa::bench::Ctx;
using gsa::bench::time_us;

constexpr int kHeadDim = 128;
constexpr int kBlock = 128;
constexpr int kBudgetBlocks = 48;  // 6144 tokens

template <typename T>
T* dev_upload(CudaBackend* be, const std::vector<T>& v) {
  auto r = be->alloc(std::max<size_t>(4, v.size() * sizeof(T)));
  CHECK_OK(r.is_ok() ? gsa::Status::ok() : r.status());
  if (!v.empty()) CHECK_OK(be->upload(r.value(), v.data(), v.size() * sizeof(T)));
  return static_cast<T*>(r.value());
}

void emit(Ctx& c, const char* op, const char* mode, int batch, int ctx, int heads, int kv_heads,
          double us, double bytes, const char* extra = "") {
  const double gbps = bytes / (us * 1e-6) / 1e9;
  std::printf("%-16s %-7s b=%-3d ctx=%-7d h=%2d/%d  %10.1f us  %9.1f MB  %8.1f GB/s  %5.1f%%  %s\n", op,
              mode, batch, ctx, heads, kv_heads, us, bytes / 1e6, gbps, 100.0 * gbps / c.ceiling_gbps, extra);
  if (c.json)
    std::fprintf(c.json,
                 "{\"op\":\"%s\",\"mode\":\"%s\",\"batch\":%d,\"ctx\":%d,\"heads\":%d,\"kv_heads\":%d,"
                 "\"head_dim\":%d,\"block\":%d,\"time_us\":%.2f,\"bytes\":%.0f,\"gbps\":%.1f,"
                 "\"pct_ceiling\":%.1f%s}\n",
                 op, mode, batch, ctx, heads, kv_heads, kHeadDim, kBlock, us, bytes, gbps,
                 100.0 * gbps / c.ceiling_gbps, extra[0] ? (std::string(",") + extra).c_str() : "");
}

void measure_ceiling(Ctx& c) {
  double copy_gbps = 0;
  gsa::bench::measure_read_ceiling(c, &copy_gbps);
  if (c.json)
    std::fprintf(c.json, "{\"op\":\"ceiling\",\"read_gbps\":%.1f,\"copy_gbps\":%.1f}\n", c.ceiling_gbps, copy_gbps);
}

struct Pool {
  void* k = nullptr;
  void* v = nullptr;
  float* reps = nullptr;
  int n_blocks = 0;
  int n_kv = 0;
  std::vector<int32_t> perm;  // random physical order of blocks
};

struct DecodeBatch {
  int32_t *q_indptr, *q_pos, *kv_indptr, *kv_indices, *kv_last_len, *bt_indptr, *seq_len;
  int32_t *sel_indptr, *sel_indices, *sel_last_len;
  void *q, *out;
};

void run_shape(Ctx& c, Pool& pool, int heads, int kv_heads, int ctx_len, int batch, std::mt19937& rng) {
  const int nb = ctx_len / kBlock;
  std::vector<int32_t> q_indptr(batch + 1), q_pos(batch, ctx_len - 1), kv_indptr(batch + 1), kv_last(batch, kBlock);
  std::vector<int32_t> indices(size_t(batch) * nb), seq_len(batch, ctx_len), sel_indptr(batch + 1);
  std::iota(q_indptr.begin(), q_indptr.end(), 0);
  for (int s = 0; s <= batch; ++s) kv_indptr[s] = s * nb, sel_indptr[s] = s * kBudgetBlocks;
  const size_t off = rng() % (pool.perm.size() - indices.size() + 1);
  for (size_t i = 0; i < indices.size(); ++i) indices[i] = pool.perm[off + i];
  DecodeBatch d{};
  d.q_indptr = dev_upload(c.be, q_indptr);
  d.q_pos = dev_upload(c.be, q_pos);
  d.kv_indptr = dev_upload(c.be, kv_indptr);
  d.kv_indices = dev_upload(c.be, indices);
  d.kv_last_len = dev_upload(c.be, kv_last);
  d.seq_len = dev_upload(c.be, seq_len);
  d.sel_indptr = dev_upload(c.be, sel_indptr);
  d.sel_indices = dev_upload(c.be, std::vector<int32_t>(size_t(batch) * kBudgetBlocks, 0));
  d.sel_last_len = dev_upload(c.be, std::vector<int32_t>(batch, kBlock));
  const size_t q_elems = size_t(batch) * heads * kHeadDim;
  d.q = c.be->alloc(q_elems * 2).value();
  d.out = c.be->alloc(q_elems * 2).value();
  CHECK_OK(c.be->fill_random({d.q, int64_t(q_elems), 1.0f, rng(), DType::BF16}));

  AttentionParams p;
  p.q = d.q;
  p.k_cache = pool.k;
  p.v_cache = pool.v;
  p.out = d.out;
  p.q_indptr = d.q_indptr;
  p.q_pos = d.q_pos;
  p.kv_indptr = d.kv_indptr;
  p.kv_indices = d.kv_indices;
  p.kv_last_len = d.kv_last_len;
  p.n_seqs = batch;
  p.n_tokens = batch;
  p.n_blocks = pool.n_blocks;
  p.n_heads = heads;
  p.n_kv_heads = kv_heads;
  p.head_dim = kHeadDim;
  p.block_size = kBlock;
  p.act_type = DType::BF16;
  p.kv_type = DType::BF16;
  const double kv_bytes = double(batch) * kv_heads * double(ctx_len) * kHeadDim * 2 * 2;
  const double dense_us = time_us(c, [&] { CHECK_OK(c.be->attention(p)); });
  char extra[320];
  std::snprintf(extra, sizeof(extra), "\"splits\":%d", c.be->attention_splits(int64_t(batch) * kv_heads));
  emit(c, "decode_attn", "dense", batch, ctx_len, heads, kv_heads, dense_us, kv_bytes, extra);

  // GSA sparse: device selection over mean representations, then attention over the lists.
  BlockSelectParams sp;
  sp.q = d.q;
  sp.reps = pool.reps;
  sp.block_table_indptr = d.kv_indptr;
  sp.block_table = d.kv_indices;
  sp.seq_len = d.seq_len;
  sp.out_indptr = d.sel_indptr;
  sp.out_indices = d.sel_indices;
  sp.out_last_len = d.sel_last_len;
  sp.n_seqs = batch;
  sp.n_blocks = pool.n_blocks;
  sp.n_heads = heads;
  sp.n_kv_heads = kv_heads;
  sp.head_dim = kHeadDim;
  sp.block_size = kBlock;
  sp.act_type = DType::BF16;
  // Both selection paths on the same inputs: fused (the default: one launch; lists of at most
  // kSelectSmemBlocks blocks selected in shared memory, longer ones from L2) and two-kernel.
  const char* select_path = nb <= CudaBackend::kSelectSmemBlocks ? "fused/smem" : "fused/L2";
  c.be->set_select_fused(false);
  const double select_2k_us = time_us(c, [&] { CHECK_OK(c.be->block_select(sp)); });
  c.be->set_select_fused(true);
  const double select_us = time_us(c, [&] { CHECK_OK(c.be->block_select(sp)); });
  AttentionParams ps = p;
  ps.kv_indptr = d.sel_indptr;
  ps.kv_indices = d.sel_indices;
  ps.kv_last_len = d.sel_last_len;
  const double sparse_bytes = double(batch) * kv_heads * double(kBudgetBlocks) * kBlock * kHeadDim * 2 * 2;
  const double sparse_us = time_us(c, [&] { CHECK_OK(c.be->attention(ps)); });
  const double rep_bytes = double(batch) * kv_heads * nb * kHeadDim * 4;
  std::snprintf(extra, sizeof(extra),
                "\"select_us\":%.2f,\"select_share\":%.3f,\"select_path\":\"%s\",\"select_two_kernel_us\":%.2f,"
                "\"rep_bytes\":%.0f,\"rep_share_of_kv\":%.4f",
                select_us, select_us / sparse_us, select_path, select_2k_us, rep_bytes, rep_bytes / kv_bytes);
  emit(c, "decode_attn", "sparse", batch, ctx_len, heads, kv_heads, sparse_us, sparse_bytes, extra);
  std::printf("%-16s %-7s b=%-3d ctx=%-7d h=%2d/%d  %10.1f us  (%.0f%% of sparse attention; %s; two-kernel %.1f us; reps %.2f%% of KV)\n",
              "block_select", "mean", batch, ctx_len, heads, kv_heads, select_us, 100.0 * select_us / sparse_us,
              select_path, select_2k_us, 100.0 * rep_bytes / kv_bytes);

  // Pipelined CPU selector path: the query goes to pinned host memory on the side stream and
  // the selection comes back with an async upload; cost on the compute stream per step.
  if (ctx_len == 131072 || batch == 32) {
    void* host_q = c.be->alloc_pinned(q_elems * 2).value();
    std::vector<int32_t> host_sel_v(size_t(batch) * kBudgetBlocks);
    void* host_sel = c.be->alloc_pinned(host_sel_v.size() * 4).value();
    CHECK_OK(c.be->download(host_sel, d.sel_indices, host_sel_v.size() * 4));
    CudaEvent ev = c.be->create_event().value();
    const double with_copy_us = time_us(c, [&] {
      CHECK_OK(c.be->copy_to_host_async(host_q, d.q, q_elems * 2, ev));
      CHECK_OK(c.be->upload_async(d.sel_indices, host_sel, host_sel_v.size() * 4));
      CHECK_OK(c.be->attention(ps));
    });
    // Latency of the query copy alone (enqueue to landed in host memory), GPU otherwise idle.
    std::vector<double> lat;
    for (int i = 0; i < 20; ++i) {
      CHECK_OK(c.be->synchronize());
      const auto t0 = std::chrono::steady_clock::now();
      CHECK_OK(c.be->copy_to_host_async(host_q, d.q, q_elems * 2, ev));
      CHECK_OK(c.be->event_synchronize(ev));
      lat.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(lat.begin(), lat.end());
    std::snprintf(extra, sizeof(extra), "\"attn_us\":%.2f,\"with_copies_us\":%.2f,\"q_copy_latency_us\":%.2f,\"q_bytes\":%zu",
                  sparse_us, with_copy_us, lat[lat.size() / 2], q_elems * 2);
    std::printf("%-16s %-7s b=%-3d ctx=%-7d h=%2d/%d  attn %.1f us, attn + q->host + sel->dev %.1f us, q copy latency %.1f us\n",
                "cpu_selector_io", "sparse", batch, ctx_len, heads, kv_heads, sparse_us, with_copy_us, lat[lat.size() / 2]);
    if (c.json)
      std::fprintf(c.json, "{\"op\":\"cpu_selector_io\",\"batch\":%d,\"ctx\":%d,\"heads\":%d,\"kv_heads\":%d,%s}\n",
                   batch, ctx_len, heads, kv_heads, extra);
    c.be->destroy_event(ev);
    c.be->free_pinned(host_q);
    c.be->free_pinned(host_sel);
  }

  for (void* ptr : {(void*)d.q_indptr, (void*)d.q_pos, (void*)d.kv_indptr, (void*)d.kv_indices, (void*)d.kv_last_len,
                    (void*)d.seq_len, (void*)d.sel_indptr, (void*)d.sel_indices, (void*)d.sel_last_len, d.q, d.out})
    c.be->free(ptr);
}

// Block selection over 2-bit key codes (RepKind::Quant, the default representation) at one
// decode step's shape, each configuration on the same codes and queries: per-layer lists with
// group-mean queries (the default), per-kv-head lists with group-max queries on the tensor
// cores and with one dp4a pass per query head, per-layer group-max, and rerank of the codes'
// candidates by the keys (two-kernel path). Lists of `budget` blocks (per kv head).
void run_quant_select(Ctx& c, Pool& pool, int heads, int kv_heads, int ctx_len, int batch, int budget,
                      std::mt19937& rng) {
  const int nb = ctx_len / kBlock;
  const int64_t rep_floats = 2 * kHeadDim + kBlock * (kHeadDim / 16);  // box, then codes
  const int64_t n_rep_blocks = int64_t(batch) * nb;
  // Each sequence owns its blocks (ids 0..n_rep_blocks, shuffled); the codes are random bits,
  // the boxes random floats (min > max in some dims: it only changes the values).
  std::vector<int32_t> bt_indptr(batch + 1), seq_len(batch, ctx_len);
  std::vector<int32_t> table(static_cast<size_t>(n_rep_blocks));
  for (int s = 0; s <= batch; ++s) bt_indptr[s] = s * nb;
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  auto* reps = static_cast<float*>(c.be->alloc(size_t(n_rep_blocks) * kv_heads * rep_floats * 4).value());
  CHECK_OK(c.be->fill_random({reps, n_rep_blocks * kv_heads * rep_floats, 0.5f, rng(), DType::F32}));
  const size_t q_elems = size_t(batch) * heads * kHeadDim;
  void* q = c.be->alloc(q_elems * 2).value();
  CHECK_OK(c.be->fill_random({q, int64_t(q_elems), 1.0f, rng(), DType::BF16}));
  const int max_lists = batch * kv_heads;
  auto* d_bti = dev_upload(c.be, bt_indptr);
  auto* d_bt = dev_upload(c.be, table);
  auto* d_len = dev_upload(c.be, seq_len);
  auto* d_idx = dev_upload(c.be, std::vector<int32_t>(size_t(max_lists) * budget, 0));
  auto* d_last = dev_upload(c.be, std::vector<int32_t>(size_t(max_lists), 0));
  std::vector<int32_t> indptr_layer(batch + 1), indptr_head(max_lists + 1);
  for (int i = 0; i <= batch; ++i) indptr_layer[i] = i * budget;
  for (int i = 0; i <= max_lists; ++i) indptr_head[i] = i * budget;
  auto* d_ip_layer = dev_upload(c.be, indptr_layer);
  auto* d_ip_head = dev_upload(c.be, indptr_head);
  auto* d_rank = dev_upload(c.be, std::vector<uint8_t>(size_t(batch), uint8_t(Rank::Rerank)));

  BlockSelectParams sp;
  sp.q = q;
  sp.reps = reps;
  sp.block_table_indptr = d_bti;
  sp.block_table = d_bt;
  sp.seq_len = d_len;
  sp.out_indices = d_idx;
  sp.out_last_len = d_last;
  sp.n_seqs = batch;
  sp.n_blocks = n_rep_blocks;
  sp.n_heads = heads;
  sp.n_kv_heads = kv_heads;
  sp.head_dim = kHeadDim;
  sp.block_size = kBlock;
  sp.kind = RepKind::Quant;
  sp.act_type = DType::BF16;
  struct Cfg {
    const char* name;
    bool per_kv_head, group_max, mma, rerank;
    int ctas_per_sm = 0;  // fused path: 0 the default (one wave), else this many per SM
  };
  const Cfg cfgs[] = {{"per_layer group_mean", false, false, true, false},
                      {"per_layer group_mean 2/SM", false, false, true, false, 2},
                      {"per_layer group_max", false, true, true, false},
                      {"per_layer group_max dp4a", false, true, false, false},
                      {"per_kv_head group_mean", true, false, true, false},
                      {"per_kv_head group_mean 2/SM", true, false, true, false, 2},
                      {"per_kv_head group_mean 3/SM", true, false, true, false, 3},
                      {"per_kv_head group_max", true, true, true, false},
                      {"per_kv_head group_max 2/SM", true, true, true, false, 2},
                      {"per_kv_head group_max dp4a", true, true, false, false},
                      {"per_kv_head group_max rerank", true, true, true, true}};
  for (const Cfg& g : cfgs) {
    BlockSelectParams p = sp;
    p.per_kv_head = g.per_kv_head;
    p.out_indptr = g.per_kv_head ? d_ip_head : d_ip_layer;
    p.query_mode = g.group_max ? QueryMode::GroupMax : QueryMode::GroupMean;
    if (g.rerank) {
      // The keys: the pool's K, viewed with kv_heads heads (ids stay below its blocks).
      p.rank = d_rank;
      p.any_oracle = true;
      p.k_cache = pool.k;
      p.kv_type = DType::BF16;
    }
    c.be->set_select_quant_mma(g.mma);
    c.be->set_select_ctas_per_sm(g.ctas_per_sm);
    const double us = time_us(c, [&] { CHECK_OK(c.be->block_select(p)); });
    c.be->set_select_quant_mma(true);
    c.be->set_select_ctas_per_sm(0);
    const double bytes = double(n_rep_blocks) * kv_heads * rep_floats * 4;
    std::printf("%-16s %-32s b=%-3d ctx=%-7d h=%2d/%d budget=%-3d %9.1f us  reps %7.1f MB  %7.1f GB/s\n",
                "quant_select", g.name, batch, ctx_len, heads, kv_heads, budget, us, bytes / 1e6,
                bytes / (us * 1e-6) / 1e9);
    if (c.json)
      std::fprintf(c.json,
                   "{\"op\":\"quant_select\",\"config\":\"%s\",\"batch\":%d,\"ctx\":%d,\"heads\":%d,"
                   "\"kv_heads\":%d,\"budget_blocks\":%d,\"time_us\":%.2f,\"rep_bytes\":%.0f}\n",
                   g.name, batch, ctx_len, heads, kv_heads, budget, us, bytes);
  }
  for (void* ptr : {(void*)reps, q, (void*)d_bti, (void*)d_bt, (void*)d_len, (void*)d_idx, (void*)d_last,
                    (void*)d_ip_layer, (void*)d_ip_head, (void*)d_rank})
    c.be->free(ptr);
}

}  // namespace

int main(int argc, char** argv) {
  Ctx c;
  bool quick = false, ceiling_only = false, select_only = false;
  int ctas_per_sm = 0;  // 0: the backend's default
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) c.json = std::fopen(argv[++i], "w");
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) c.reps = std::max(3, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--ceiling-only")) ceiling_only = true;
    else if (!std::strcmp(argv[i], "--select-only")) select_only = true;
    else if (!std::strcmp(argv[i], "--ctas-per-sm") && i + 1 < argc) ctas_per_sm = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--json FILE] [--reps N] [--quick] [--ceiling-only] [--select-only] [--ctas-per-sm N]\n", argv[0]);
      return 2;
    }
  }
  auto be = gsa::bench::open_backend(c);
  if (ctas_per_sm > 0) be->set_attention_ctas_per_sm(ctas_per_sm);
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  int driver = 0;
  CHECK_CUDA(cudaDriverGetVersion(&driver));
  std::printf("device: %s, %d SMs, L2 %d MB, driver API %d, split target %d CTAs/SM (0: default)\n",
              prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20, driver, ctas_per_sm);
  c.flush = be->alloc(c.flush_bytes).value();
  measure_ceiling(c);
  if (ceiling_only) {
    if (c.json) std::fclose(c.json);
    return 0;
  }

  std::mt19937 rng(1234);
  const std::vector<std::pair<int, int>> heads = {{28, 4}, {64, 8}};
  const std::vector<int> ctxs = quick ? std::vector<int>{32768} : std::vector<int>{6144, 32768, 131072};
  const std::vector<int> batches = quick ? std::vector<int>{1, 8} : std::vector<int>{1, 8, 32};
  const int max_batch = batches.back(), max_ctx = ctxs.back();
  Pool pool;
  pool.n_blocks = max_batch * (max_ctx / kBlock);
  pool.n_kv = 8;
  const size_t cache_elems = size_t(pool.n_blocks) * pool.n_kv * kBlock * kHeadDim;
  pool.k = be->alloc(cache_elems * 2).value();
  pool.v = be->alloc(cache_elems * 2).value();
  CHECK_OK(be->fill_random({pool.k, int64_t(cache_elems), 1.0f, 11, DType::BF16}));
  CHECK_OK(be->fill_random({pool.v, int64_t(cache_elems), 1.0f, 12, DType::BF16}));
  const size_t rep_elems = size_t(pool.n_blocks) * pool.n_kv * kHeadDim;
  pool.reps = static_cast<float*>(be->alloc(rep_elems * 4).value());
  CHECK_OK(be->fill_random({pool.reps, int64_t(rep_elems), 0.5f, 13, DType::F32}));
  pool.perm.resize(pool.n_blocks);
  std::iota(pool.perm.begin(), pool.perm.end(), 0);
  std::shuffle(pool.perm.begin(), pool.perm.end(), rng);
  std::printf("KV pool: %d blocks x %d kv heads x %d x %d bf16 = %.1f GB (K + V)\n", pool.n_blocks, pool.n_kv, kBlock,
              kHeadDim, 2.0 * cache_elems * 2 / 1e9);

  for (auto [h, kvh] : heads)
    for (int ctx : ctxs)
      for (int b : batches) {
        // The pool holds the K/V of 8 kv heads; fewer heads use the same blocks' first slices.
        if (select_only) continue;
        Pool view = pool;
        run_shape(c, view, h, kvh, ctx, b, rng);
      }
  // Selection over 2-bit key codes at the end-to-end benchmark's shapes (Qwen2.5-7B heads),
  // budgets of 6144 and 2048 tokens.
  for (auto [ctx, b] : std::vector<std::pair<int, int>>{{32768, 20}, {122880, 5}})
    for (int budget : {48, 16}) run_quant_select(c, pool, 28, 4, ctx, b, budget, rng);
  CHECK_OK(be->synchronize());
  if (c.json) std::fclose(c.json);
  return 0;
}

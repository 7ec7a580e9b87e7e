// CUDA block selection against the CPU reference, on both CUDA paths (fused and two-kernel,
// same inputs): Mean / MinMax / Hash representations, group mean and group max queries,
// per-layer and per-kv-head lists, partial and full last blocks, budgets from "forced only" to
// "every block", per-sequence budgets, tied scores, list lengths around the fused path's
// shared-memory limit, and long sequences that exercise the radix select. Also: CUDA
// rep_update followed by CUDA block_select against the same chain on the CPU.
#include <algorithm>
#include <numeric>

#include "cuda_test_util.h"

namespace gsa::backend::cuda_test {
namespace {

struct SelectCase {
  std::vector<int> seq_len;  // tokens per sequence
  int n_heads = 8, n_kv_heads = 2, head_dim = 64, block_size = 16;
  int sink = 1, local = 2;
  int budget = 8;            // blocks per list (clamped to [forced, n_blocks])
  std::vector<int> budgets;  // per sequence, replaces budget when not empty
  int dup_percent = 0;       // blocks whose reps copy one of 3 blocks' (tied scores)
  RepKind kind = RepKind::Mean;
  QueryMode mode = QueryMode::GroupMean;
  bool per_kv_head = false;
  DType act = DType::BF16;
  int sub_block = 0;         // Mean/MinMax per run of sub_block tokens
  bool mass = false;         // rank by estimated attention mass
  bool dp4a_too = false;     // Quant GroupMax: also the dp4a scoring, which must give the same lists
};

class CudaSelectTest : public CudaTest {
 protected:
  static int forced_count(int n, int sink, int local, bool partial) {
    const int s = std::min(sink, n);
    const int lo = std::max(n - local, s);
    int count = s + (n - lo);
    if (partial && local == 0 && n - 1 >= s) count += 1;
    return count;
  }

  // Runs both backends on random reps; returns the number of lists that differ.
  int run_case(const SelectCase& c) {
    const int n_seqs = int(c.seq_len.size());
    const int bs = c.block_size, hd = c.head_dim, nkv = c.n_kv_heads;
    std::vector<int32_t> bt_indptr = {0}, table;
    int total = 0;
    for (int s = 0; s < n_seqs; ++s) {
      total += (c.seq_len[s] + bs - 1) / bs;
      bt_indptr.push_back(total);
    }
    const int pool_blocks = total + 5;
    std::vector<int32_t> perm(pool_blocks);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng_);
    table.assign(perm.begin(), perm.begin() + total);
    const int lists_per_seq = c.per_kv_head ? nkv : 1;
    std::vector<int32_t> out_indptr = {0};
    for (int s = 0; s < n_seqs; ++s) {
      const int n = bt_indptr[s + 1] - bt_indptr[s];
      const int f = forced_count(n, c.sink, c.local, c.seq_len[s] % bs != 0);
      const int budget = c.budgets.empty() ? c.budget : c.budgets[s];
      const int size = std::min(n, std::max(f, budget));
      for (int h = 0; h < lists_per_seq; ++h) out_indptr.push_back(out_indptr.back() + size);
    }
    const int n_lists = int(out_indptr.size()) - 1;
    const int64_t rb = rep_bytes(c.kind, hd, bs, c.sub_block);
    const size_t rep_total = size_t(pool_blocks) * nkv * rb;
    std::vector<uint8_t> reps(rep_total);
    if (c.kind == RepKind::Hash) {
      for (auto& x : reps) x = uint8_t(rng_());
    } else if (c.kind == RepKind::Quant) {
      // Per (block, kv head): a box with min <= max, then random codes.
      for (auto& x : reps) x = uint8_t(rng_());
      for (size_t off = 0; off < rep_total; off += size_t(rb)) {
        auto f = random_bf16_exact(rng_, size_t(2 * hd), -1, 1);
        for (int d = 0; d < hd; ++d)
          if (f[size_t(d)] > f[size_t(hd + d)]) std::swap(f[size_t(d)], f[size_t(hd + d)]);
        std::memcpy(reps.data() + off, f.data(), f.size() * 4);
      }
    } else {
      auto f = random_bf16_exact(rng_, rep_total / 4, -1, 1);
      if (c.kind == RepKind::MinMax)  // min <= max per dimension
        for (size_t blk = 0; blk < f.size(); blk += 2 * hd)
          for (int d = 0; d < hd; ++d)
            if (f[blk + d] > f[blk + hd + d]) std::swap(f[blk + d], f[blk + hd + d]);
      std::memcpy(reps.data(), f.data(), rep_total);
    }
    const size_t block_rep = size_t(nkv) * rb;  // every kv head's rep of one block
    if (c.dup_percent > 0)
      for (int blk = 3; blk < pool_blocks; ++blk)
        if (int(rng_() % 100) < c.dup_percent)
          std::memcpy(reps.data() + blk * block_rep, reps.data() + (blk % 3) * block_rep, block_rep);
    auto q = random_bf16_exact(rng_, size_t(n_seqs) * c.n_heads * hd, -2, 2);
    auto w = random_bf16_exact(rng_, size_t(hd) * hd);
    const int out_total = out_indptr.back();

    BlockSelectParams p;
    p.n_seqs = n_seqs;
    p.n_blocks = pool_blocks;
    p.n_heads = c.n_heads;
    p.n_kv_heads = nkv;
    p.head_dim = hd;
    p.block_size = bs;
    p.sink_blocks = c.sink;
    p.local_blocks = c.local;
    p.kind = c.kind;
    p.query_mode = c.mode;
    p.per_kv_head = c.per_kv_head;
    p.sub_block = c.sub_block;
    const std::vector<uint8_t> ranks(size_t(n_seqs), uint8_t(c.mass ? Rank::Mass : Rank::Score));
    p.rank = ranks.data();
    p.any_mass = c.mass;
    std::vector<int32_t> ref_idx(out_total, -7), ref_last(n_lists, -7);
    p.q = q.data();
    p.reps = reps.data();
    p.block_table_indptr = bt_indptr.data();
    p.block_table = table.data();
    p.seq_len = c.seq_len.data();
    p.out_indptr = out_indptr.data();
    p.out_indices = ref_idx.data();
    p.out_last_len = ref_last.data();
    p.hash_w = w.data();
    const Status cs = cpu()->block_select(p);
    EXPECT_TRUE(cs.is_ok()) << cs.to_string();

    auto dq = upload_act(gpu(), q, c.act);
    auto dreps = upload(gpu(), reps);
    auto dbti = upload(gpu(), bt_indptr), dbt = upload(gpu(), table);
    auto dlen = upload(gpu(), c.seq_len);
    auto doi = upload(gpu(), out_indptr);
    auto dw = upload(gpu(), w);
    auto dranks = upload(gpu(), ranks);
    Buf didx(gpu(), std::max(1, out_total) * 4), dlast(gpu(), n_lists * 4);
    p.q = dq->get();
    p.reps = dreps->get();
    p.block_table_indptr = dbti->as<int32_t>();
    p.block_table = dbt->as<int32_t>();
    p.seq_len = dlen->as<int32_t>();
    p.out_indptr = doi->as<int32_t>();
    p.out_indices = didx.as<int32_t>();
    p.out_last_len = dlast.as<int32_t>();
    p.hash_w = dw->as<float>();
    p.rank = static_cast<const uint8_t*>(dranks->get());
    p.act_type = c.act;
    // Both paths on the same inputs; the fused one runs twice (its tickets must come back to 0).
    int bad = 0;
    std::vector<int32_t> first_idx, first_last;
    for (int run = 0; run < 3; ++run) {
      const bool fused = run < 2;
#ifdef GSA_HAVE_CUDA
      cuda_->set_select_fused(fused);
#endif
      poison(gpu(), didx);
      poison(gpu(), dlast);
      const Status gs = gpu()->block_select(p);
      EXPECT_TRUE(gs.is_ok()) << gs.to_string();
      auto got_idx = download<int32_t>(gpu(), didx, out_total);
      auto got_last = download<int32_t>(gpu(), dlast, n_lists);
      if (run == 0) first_idx = got_idx, first_last = got_last;
      int bad_run = 0;
      for (int i = 0; i < n_lists; ++i) {
        const bool same = std::equal(ref_idx.begin() + out_indptr[i], ref_idx.begin() + out_indptr[i + 1],
                                     got_idx.begin() + out_indptr[i]) &&
                          ref_last[i] == got_last[i];
        bad_run += !same;
      }
      if (bad_run != 0) std::printf("%s path, run %d: %d of %d lists differ\n", fused ? "fused" : "two-kernel", run, bad_run, n_lists);
      bad += bad_run;
    }
#ifdef GSA_HAVE_CUDA
    cuda_->set_select_fused(true);
    if (c.dp4a_too) {
      // The same scores bit for bit, so the same lists, ties and all.
      cuda_->set_select_quant_mma(false);
      poison(gpu(), didx);
      poison(gpu(), dlast);
      const Status ds = gpu()->block_select(p);
      cuda_->set_select_quant_mma(true);
      EXPECT_TRUE(ds.is_ok()) << ds.to_string();
      EXPECT_EQ(download<int32_t>(gpu(), didx, out_total), first_idx) << "tensor-core vs dp4a lists";
      EXPECT_EQ(download<int32_t>(gpu(), dlast, n_lists), first_last);
    }
#endif
    return bad;
  }

  // Ragged sequences of 3..n_max blocks (the first exactly n_max, full), random partial last
  // blocks and per-sequence budgets.
  SelectCase ragged_case(int batch, int n_max, int bs) {
    SelectCase c;
    c.block_size = bs;
    for (int s = 0; s < batch; ++s) {
      const int n = s == 0 ? n_max : 3 + int(rng_() % uint32_t(n_max - 2));
      const int partial = s == 0 ? 0 : int(rng_() % uint32_t(bs));
      c.seq_len.push_back(partial == 0 ? n * bs : (n - 1) * bs + partial);
      c.budgets.push_back(int(rng_() % uint32_t(n + 8)));
    }
    return c;
  }
};

TEST_F(CudaSelectTest, MeanPerLayerAndPerKvHead) {
  for (bool per_head : {false, true})
    for (int budget : {3, 8, 1000}) {
      SelectCase c;
      c.seq_len = {16 * 20, 16 * 20 + 5, 7, 100, 16 * 3};
      c.per_kv_head = per_head;
      c.budget = budget;
      EXPECT_EQ(run_case(c), 0) << "per_kv_head " << per_head << " budget " << budget;
    }
}

TEST_F(CudaSelectTest, SubBlockRepresentations) {
  // Mean and MinMax per run of 4 or 8 tokens of 16-token blocks: the best run scores the block.
  for (RepKind kind : {RepKind::Mean, RepKind::MinMax})
    for (int sub : {4, 8})
      for (bool per_kv_head : {false, true})
        for (QueryMode mode : {QueryMode::GroupMean, QueryMode::GroupMax}) {
          SelectCase c;
          c.seq_len = {16 * 40 + 3, 16 * 64, 16 * 9 + 1};
          c.kind = kind;
          c.sub_block = sub;
          c.per_kv_head = per_kv_head;
          c.mode = mode;
          c.budget = 11;
          EXPECT_EQ(run_case(c), 0) << int(kind) << " sub " << sub << " per_kv_head " << per_kv_head;
        }
}

TEST_F(CudaSelectTest, AllKindsAndQueryModes) {
  for (RepKind kind : {RepKind::Mean, RepKind::MinMax, RepKind::Hash})
    for (QueryMode mode : {QueryMode::GroupMean, QueryMode::GroupMax})
      for (int hd : {64, 128}) {
        SelectCase c;
        c.kind = kind;
        c.mode = mode;
        c.head_dim = hd;
        c.n_heads = 14;
        c.n_kv_heads = 2;
        c.block_size = 32;
        c.seq_len = {32 * 40 + 3, 32 * 17};
        c.budget = 10;
        // Hash scores are small integers: ties are common and must break towards lower indices.
        EXPECT_EQ(run_case(c), 0) << "kind " << int(kind) << " mode " << int(mode) << " hd " << hd;
      }
}

TEST_F(CudaSelectTest, SinkLocalVariantsAndF32Queries) {
  for (int sink : {0, 1, 4})
    for (int local : {0, 1, 3}) {
      SelectCase c;
      c.sink = sink;
      c.local = local;
      c.act = DType::F32;
      c.seq_len = {16 * 30 + 1, 16 * 30, 16 * 2 + 9};
      c.budget = 9;
      EXPECT_EQ(run_case(c), 0) << "sink " << sink << " local " << local;
    }
}

TEST_F(CudaSelectTest, LongSequencesRadixSelect) {
  SelectCase c;
  c.block_size = 128;
  c.head_dim = 128;
  c.n_heads = 28;
  c.n_kv_heads = 4;
  c.seq_len = {128 * 1024, 128 * 700 + 77, 128 * 3000 + 1};
  c.budget = 48;
  EXPECT_EQ(run_case(c), 0);
  c.per_kv_head = true;
  c.budget = 32;
  EXPECT_EQ(run_case(c), 0);
}

TEST_F(CudaSelectTest, FusedPathLengthsAroundTheSharedMemoryLimit) {
  // batch 1 and 5: many CTAs per list (ticket path); n_max 2048 / 2049: the last CTA selects
  // in shared memory / from L2.
  const RepKind kinds[3] = {RepKind::Mean, RepKind::MinMax, RepKind::Hash};
  int i = 0;
  for (int batch : {1, 5, 33})
    for (int n_max : {3, 4, 17, 300, 2048, 2049})
      for (bool per_head : {false, true}) {
        SelectCase c = ragged_case(batch, n_max, 16);
        c.kind = kinds[i % 3];
        c.mode = (i / 3) % 2 ? QueryMode::GroupMax : QueryMode::GroupMean;
        c.per_kv_head = per_head;
        c.act = i % 4 == 3 ? DType::F32 : DType::BF16;
        ++i;
        EXPECT_EQ(run_case(c), 0) << "batch " << batch << " n_max " << n_max << " per_kv_head "
                                  << per_head << " kind " << int(c.kind) << " mode " << int(c.mode);
      }
}

TEST_F(CudaSelectTest, FusedPathOneCtaPerList) {
  // 33 sequences x 8 kv heads = 264 lists >= 2 per SM: one CTA per list, scores in shared
  // memory up to the limit, one CTA's own ticket above it.
  for (int n_max : {5, 700, 2048, 2049})
    for (RepKind kind : {RepKind::Mean, RepKind::Hash}) {
      SelectCase c = ragged_case(33, n_max, 16);
      c.n_heads = 16;
      c.n_kv_heads = 8;
      c.head_dim = 32;
      c.kind = kind;
      c.per_kv_head = true;
      EXPECT_EQ(run_case(c), 0) << "n_max " << n_max << " kind " << int(kind);
    }
}

TEST_F(CudaSelectTest, TiedScores) {
  // Most blocks repeat one of three blocks' reps: the top-k boundary falls inside runs of
  // equal scores, which must break towards the lower logical index.
  for (RepKind kind : {RepKind::Mean, RepKind::MinMax, RepKind::Hash})
    for (bool per_head : {false, true})
      for (int batch : {1, 5}) {
        SelectCase c = ragged_case(batch, 400, 16);
        c.kind = kind;
        c.per_kv_head = per_head;
        c.mode = per_head ? QueryMode::GroupMax : QueryMode::GroupMean;
        c.dup_percent = 90;
        EXPECT_EQ(run_case(c), 0) << "kind " << int(kind) << " per_kv_head " << per_head << " batch " << batch;
      }
}

TEST_F(CudaSelectTest, ForcedBlocksCoverTheList) {
  for (bool per_head : {false, true}) {
    SelectCase c;
    c.sink = 3;
    c.local = 3;
    c.per_kv_head = per_head;
    c.seq_len = {16 * 5, 16 * 6 + 1, 7, 16 * 4, 16};
    c.budgets = {2, 9, 1, 0, 5};
    EXPECT_EQ(run_case(c), 0) << "per_kv_head " << per_head;
  }
}

TEST_F(CudaSelectTest, RepUpdateThenSelectChain) {
  // Keys -> CUDA rep_update -> CUDA block_select equals the same chain on the CPU.
  const int nkv = 2, hd = 64, bs = 16, n = 40, n_heads = 8;
  const size_t cache_elems = size_t(n) * nkv * bs * hd;
  auto kc = random_bf16_exact(rng_, cache_elems, -2, 2);
  std::vector<int32_t> blocks(n - 1);
  std::iota(blocks.begin(), blocks.end(), 0);
  const size_t rep_total = size_t(n) * nkv * hd * 4;
  std::vector<uint8_t> reps(rep_total, 0);
  RepUpdateParams ru;
  ru.k_cache = kc.data();
  ru.reps = reps.data();
  ru.blocks = blocks.data();
  ru.n_update = int(blocks.size());
  ru.n_kv_heads = nkv;
  ru.head_dim = hd;
  ru.block_size = bs;
  ASSERT_TRUE(cpu()->rep_update(ru).is_ok());
  auto dkc = upload(gpu(), to_bf16(kc));
  auto dblocks = upload(gpu(), blocks);
  Buf dreps(gpu(), rep_total);
  ru.k_cache = dkc->get();
  ru.reps = dreps.get();
  ru.blocks = dblocks->as<int32_t>();
  ru.kv_type = DType::BF16;
  ASSERT_TRUE(gpu()->rep_update(ru).is_ok());

  const int len = n * bs - 3;
  std::vector<int32_t> bt_indptr = {0, n}, table(n), out_indptr = {0, 12}, seq_len = {len};
  std::iota(table.begin(), table.end(), 0);
  auto q = random_bf16_exact(rng_, size_t(n_heads) * hd, -2, 2);
  std::vector<int32_t> ref_idx(12), ref_last(1);
  BlockSelectParams p;
  p.n_seqs = 1;
  p.n_heads = n_heads;
  p.n_kv_heads = nkv;
  p.head_dim = hd;
  p.block_size = bs;
  p.q = q.data();
  p.reps = reps.data();
  p.block_table_indptr = bt_indptr.data();
  p.block_table = table.data();
  p.seq_len = seq_len.data();
  p.out_indptr = out_indptr.data();
  p.out_indices = ref_idx.data();
  p.out_last_len = ref_last.data();
  ASSERT_TRUE(cpu()->block_select(p).is_ok());
  auto dq = upload(gpu(), to_bf16(q));
  auto dbti = upload(gpu(), bt_indptr), dbt = upload(gpu(), table), dlen = upload(gpu(), seq_len);
  auto doi = upload(gpu(), out_indptr);
  Buf didx(gpu(), 12 * 4), dlast(gpu(), 4);
  poison(gpu(), didx);
  p.q = dq->get();
  p.reps = dreps.get();
  p.block_table_indptr = dbti->as<int32_t>();
  p.block_table = dbt->as<int32_t>();
  p.seq_len = dlen->as<int32_t>();
  p.out_indptr = doi->as<int32_t>();
  p.out_indices = didx.as<int32_t>();
  p.out_last_len = dlast.as<int32_t>();
  p.act_type = DType::BF16;
  ASSERT_TRUE(gpu()->block_select(p).is_ok());
  EXPECT_EQ(download<int32_t>(gpu(), didx, 12), ref_idx);
  EXPECT_EQ(download<int32_t>(gpu(), dlast, 1), ref_last);
}

// Quant: scores token by token from the 2-bit codes (the best token, or by mass), every query
// mode and scope, head_dim 64 and 128, ragged batches of 16- and 128-token blocks. Sums run in
// another order on the device, so lists may differ at near-ties only.
TEST_F(CudaSelectTest, QuantAgreesWithTheCpuUpToNearTies) {
  int bad = 0, cases = 0;
  for (bool mass : {false, true})
    for (int hd : {64, 128})
      for (int bs : {16, 128})
        for (bool per_kv_head : {false, true})
          for (QueryMode mode : {QueryMode::GroupMean, QueryMode::GroupMax}) {
            SelectCase c = ragged_case(5, bs == 16 ? 70 : 40, bs);
            c.kind = RepKind::Quant;
            c.head_dim = hd;
            c.per_kv_head = per_kv_head;
            c.mode = mode;
            c.mass = mass;
            bad += run_case(c);
            ++cases;
          }
  EXPECT_LE(bad, 4) << "lists differing over " << cases << " cases x 3 runs";
}

// Quant with group-max queries on the tensor cores: the same lists as the dp4a pass per query
// head (bit-identical scores) and as the CPU up to near-ties, for groups of 4, 6, 7 and 12 query
// heads (one and two MMA column tiles), head_dim 64, 96 and 128 (16- and 8-byte code loads),
// 16-, 32- and 128-token blocks, with tied blocks.
TEST_F(CudaSelectTest, QuantGroupMaxOnTensorCoresMatchesDp4a) {
  int bad = 0, cases = 0;
  for (int n_heads : {8, 12, 14, 24})
    for (int hd : {64, 96, 128})
      for (int bs : {16, 32, 128})
        for (bool per_kv_head : {false, true}) {
          SelectCase c = ragged_case(4, bs == 128 ? 30 : 60, bs);
          c.kind = RepKind::Quant;
          c.n_heads = n_heads;
          c.n_kv_heads = 2;  // groups of 4, 6, 7 and 12
          c.head_dim = hd;
          c.per_kv_head = per_kv_head;
          c.mode = QueryMode::GroupMax;
          c.dup_percent = per_kv_head ? 10 : 0;
          c.dp4a_too = true;
          bad += run_case(c);
          ++cases;
        }
  EXPECT_LE(bad, 6) << "lists differing from the CPU over " << cases << " cases x 3 runs";
}

// Ranking by estimated attention mass (f32 and __expf on the device, double on the CPU): every
// representation with masses, query mode, scope, sub-blocks and ragged batches. Lists may differ
// only at near-ties of two masses, so a handful of the few hundred lists at most.
TEST_F(CudaSelectTest, MassScoresAgreeWithTheCpuUpToNearTies) {
  int bad = 0, cases = 0;
  for (RepKind kind : {RepKind::Mean, RepKind::MinMax})
    for (int sub : {0, 4})
      for (bool per_kv_head : {false, true})
        for (QueryMode mode : {QueryMode::GroupMean, QueryMode::GroupMax}) {
          SelectCase c = ragged_case(6, 70, 16);
          c.kind = kind;
          c.sub_block = sub;
          c.per_kv_head = per_kv_head;
          c.mode = mode;
          c.mass = true;
          bad += run_case(c);
          ++cases;
        }
  EXPECT_LE(bad, 3) << "lists differing over " << cases << " cases x 3 runs";
}

}  // namespace
}  // namespace gsa::backend::cuda_test

namespace gsa::backend::cuda_test {
namespace {

// Oracle selection: the CUDA kernels (bf16 keys, f32 sums) against the CPU reference (the same
// keys in f32, double sums). Lists may differ only where two blocks' masses are within
// rounding of each other; sequence 1 is not an oracle sequence and must match exactly.
// Rerank the same way: the representations are zero, so its candidates are the lowest-index
// blocks on both backends (ties), the planted block among them.
TEST_F(CudaSelectTest, OracleAndRerankAgreeWithTheCpuUpToNearTies) {
  for (uint8_t rank : {uint8_t(Rank::Oracle), uint8_t(Rank::Rerank)})
  for (bool per_kv_head : {false, true}) {
    const int n_heads = 8, nkv = 2, hd = 64, bs = 16;
    const std::vector<int32_t> lens = {16 * 40 + 7, 16 * 25, 16 * 33 + 1};
    std::vector<int32_t> bt_indptr = {0}, table;
    for (int32_t len : lens) bt_indptr.push_back(bt_indptr.back() + (len + bs - 1) / bs);
    const int total = bt_indptr.back(), pool_blocks = total + 4;
    std::vector<int32_t> perm(pool_blocks);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng_);
    table.assign(perm.begin(), perm.begin() + total);
    auto k = random_bf16_exact(rng_, size_t(pool_blocks) * nkv * bs * hd, -1, 1);
    auto q = random_bf16_exact(rng_, lens.size() * n_heads * hd, -2, 2);
    // A strong block per sequence, so the top of the ranking is clear.
    for (size_t s = 0; s < lens.size(); ++s) {
      const int32_t phys = table[size_t(bt_indptr[s]) + 7];
      for (int h = 0; h < nkv; ++h)
        for (int t = 0; t < bs; ++t)
          for (int d = 0; d < hd; ++d)
            k[((size_t(phys) * nkv + h) * bs + t) * hd + d] = q[(s * n_heads + h * 4) * hd + d] > 0 ? 1.0f : -1.0f;
    }
    const int per = per_kv_head ? nkv : 1, size = 9;
    std::vector<int32_t> out_indptr = {0};
    for (size_t s = 0; s < lens.size(); ++s)
      for (int l = 0; l < per; ++l) out_indptr.push_back(out_indptr.back() + size);
    const int n_lists = int(out_indptr.size()) - 1, out_total = out_indptr.back();
    std::vector<uint8_t> reps(size_t(pool_blocks) * nkv * rep_bytes(RepKind::Mean, hd, bs), 0);
    const std::vector<uint8_t> flags = {rank, 0, rank};
    BlockSelectParams p;
    p.n_seqs = int(lens.size());
    p.n_blocks = pool_blocks;
    p.n_heads = n_heads;
    p.n_kv_heads = nkv;
    p.head_dim = hd;
    p.block_size = bs;
    p.per_kv_head = per_kv_head;
    p.kind = RepKind::Mean;
    p.any_oracle = true;
    p.rerank_factor = 2;  // 12 candidates of the 6 free slots: blocks 1..12
    std::vector<int32_t> ref_idx(out_total, -7), ref_last(n_lists, -7);
    p.q = q.data();
    p.reps = reps.data();
    p.block_table_indptr = bt_indptr.data();
    p.block_table = table.data();
    p.seq_len = lens.data();
    p.out_indptr = out_indptr.data();
    p.out_indices = ref_idx.data();
    p.out_last_len = ref_last.data();
    p.rank = flags.data();
    p.k_cache = k.data();
    p.kv_type = DType::F32;
    ASSERT_TRUE(cpu()->block_select(p).is_ok());

    auto dq = upload_act(gpu(), q, DType::BF16);
    auto dk = upload_act(gpu(), k, DType::BF16);
    auto dreps = upload(gpu(), reps);
    auto dbti = upload(gpu(), bt_indptr), dbt = upload(gpu(), table);
    auto dlen = upload(gpu(), lens);
    auto doi = upload(gpu(), out_indptr);
    auto dflags = upload(gpu(), flags);
    Buf didx(gpu(), out_total * 4), dlast(gpu(), n_lists * 4);
    poison(gpu(), didx);
    poison(gpu(), dlast);
    p.q = dq->get();
    p.k_cache = dk->get();
    p.kv_type = DType::BF16;
    p.act_type = DType::BF16;
    p.reps = dreps->get();
    p.block_table_indptr = dbti->as<int32_t>();
    p.block_table = dbt->as<int32_t>();
    p.seq_len = dlen->as<int32_t>();
    p.out_indptr = doi->as<int32_t>();
    p.out_indices = didx.as<int32_t>();
    p.out_last_len = dlast.as<int32_t>();
    p.rank = static_cast<const uint8_t*>(dflags->get());
    const Status gs = gpu()->block_select(p);
    ASSERT_TRUE(gs.is_ok()) << gs.to_string();
    auto got = download<int32_t>(gpu(), didx, out_total);
    auto got_last = download<int32_t>(gpu(), dlast, n_lists);
    EXPECT_EQ(got_last, ref_last);
    int differ = 0;
    for (int i = 0; i < n_lists; ++i) {
      const int s = per_kv_head ? i / nkv : i;
      std::vector<int32_t> a(got.begin() + out_indptr[i], got.begin() + out_indptr[i + 1]);
      std::vector<int32_t> b(ref_idx.begin() + out_indptr[i], ref_idx.begin() + out_indptr[i + 1]);
      // The planted block is chosen by both.
      if (flags[size_t(s)]) {
        const int32_t planted = table[size_t(bt_indptr[s]) + 7];
        EXPECT_NE(std::find(a.begin(), a.end(), planted), a.end()) << "list " << i;
      }
      if (a != b) {
        ++differ;
        EXPECT_TRUE(flags[size_t(s)]) << "a representation list differs (list " << i << ")";
      }
    }
    // Near ties may reorder one block of a list, not many lists.
    EXPECT_LE(differ, 1) << "per_kv_head " << per_kv_head << " rank " << int(rank);
  }
}

}  // namespace
}  // namespace gsa::backend::cuda_test

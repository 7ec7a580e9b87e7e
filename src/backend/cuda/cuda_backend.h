// The CUDA Backend (H200, sm_90): device memory, one compute stream, cuBLAS GEMMs and the gsa
// kernels, plus what the pipelined CPU selector needs on the GPU path: pinned host memory, a
// side stream for query/selection copies that never stalls the compute stream, and events.
// Code outside src/backend/cuda reaches those through the backend-neutral Backend::transfer()
// (transfer.h: Queue::Compute is the compute stream, Queue::Copy the side stream); the
// CUDA-typed methods below remain for the CUDA tests and benchmarks. Free of CUDA headers; the
// handles are the CUDA runtime's own types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "backend/backend.h"
#include "backend/transfer.h"

struct CUevent_st;
struct CUstream_st;

namespace gsa::backend {

/// Same type as cudaEvent_t / cudaStream_t.
using CudaEvent = CUevent_st*;
using CudaStream = CUstream_st*;

class GemmTuner;
class CudaTransfer;  // cuda_backend.cpp

class CudaBackend final : public Backend {
 public:
  /// Opens `device`, creates the streams, the cuBLAS handle and its workspace.
  static Result<std::unique_ptr<CudaBackend>> create(int device);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  DeviceKind kind() const override { return DeviceKind::Cuda; }
  const char* name() const override { return "cuda"; }

  Result<void*> alloc(size_t bytes) override;
  void free(void* ptr) override;
  /// Asynchronous on the compute stream; `src` may be reused once this returns.
  Status upload(void* dst, const void* src, size_t bytes) override;
  /// Waits for the compute stream, then returns with `dst` filled.
  Status download(void* dst, const void* src, size_t bytes) override;
  Status copy(void* dst, const void* src, size_t bytes) override;
  Status synchronize() override;
  /// Queue::Compute is the compute stream, Queue::Copy the side stream of copy_to_host_async and
  /// friends below; events are cudaEvent_t and pinned memory is alloc_pinned's.
  Transfer* transfer() override { return transfer_.get(); }

  Status matmul(const MatmulParams& p) override;
  Status rmsnorm(const RmsNormParams& p) override;
  Status rope(const RopeParams& p) override;
  Status kv_append(const KvAppendParams& p) override;
  Status attention(const AttentionParams& p) override;
  Status swiglu(const SwigluParams& p) override;
  Status add(const AddParams& p) override;
  Status embed(const EmbedParams& p) override;
  Status fill_random(const FillRandomParams& p) override;
  Status argmax(const ArgmaxParams& p) override;
  Status rep_update(const RepUpdateParams& p) override;
  /// One kernel launch when p.one_token_per_seq (and n_heads % n_kv_heads == 0); else the four ops.
  Status rope_append(const RopeAppendParams& p) override;
  Status add_rmsnorm(const AddRmsNormParams& p) override;
  /// The fused decode path (one token per sequence, whole GQA groups) takes strided inputs.
  bool supports_strided_rope_append(const RopeAppendParams& p) const override;
  Status copy_2d(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width,
                 size_t rows) override;
  Status block_select(const BlockSelectParams& p) override;

  // --- Device facts and tuning -------------------------------------------------------------
  int device() const { return device_; }
  int sm_count() const { return sm_count_; }
  CudaStream stream() const { return stream_; }
  /// Decode attention splits each key range so that about `ctas` CTAs run per SM (default 1:
  /// the decode kernel holds one 8-warp CTA per SM; one wave measured faster than two).
  void set_attention_ctas_per_sm(int ctas) { attn_ctas_per_sm_ = ctas < 1 ? 1 : ctas; }
  /// Matmuls with bf16 weights and m <= kSmallGemmMaxM rows go to the small-m kernel
  /// (gemm_small.cu) instead of cuBLAS when its constraints hold (k % 8 == 0, 16-byte aligned
  /// x and w). On by default; GSA_SMALL_GEMM=0 in the environment at create() turns it off.
  static constexpr int64_t kSmallGemmMaxM = 32;
  /// bf16 GEMMs with m up to this go through the GemmTuner (cuBLASLt algorithms timed per shape
  /// on first use) unless GSA_GEMM_TUNE=0 or set_gemm_tuning(false).
  static constexpr int64_t kTunedGemmMaxM = 64;
  Status set_gemm_tuning(bool on);
  bool gemm_tuning() const { return tuner_ != nullptr; }
  /// Shapes tuned so far and how many took a cuBLASLt algorithm (for the benchmarks' notes).
  int gemm_shapes_tuned() const;
  int gemm_lt_wins() const;
  void set_small_gemm(bool on) { small_gemm_ = on; }
  bool small_gemm() const { return small_gemm_; }
  /// Tuning: forces the small-m kernel's warps along k per CTA (1, 2, 4) and CTAs along k
  /// (clamped to what its workspace holds); 0 leaves each to the heuristic.
  void set_small_gemm_shape(int warps_k, int splits) {
    small_gemm_warps_k_ = warps_k;
    small_gemm_splits_ = splits;
  }
  /// The small-m kernel's plan for this problem (warps along k per CTA, CTAs along k), with the
  /// current forced shape; for benchmarks.
  void small_gemm_plan(int64_t m, int64_t n, int64_t k, int* warps_k, int* splits) const;
  /// The split count decode attention uses for this many (sequence, kv head) work items.
  int attention_splits(int64_t work_items) const;
  /// The split rule: the fewest splits (1..256) whose work_items * splits CTAs fill at least 90%
  /// of the `slots`-CTA waves they occupy, else the best-filling count.
  static int decode_splits(int64_t work_items, int64_t slots);
  /// Grows the workspaces now so that later calls (e.g. inside CUDA graph capture) allocate
  /// nothing: decode attention over up to n_tokens rows of n_heads heads, and block selection
  /// over up to n_lists lists.
  Status reserve_attention(int64_t n_tokens, int n_heads, int n_kv_heads, int head_dim);
  Status reserve_select(int64_t n_lists);
  /// Sequences longer than this many blocks are scored only on their first max_select_blocks
  /// blocks (later non-forced blocks are never selected). Default 32768.
  int max_select_blocks() const { return max_select_blocks_; }
  /// Block selection path: fused (default; one launch, scoring and top-k in the same kernel)
  /// or the two-kernel path (scoring kernel, then top-k kernel). Both give identical lists;
  /// false is for tests and benchmarks.
  void set_select_fused(bool on) { select_fused_ = on; }
  bool select_fused() const { return select_fused_; }
  /// Quant scores with group-max queries on the integer tensor cores (default), or with one
  /// dp4a pass per query head. Both give the same scores bit for bit; false is for tests and
  /// benchmarks.
  void set_select_quant_mma(bool on) { select_quant_mma_ = on; }
  /// CTAs per SM the fused selection spreads over its lists (0: as many as an SM holds at
  /// once, the default). For benchmarks.
  void set_select_ctas_per_sm(int n) { select_ctas_per_sm_ = n; }
  /// Lists of at most this many blocks are selected in shared memory by the fused path;
  /// longer ones read their scores from L2 (same kernel, same result).
  static constexpr int kSelectSmemBlocks = 2048;

  // --- Pinned host memory and side-stream transfers (pipelined CPU selector) ---------------
  /// Page-locked host memory (cudaHostAlloc); OutOfMemory on failure.
  Result<void*> alloc_pinned(size_t bytes);
  void free_pinned(void* ptr);
  /// blocking_sync: a host thread waiting in event_synchronize sleeps instead of spinning on
  /// the driver (a spinning waiter slows the launching thread's API calls).
  Result<CudaEvent> create_event(bool blocking_sync = false);
  void destroy_event(CudaEvent event);
  /// Copies backend memory `src` to pinned host memory `dst` on the side stream, after all work
  /// queued on the compute stream so far, and records `event` when the bytes have landed. The
  /// compute stream does not wait; `src` must not be overwritten until `event` completes.
  /// `event` may be null: a later copy's event then also covers this one (one side stream).
  Status copy_to_host_async(void* dst_pinned, const void* src, size_t bytes, CudaEvent event);
  /// Copies pinned host memory to backend memory on the side stream and records `event`; the
  /// compute stream uses `dst` only after wait_event(event).
  Status copy_to_device_async(void* dst, const void* src_pinned, size_t bytes, CudaEvent event);
  /// Pinned host -> backend copy on the compute stream (ordered with the ops, no host wait).
  Status upload_async(void* dst, const void* src_pinned, size_t bytes);
  /// Makes the compute stream wait for `event` (a device-side wait; the host returns at once).
  Status wait_event(CudaEvent event);
  /// Records `event` on the compute stream.
  Status record_event(CudaEvent event);
  /// Host side: true once `event` has completed (never blocks).
  Result<bool> event_done(CudaEvent event);
  /// Host side: blocks until `event` has completed.
  Status event_synchronize(CudaEvent event);

 private:
  friend class CudaTransfer;  // runs on stream_ and side_stream_
  CudaBackend() = default;
  Status ensure_attention_ws(size_t floats_o, size_t floats_lse);
  Status ensure_select_ws(int64_t n_lists);  // scores and tickets for n_lists lists
  Status ensure_convert_ws(size_t bytes);
  template <typename T>
  Status grow(T** buf, size_t* cap, size_t need);

  int device_ = 0;
  int sm_count_ = 132;
  int attn_ctas_per_sm_ = 1;
  int max_select_blocks_ = 32768;
  CudaStream stream_ = nullptr;
  CudaStream side_stream_ = nullptr;
  CudaEvent side_ready_ = nullptr;  // compute-stream point the side stream waits for
  std::unique_ptr<Transfer> transfer_;  // a CudaTransfer over the two streams
  void* cublas_ = nullptr;          // cublasHandle_t
  void* cublas_ws_ = nullptr;
  float* attn_ws_o_ = nullptr;
  float* attn_ws_lse_ = nullptr;
  size_t attn_ws_o_floats_ = 0, attn_ws_lse_floats_ = 0;
  float* select_ws_ = nullptr;
  size_t select_ws_floats_ = 0;
  uint32_t* select_tickets_ = nullptr;  // [select_tickets_n_] fused selection, zero between calls
  size_t select_tickets_n_ = 0;
  bool select_fused_ = true;
  bool select_quant_mma_ = true;
  int select_ctas_per_sm_ = 0;
  int select_resident_per_sm_ = 1;  // select_fused_resident_per_sm(), at create
  float* oracle_ws_ = nullptr;  // [2, n_seqs, n_heads, max_select_blocks_] Mass / Oracle ranking
  size_t oracle_ws_floats_ = 0;
  uint8_t* convert_ws_ = nullptr;
  float* bias_ws_ = nullptr;  // [bias_ws_floats_] f32 GEMM output before its bias
  size_t bias_ws_floats_ = 0;
  size_t convert_ws_bytes_ = 0;
  // Small-m GEMM workspaces, fixed at create() so that matmuls allocate nothing (CUDA graph
  // capture): 8 MB of split-k partials holds m = 32 x n = 3584 x 18 splits; plans needing more
  // use fewer splits.
  static constexpr int64_t kGemmWsFloats = int64_t(2) << 20;
  static constexpr int64_t kGemmCounters = 16384;
  bool small_gemm_ = false;
  std::unique_ptr<GemmTuner> tuner_;
  void* tune_flush_ = nullptr;  // L2 flush scratch for the tuner's timed runs
  int small_gemm_warps_k_ = 0, small_gemm_splits_ = 0;
  float* gemm_ws_ = nullptr;     // [kGemmWsFloats] split-k partials of the small-m kernel
  int* gemm_counters_ = nullptr; // [kGemmCounters] its arrival counters (zero between launches)
};

}  // namespace gsa::backend

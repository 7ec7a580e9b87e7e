// CudaBackend, part 1: device setup, memory, transfers, events, workspaces and the factory
// functions of backend.h. The ops (validation + launch) are in cuda_ops.cpp. Every CUDA error
// becomes an Internal Status with file:line; allocation failures become OutOfMemory.
#include "backend/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_launch.h"
#include "backend/cuda/gemm_tuner.h"

namespace gsa::backend {

namespace {
constexpr size_t kCublasWorkspaceBytes = size_t(32) << 20;
constexpr size_t kTuneFlushBytes = size_t(128) << 20;  // > 2x the H200's 60 MB L2

// Event and CudaEvent are both opaque pointers; the Transfer's Event is the cudaEvent_t itself.
CudaEvent cuda_event(Event e) { return reinterpret_cast<CudaEvent>(e); }
Event neutral_event(CudaEvent e) { return reinterpret_cast<Event>(e); }
}  // namespace

// The backend-neutral Transfer (transfer.h) of a CudaBackend: Queue::Compute is its compute
// stream and Queue::Copy its side stream. Pinned memory, event creation, query and host waits
// are the backend's own methods, so both views behave (and fail) alike. Arguments come checked
// (Transfer's public side).
class CudaTransfer final : public Transfer {
 public:
  static Result<std::unique_ptr<CudaTransfer>> create(CudaBackend* b) {
    std::unique_ptr<CudaTransfer> t(new CudaTransfer(b));
    for (cudaEvent_t& e : t->queue_ready_)
      GSA_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return t;
  }
  ~CudaTransfer() override {
    for (cudaEvent_t e : queue_ready_)
      if (e) cudaEventDestroy(e);
  }

 protected:
  Result<void*> do_alloc_pinned(size_t bytes) override { return b_->alloc_pinned(bytes); }
  void do_free_pinned(void* ptr) override { b_->free_pinned(ptr); }
  Result<Event> do_create_event(bool blocking_sync) override {
    GSA_ASSIGN_OR_RETURN(CudaEvent e, b_->create_event(blocking_sync));
    return neutral_event(e);
  }
  void do_destroy_event(Event e) override { b_->destroy_event(cuda_event(e)); }
  Status do_record(Event e, Queue q) override {
    GSA_CUDA_RETURN_IF_ERROR(cudaEventRecord(cuda_event(e), stream(q)));
    return Status::ok();
  }
  Status do_wait(Queue q, Event e) override {
    GSA_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(stream(q), cuda_event(e), 0));
    return Status::ok();
  }
  // As copy_to_host_async's side_ready_, but with events of its own: the two views can be used
  // side by side. Two threads recording the same event at once can only make a waiter wait for
  // a later point of the target, never an earlier one.
  Status do_wait_queue(Queue waiter, Queue target) override {
    cudaEvent_t e = queue_ready_[target == Queue::Compute ? 0 : 1];
    GSA_CUDA_RETURN_IF_ERROR(cudaEventRecord(e, stream(target)));
    GSA_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(stream(waiter), e, 0));
    return Status::ok();
  }
  Result<bool> do_query(Event e) override { return b_->event_done(cuda_event(e)); }
  Status do_synchronize(Event e) override { return b_->event_synchronize(cuda_event(e)); }
  Status do_synchronize(Queue q) override {
    GSA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream(q)));
    return Status::ok();
  }
  Status do_copy(CopyDir dir, void* dst, const void* src, size_t bytes, Queue q,
                 Event done) override {
    const cudaMemcpyKind kind =
        dir == CopyDir::HostToDevice ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
    GSA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, kind, stream(q)));
    if (done) GSA_CUDA_RETURN_IF_ERROR(cudaEventRecord(cuda_event(done), stream(q)));
    return Status::ok();
  }

 private:
  explicit CudaTransfer(CudaBackend* b) : b_(b) {}
  cudaStream_t stream(Queue q) const { return q == Queue::Compute ? b_->stream_ : b_->side_stream_; }

  CudaBackend* b_;
  cudaEvent_t queue_ready_[2] = {};  // [0: compute, 1: copy] the point wait_queue waits for
};

Result<std::unique_ptr<CudaBackend>> CudaBackend::create(int device) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return internal_error("cuda: no usable device: {}", cudaGetErrorString(err));
  }
  if (device < 0 || device >= count)
    return invalid_argument("cuda: device {} outside [0, {})", device, count);
  std::unique_ptr<CudaBackend> b(new CudaBackend());
  b->device_ = device;
  GSA_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  GSA_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&b->sm_count_, cudaDevAttrMultiProcessorCount, device));
  b->select_resident_per_sm_ = cuda::select_fused_resident_per_sm();
  cudaStream_t s = nullptr;
  GSA_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  b->stream_ = s;
  GSA_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  b->side_stream_ = s;
  cudaEvent_t e = nullptr;
  GSA_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  b->side_ready_ = e;
  GSA_ASSIGN_OR_RETURN(b->transfer_, CudaTransfer::create(b.get()));
  cublasHandle_t h = nullptr;
  const cublasStatus_t cs = cublasCreate(&h);
  if (cs != CUBLAS_STATUS_SUCCESS) return internal_error("cuda: cublasCreate failed: {}", int(cs));
  b->cublas_ = h;
  GSA_CUBLAS_RETURN_IF_ERROR(cublasSetStream(h, b->stream_));
  const cudaError_t werr = cudaMalloc(&b->cublas_ws_, kCublasWorkspaceBytes);
  if (werr != cudaSuccess) {
    cudaGetLastError();
    return out_of_memory("cuda: cannot allocate the cuBLAS workspace ({} bytes)", kCublasWorkspaceBytes);
  }
  // An explicit workspace keeps cuBLAS from allocating during CUDA graph capture.
  GSA_CUBLAS_RETURN_IF_ERROR(cublasSetWorkspace(h, b->cublas_ws_, kCublasWorkspaceBytes));
  GSA_ASSIGN_OR_RETURN(void* gws, b->alloc(size_t(kGemmWsFloats) * sizeof(float)));
  b->gemm_ws_ = static_cast<float*>(gws);
  GSA_ASSIGN_OR_RETURN(void* gcount, b->alloc(size_t(kGemmCounters) * sizeof(int)));
  b->gemm_counters_ = static_cast<int*>(gcount);
  GSA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(gcount, 0, size_t(kGemmCounters) * sizeof(int), b->stream_));
  // The small-m kernel measured slower than cuBLAS at every decode shape (CUDA_NOTES.md): off
  // unless GSA_SMALL_GEMM=1.
  if (const char* e = std::getenv("GSA_SMALL_GEMM")) b->small_gemm_ = std::strcmp(e, "1") == 0;
  const char* tune = std::getenv("GSA_GEMM_TUNE");
  GSA_RETURN_IF_ERROR(b->set_gemm_tuning(!(tune && std::strcmp(tune, "0") == 0)));
  return b;
}

Status CudaBackend::set_gemm_tuning(bool on) {
  if (!on) {
    tuner_.reset();
    return Status::ok();
  }
  if (tuner_) return Status::ok();
  if (!tune_flush_) {
    GSA_ASSIGN_OR_RETURN(tune_flush_, alloc(kTuneFlushBytes));
  }
  GSA_ASSIGN_OR_RETURN(tuner_, GemmTuner::create(static_cast<cublasHandle_t>(cublas_), cublas_ws_,
                                                 kCublasWorkspaceBytes, tune_flush_, kTuneFlushBytes));
  return Status::ok();
}

int CudaBackend::gemm_shapes_tuned() const { return tuner_ ? tuner_->tuned() : 0; }
int CudaBackend::gemm_lt_wins() const { return tuner_ ? tuner_->lt_wins() : 0; }

CudaBackend::~CudaBackend() {
  cudaSetDevice(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  if (side_stream_) cudaStreamSynchronize(side_stream_);
  tuner_.reset();
  cudaFree(tune_flush_);
  if (cublas_) cublasDestroy(static_cast<cublasHandle_t>(cublas_));
  cudaFree(cublas_ws_);
  cudaFree(attn_ws_o_);
  cudaFree(attn_ws_lse_);
  cudaFree(select_ws_);
  cudaFree(oracle_ws_);
  cudaFree(select_tickets_);
  cudaFree(convert_ws_);
  cudaFree(bias_ws_);
  cudaFree(gemm_ws_);
  cudaFree(gemm_counters_);
  transfer_.reset();  // its events; the streams it borrows go below
  if (side_ready_) cudaEventDestroy(side_ready_);
  if (side_stream_) cudaStreamDestroy(side_stream_);
  if (stream_) cudaStreamDestroy(stream_);
}

Result<void*> CudaBackend::alloc(size_t bytes) {
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes == 0 ? 256 : bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free allocation error
    return out_of_memory("cuda: cannot allocate {} bytes on device {}: {}", bytes, device_,
                         cudaGetErrorString(err));
  }
  return p;
}

void CudaBackend::free(void* ptr) {
  if (ptr) cudaFree(ptr);
}

Status CudaBackend::upload(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status::ok();
  GSA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
  return Status::ok();
}

Status CudaBackend::download(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status::ok();
  GSA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  GSA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return Status::ok();
}

Status CudaBackend::copy(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status::ok();
  GSA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  return Status::ok();
}

Status CudaBackend::synchronize() {
  GSA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  GSA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

int CudaBackend::attention_splits(int64_t work_items) const {
  return decode_splits(work_items, int64_t(sm_count_) * attn_ctas_per_sm_);
}

int CudaBackend::decode_splits(int64_t work_items, int64_t slots) {
  if (work_items <= 0 || slots <= 0) return 1;
  // The fewest splits whose CTAs keep >= 90% of the CTA slots of their waves busy: one CTA per
  // item leaves 52 of 132 SMs idle for 20 sequences x 4 kv heads (80 items); 3 splits fill 240
  // of 264 slots in two waves. Failing 90%, the split count with the best fill.
  int best = 1;
  double best_fill = 0;
  for (int s = 1; s <= 256; ++s) {
    const int64_t ctas = work_items * s;
    const int64_t waves = (ctas + slots - 1) / slots;
    const double fill = double(ctas) / double(waves * slots);
    if (fill >= 0.9) return s;
    if (fill > best_fill + 1e-9) {
      best_fill = fill;
      best = s;
    }
  }
  return best;
}

// Replaces *buf by a buffer of at least `need` elements when it holds fewer (contents dropped).
template <typename T>
Status CudaBackend::grow(T** buf, size_t* cap, size_t need) {
  if (need <= *cap) return Status::ok();
  cudaFree(*buf);
  *buf = nullptr;
  *cap = 0;
  GSA_ASSIGN_OR_RETURN(void* p, alloc(need * sizeof(T)));
  *buf = static_cast<T*>(p);
  *cap = need;
  return Status::ok();
}

template Status CudaBackend::grow<float>(float**, size_t*, size_t);  // also used by cuda_ops.cpp

Status CudaBackend::ensure_attention_ws(size_t floats_o, size_t floats_lse) {
  GSA_RETURN_IF_ERROR(grow(&attn_ws_o_, &attn_ws_o_floats_, floats_o));
  return grow(&attn_ws_lse_, &attn_ws_lse_floats_, floats_lse);
}

Status CudaBackend::ensure_select_ws(int64_t n_lists) {
  GSA_RETURN_IF_ERROR(grow(&select_ws_, &select_ws_floats_, size_t(n_lists) * size_t(max_select_blocks_)));
  if (size_t(n_lists) > select_tickets_n_) {
    // The fused kernel needs zero tickets and leaves them zero; fresh ones are zeroed on the
    // compute stream, ahead of the kernel that uses them.
    GSA_RETURN_IF_ERROR(grow(&select_tickets_, &select_tickets_n_, size_t(n_lists)));
    GSA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(select_tickets_, 0, select_tickets_n_ * sizeof(uint32_t), stream_));
  }
  return Status::ok();
}

Status CudaBackend::ensure_convert_ws(size_t bytes) {
  return grow(&convert_ws_, &convert_ws_bytes_, bytes);
}

Status CudaBackend::reserve_attention(int64_t n_tokens, int n_heads, int n_kv_heads, int head_dim) {
  if (n_tokens <= 0 || n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0)
    return invalid_argument("reserve_attention: bad shape n_tokens={} n_heads={} n_kv_heads={} head_dim={}",
                            n_tokens, n_heads, n_kv_heads, head_dim);
  const int group = n_heads / n_kv_heads > 0 ? n_heads / n_kv_heads : 1;
  const int64_t splits = attention_splits(n_tokens * ((group + 15) / 16) * n_kv_heads);
  const size_t rows = size_t(n_tokens) * size_t(n_heads) * size_t(splits);
  return ensure_attention_ws(rows * size_t(head_dim), rows);
}

Status CudaBackend::reserve_select(int64_t n_lists) {
  if (n_lists <= 0) return invalid_argument("reserve_select: n_lists {} must be > 0", n_lists);
  return ensure_select_ws(n_lists);
}

Result<void*> CudaBackend::alloc_pinned(size_t bytes) {
  void* p = nullptr;
  const cudaError_t err = cudaHostAlloc(&p, bytes == 0 ? 64 : bytes, cudaHostAllocPortable);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return out_of_memory("cuda: cannot allocate {} bytes of pinned host memory: {}", bytes,
                         cudaGetErrorString(err));
  }
  return p;
}

void CudaBackend::free_pinned(void* ptr) {
  if (ptr) cudaFreeHost(ptr);
}

Result<CudaEvent> CudaBackend::create_event(bool blocking_sync) {
  cudaEvent_t e = nullptr;
  GSA_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(
      &e, cudaEventDisableTiming | (blocking_sync ? cudaEventBlockingSync : 0u)));
  return e;
}

void CudaBackend::destroy_event(CudaEvent event) {
  if (event) cudaEventDestroy(event);
}

Status CudaBackend::copy_to_host_async(void* dst_pinned, const void* src, size_t bytes, CudaEvent event) {
  GSA_CUDA_RETURN_IF_ERROR(cudaEventRecord(side_ready_, stream_));
  GSA_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(side_stream_, side_ready_, 0));
  if (bytes) GSA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst_pinned, src, bytes, cudaMemcpyDeviceToHost, side_stream_));
  if (event) GSA_CUDA_RETURN_IF_ERROR(cudaEventRecord(event, side_stream_));
  return Status::ok();
}

Status CudaBackend::copy_to_device_async(void* dst, const void* src_pinned, size_t bytes, CudaEvent event) {
  if (!event) return invalid_argument("copy_to_device_async: null event");
  if (bytes) GSA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src_pinned, bytes, cudaMemcpyHostToDevice, side_stream_));
  GSA_CUDA_RETURN_IF_ERROR(cudaEventRecord(event, side_stream_));
  return Status::ok();
}

Status CudaBackend::upload_async(void* dst, const void* src_pinned, size_t bytes) {
  if (bytes) GSA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src_pinned, bytes, cudaMemcpyHostToDevice, stream_));
  return Status::ok();
}

Status CudaBackend::wait_event(CudaEvent event) {
  if (!event) return invalid_argument("wait_event: null event");
  GSA_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(stream_, event, 0));
  return Status::ok();
}

Status CudaBackend::record_event(CudaEvent event) {
  if (!event) return invalid_argument("record_event: null event");
  GSA_CUDA_RETURN_IF_ERROR(cudaEventRecord(event, stream_));
  return Status::ok();
}

Result<bool> CudaBackend::event_done(CudaEvent event) {
  if (!event) return invalid_argument("event_done: null event");
  const cudaError_t err = cudaEventQuery(event);
  if (err == cudaSuccess) return true;
  if (err == cudaErrorNotReady) {
    cudaGetLastError();
    return false;
  }
  GSA_CUDA_RETURN_IF_ERROR(err);
  return false;
}

Status CudaBackend::event_synchronize(CudaEvent event) {
  if (!event) return invalid_argument("event_synchronize: null event");
  GSA_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(event));
  return Status::ok();
}

bool cuda_available() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return count > 0;
}

Result<std::unique_ptr<Backend>> make_cuda_backend(int device) {
  GSA_ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> b, CudaBackend::create(device));
  return std::unique_ptr<Backend>(std::move(b));
}

}  // namespace gsa::backend

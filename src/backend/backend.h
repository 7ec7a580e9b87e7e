// The Backend interface: memory, transfers and the compute ops of ops.h. The model's forward
// pass is written once against this; cpu/ and cuda/ implement it. A backend refuses an op
// configuration it cannot run with Unsupported (supports-style checks live in each launcher).
#pragma once

#include <cstddef>
#include <memory>

#include "backend/ops.h"
#include "backend/ops_sparse.h"
#include "core/status.h"
#include "core/thread_pool.h"

namespace gsa::backend {

enum class DeviceKind { Cpu, Cuda };

class Transfer;  // transfer.h

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceKind kind() const = 0;
  virtual const char* name() const = 0;

  /// Backend memory (host memory on the CPU). OutOfMemory on failure; never aborts.
  virtual Result<void*> alloc(size_t bytes) = 0;
  virtual void free(void* ptr) = 0;
  /// Host -> backend and backend -> host copies; ordered with the ops.
  virtual Status upload(void* dst, const void* src, size_t bytes) = 0;
  virtual Status download(void* dst, const void* src, size_t bytes) = 0;
  /// Backend -> backend copy (copy-on-write of shared KV blocks). The default stages through
  /// host memory; backends override it with a direct copy.
  virtual Status copy(void* dst, const void* src, size_t bytes);
  /// rows x width bytes from src (rows src_pitch apart) to dst (dst_pitch apart), backend memory
  /// both. The default copies row by row.
  virtual Status copy_2d(void* dst, size_t dst_pitch, const void* src, size_t src_pitch,
                         size_t width, size_t rows);
  /// Waits for all queued work.
  virtual Status synchronize() = 0;
  /// Queues, events, pinned host memory and asynchronous copies (transfer.h), for pipelines that
  /// overlap copies with the ops; owned by the backend, valid while it lives. The default gives
  /// a DeviceKind::Cpu backend the synchronous cpu_transfer() (its memory is host memory and its
  /// ops finish before they return) and any other backend null; CUDA overrides it.
  virtual Transfer* transfer();

  /// True when matmul (and embed) take weights of ggml type `ggml_type` as they are stored in
  /// GGUF files (w_type = DType::Ggml); the model then keeps such weights quantized.
  virtual bool supports_ggml_weights(uint32_t ggml_type) const { return false; }

  virtual Status matmul(const MatmulParams& p) = 0;
  virtual Status rmsnorm(const RmsNormParams& p) = 0;
  virtual Status rope(const RopeParams& p) = 0;
  virtual Status kv_append(const KvAppendParams& p) = 0;
  virtual Status attention(const AttentionParams& p) = 0;
  virtual Status swiglu(const SwigluParams& p) = 0;
  virtual Status add(const AddParams& p) = 0;
  virtual Status embed(const EmbedParams& p) = 0;
  virtual Status fill_random(const FillRandomParams& p) = 0;
  virtual Status argmax(const ArgmaxParams& p) = 0;
  virtual Status rep_update(const RepUpdateParams& p) = 0;
  /// rope(q); rope(k); kv_append; rep_update(full_blocks) (ops_sparse.h RopeAppendParams). The
  /// default runs the four ops in that order (an error from one stops the rest, the earlier
  /// ones having run); backends override it with a fused kernel.
  virtual Status rope_append(const RopeAppendParams& p);
  /// add then rmsnorm (ops.h AddRmsNormParams); backends override it with one kernel.
  virtual Status add_rmsnorm(const AddRmsNormParams& p);
  /// True when rope_append takes p's strided inputs and q_out (the default: never).
  virtual bool supports_strided_rope_append(const RopeAppendParams& p) const { return false; }
  virtual Status block_select(const BlockSelectParams& p) = 0;
};

/// The CPU backend; `pool` is borrowed and must outlive it.
std::unique_ptr<Backend> make_cpu_backend(ThreadPool* pool);

/// True when this build has the CUDA backend and a CUDA device is present.
bool cuda_available();
/// The CUDA backend on device `device`; Unsupported in a build without CUDA, Internal (with
/// the driver's message) where no device can be opened.
Result<std::unique_ptr<Backend>> make_cuda_backend(int device = 0);

}  // namespace gsa::backend

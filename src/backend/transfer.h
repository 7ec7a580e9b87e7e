// Transfer: the backend-neutral interface for asynchronous copies between host and backend
// memory, ordered by queues and events, with pinned host buffers. It is what a pipeline needs to
// overlap copies with compute (the host-selection planner, engine/host_select.cpp, mirrors
// representations and uploads lists on a side queue while the compute queue runs ahead) without
// naming a backend: CUDA maps the queues to its two streams and events to cudaEvent_t
// (cuda/cuda_backend.cpp); the CPU's memory is host memory and its ops finish before they
// return, so there every copy is done when it returns, every event is complete and pinned memory
// is ordinary aligned memory (cpu_transfer()).
//
// Obtained from Backend::transfer(); owned by the backend and valid for its lifetime. The public
// functions check their arguments the same way on every backend (InvalidArgument before anything
// is queued), then call the backend's implementation. Calls may come from several host threads
// (a pump thread waits on events while the engine thread queues copies).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "core/status.h"

namespace gsa::backend {

/// A backend's in-order work queues (CUDA streams). Work on one queue runs in the order it was
/// queued; work on two queues is ordered only by record/wait or wait_queue.
enum class Queue {
  Compute,  // the ops and Backend::upload/download/copy run here
  Copy,     // the side queue: copies here never stall the compute queue
};

/// An event marks a point in a queue (record); other queues (wait) or the host (query,
/// synchronize) can wait for it. Opaque: on CUDA it is the cudaEvent_t itself, so recording and
/// waiting allocate nothing. An event never recorded counts as complete.
struct EventTag;  // never defined
using Event = EventTag*;

enum class CopyDir { HostToDevice, DeviceToHost };

/// A batched copy of equal-size blocks (representation rows, KV blocks): block src_index[i] of
/// `src` lands in block dst_index[i] of `dst`, where block k of a buffer is the `block_bytes`
/// bytes from k * block_bytes. The host side should be pinned memory. Entries whose indices
/// both step by one from the previous entry are merged into one copy, so sorted ids cost one
/// copy per run. dst indices should be distinct (for a repeated one, which source lands is
/// unspecified).
struct BlockCopy {
  CopyDir dir = CopyDir::HostToDevice;
  void* dst = nullptr;
  const void* src = nullptr;
  size_t block_bytes = 0;  // > 0
  int64_t dst_blocks = 0;  // blocks `dst` holds: every dst index is in [0, dst_blocks)
  int64_t src_blocks = 0;  // blocks `src` holds: every src index is in [0, src_blocks)
  std::span<const int32_t> src_index;
  std::span<const int32_t> dst_index;  // as many entries as src_index
};

class Transfer {
 public:
  virtual ~Transfer() = default;

  // --- Pinned host memory ------------------------------------------------------------------
  /// Host memory the backend copies from and to asynchronously (page-locked on CUDA). Not null
  /// on success, also for 0 bytes; OutOfMemory on failure.
  Result<void*> alloc_pinned(size_t bytes);
  /// Frees what alloc_pinned returned (null is ignored). No copy in flight may still use it.
  void free_pinned(void* ptr);

  // --- Events --------------------------------------------------------------------------------
  /// blocking_sync: a host thread waiting in synchronize(Event) sleeps instead of spinning (a
  /// spinning waiter slows the launching thread's calls on CUDA).
  Result<Event> create_event(bool blocking_sync = false);
  /// Null is ignored. An event recorded but not yet complete may be destroyed (CUDA releases it
  /// once it completes); waits queued on it before still hold.
  void destroy_event(Event e);
  /// Records `e` on `q` after the work queued on `q` so far.
  Status record(Event e, Queue q);
  /// Makes `q` wait for `e` (a queue-side wait: the host returns at once).
  Status wait(Queue q, Event e);
  /// Makes `waiter` wait for all the work queued on `target` so far (no event to manage; a
  /// no-op when they are the same queue, which is in order).
  Status wait_queue(Queue waiter, Queue target);
  /// Host side: true once `e` has completed; never blocks.
  Result<bool> query(Event e);
  /// Host side: blocks until `e` has completed.
  Status synchronize(Event e);
  /// Host side: blocks until the work queued on `q` so far has completed.
  Status synchronize(Queue q);

  // --- Copies --------------------------------------------------------------------------------
  // Queued on `q` after its earlier work (and nothing else: to follow the compute queue from the
  // copy queue, wait_queue first); `done`, unless null, is recorded on `q` when the bytes have
  // landed. Until then the source must not be overwritten nor the destination read. The host
  // side should come from alloc_pinned (other host memory works, but the copy may then be
  // synchronous with the host). bytes == 0 copies nothing and still records `done`.

  /// Host memory `src_host` to backend memory `dst`.
  Status copy_to_device_async(void* dst, const void* src_host, size_t bytes, Queue q, Event done);
  /// Backend memory `src` to host memory `dst_host`.
  Status copy_to_host_async(void* dst_host, const void* src, size_t bytes, Queue q, Event done);
  /// The blocks of `c` (see BlockCopy); an empty list copies nothing and still records `done`.
  Status gather_async(const BlockCopy& c, Queue q, Event done);

 protected:
  // The backend's side, called with checked arguments (valid queue, non-null event where one is
  // needed, non-null pointers where bytes > 0).
  virtual Result<void*> do_alloc_pinned(size_t bytes) = 0;
  virtual void do_free_pinned(void* ptr) = 0;
  virtual Result<Event> do_create_event(bool blocking_sync) = 0;
  virtual void do_destroy_event(Event e) = 0;
  virtual Status do_record(Event e, Queue q) = 0;
  virtual Status do_wait(Queue q, Event e) = 0;
  virtual Status do_wait_queue(Queue waiter, Queue target) = 0;  // waiter != target
  virtual Result<bool> do_query(Event e) = 0;
  virtual Status do_synchronize(Event e) = 0;
  virtual Status do_synchronize(Queue q) = 0;
  /// `done` may be null.
  virtual Status do_copy(CopyDir dir, void* dst, const void* src, size_t bytes, Queue q,
                         Event done) = 0;
  /// A checked, non-empty list. The default merges runs of consecutive indices and calls
  /// do_copy once per run; a backend with a batched copy overrides it.
  virtual Status do_gather(const BlockCopy& c, Queue q, Event done);
};

/// The synchronous transfer over host memory: the CPU backend's (Backend::transfer() of a
/// DeviceKind::Cpu backend). Stateless and shared; never destroyed.
Transfer* cpu_transfer();

/// Checks a BlockCopy against its own fields (sizes, index ranges, byte offsets that overflow);
/// InvalidArgument naming the first problem. gather_async calls it.
Status check_block_copy(const BlockCopy& c);

}  // namespace gsa::backend

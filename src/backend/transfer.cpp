// Transfer: the argument checks every backend shares, the default batched gather, the
// synchronous CPU implementation, and Backend::transfer()'s default.
#include "backend/transfer.h"

#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <unistd.h>

#include "backend/backend.h"

namespace gsa::backend {

namespace {

Status check_queue(Queue q, const char* what) {
  if (q != Queue::Compute && q != Queue::Copy)
    return invalid_argument("{}: queue {} is neither Compute nor Copy", what, int(q));
  return Status::ok();
}

Status check_event(Event e, const char* what) {
  if (!e) return invalid_argument("{}: null event", what);
  return Status::ok();
}

Status check_copy(void* dst, const void* src, size_t bytes, Queue q, const char* what) {
  GSA_RETURN_IF_ERROR(check_queue(q, what));
  if (bytes > 0 && (!dst || !src))
    return invalid_argument("{}: {} bytes with a null {} pointer", what, bytes,
                            dst ? "source" : "destination");
  return Status::ok();
}

// Every index of `idx` in [0, n_blocks), and the buffer's n_blocks * block_bytes bytes
// addressable (so no offset computed from an index wraps around).
Status check_indices(std::span<const int32_t> idx, int64_t n_blocks, size_t block_bytes,
                     const char* side) {
  if (n_blocks <= 0)
    return invalid_argument("gather: {} holds {} blocks, need > 0", side, n_blocks);
  if (uint64_t(n_blocks) > std::numeric_limits<size_t>::max() / block_bytes)
    return invalid_argument("gather: {} blocks of {} bytes overflow the {} buffer", n_blocks,
                            block_bytes, side);
  for (size_t i = 0; i < idx.size(); ++i) {
    if (idx[i] < 0 || idx[i] >= n_blocks)
      return invalid_argument("gather: {} index {} at entry {} outside [0, {})", side, idx[i], i,
                              n_blocks);
  }
  return Status::ok();
}

}  // namespace

Status check_block_copy(const BlockCopy& c) {
  if (c.dir != CopyDir::HostToDevice && c.dir != CopyDir::DeviceToHost)
    return invalid_argument("gather: direction {} is neither HostToDevice nor DeviceToHost",
                            int(c.dir));
  if (c.src_index.size() != c.dst_index.size())
    return invalid_argument("gather: {} source indices but {} destination indices",
                            c.src_index.size(), c.dst_index.size());
  if (c.src_index.empty()) return Status::ok();
  if (c.block_bytes == 0) return invalid_argument("gather: block_bytes is 0");
  if (!c.dst || !c.src)
    return invalid_argument("gather: null {} buffer", c.dst ? "source" : "destination");
  GSA_RETURN_IF_ERROR(check_indices(c.src_index, c.src_blocks, c.block_bytes, "source"));
  return check_indices(c.dst_index, c.dst_blocks, c.block_bytes, "destination");
}

// --- The public side: checks, then the backend ------------------------------------------------

Result<void*> Transfer::alloc_pinned(size_t bytes) { return do_alloc_pinned(bytes); }

void Transfer::free_pinned(void* ptr) {
  if (ptr) do_free_pinned(ptr);
}

Result<Event> Transfer::create_event(bool blocking_sync) { return do_create_event(blocking_sync); }

void Transfer::destroy_event(Event e) {
  if (e) do_destroy_event(e);
}

Status Transfer::record(Event e, Queue q) {
  GSA_RETURN_IF_ERROR(check_event(e, "record"));
  GSA_RETURN_IF_ERROR(check_queue(q, "record"));
  return do_record(e, q);
}

Status Transfer::wait(Queue q, Event e) {
  GSA_RETURN_IF_ERROR(check_event(e, "wait"));
  GSA_RETURN_IF_ERROR(check_queue(q, "wait"));
  return do_wait(q, e);
}

Status Transfer::wait_queue(Queue waiter, Queue target) {
  GSA_RETURN_IF_ERROR(check_queue(waiter, "wait_queue"));
  GSA_RETURN_IF_ERROR(check_queue(target, "wait_queue"));
  if (waiter == target) return Status::ok();  // one queue is in order already
  return do_wait_queue(waiter, target);
}

Result<bool> Transfer::query(Event e) {
  GSA_RETURN_IF_ERROR(check_event(e, "query"));
  return do_query(e);
}

Status Transfer::synchronize(Event e) {
  GSA_RETURN_IF_ERROR(check_event(e, "synchronize"));
  return do_synchronize(e);
}

Status Transfer::synchronize(Queue q) {
  GSA_RETURN_IF_ERROR(check_queue(q, "synchronize"));
  return do_synchronize(q);
}

Status Transfer::copy_to_device_async(void* dst, const void* src_host, size_t bytes, Queue q,
                                      Event done) {
  GSA_RETURN_IF_ERROR(check_copy(dst, src_host, bytes, q, "copy_to_device_async"));
  if (bytes == 0) return done ? do_record(done, q) : Status::ok();
  return do_copy(CopyDir::HostToDevice, dst, src_host, bytes, q, done);
}

Status Transfer::copy_to_host_async(void* dst_host, const void* src, size_t bytes, Queue q,
                                    Event done) {
  GSA_RETURN_IF_ERROR(check_copy(dst_host, src, bytes, q, "copy_to_host_async"));
  if (bytes == 0) return done ? do_record(done, q) : Status::ok();
  return do_copy(CopyDir::DeviceToHost, dst_host, src, bytes, q, done);
}

Status Transfer::gather_async(const BlockCopy& c, Queue q, Event done) {
  GSA_RETURN_IF_ERROR(check_queue(q, "gather"));
  GSA_RETURN_IF_ERROR(check_block_copy(c));
  if (c.src_index.empty()) return done ? do_record(done, q) : Status::ok();
  return do_gather(c, q, done);
}

Status Transfer::do_gather(const BlockCopy& c, Queue q, Event done) {
  char* dst = static_cast<char*>(c.dst);
  const char* src = static_cast<const char*>(c.src);
  const size_t n = c.src_index.size();
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    // int64 so that index INT32_MAX does not overflow the comparison.
    while (j < n && int64_t(c.src_index[j]) == int64_t(c.src_index[j - 1]) + 1 &&
           int64_t(c.dst_index[j]) == int64_t(c.dst_index[j - 1]) + 1)
      ++j;
    // Only the last run records `done`: the queue is in order, so it covers the earlier ones.
    GSA_RETURN_IF_ERROR(do_copy(c.dir, dst + size_t(c.dst_index[i]) * c.block_bytes,
                                src + size_t(c.src_index[i]) * c.block_bytes,
                                (j - i) * c.block_bytes, q, j == n ? done : nullptr));
    i = j;
  }
  return Status::ok();
}

// --- The CPU: host memory, synchronous ops ----------------------------------------------------

namespace {

// The machine's physical memory in bytes; the largest size_t when the system cannot say.
size_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return std::numeric_limits<size_t>::max();
  const auto p = static_cast<size_t>(pages), q = static_cast<size_t>(page);
  return p > std::numeric_limits<size_t>::max() / q ? std::numeric_limits<size_t>::max() : p * q;
}

// The CPU backend's ops have finished when they return, so a copy can run at once: it is
// ordered after everything queued on any queue, and every event is complete when recorded.
class CpuTransfer final : public Transfer {
 protected:
  Result<void*> do_alloc_pinned(size_t bytes) override {
    // Nothing to lock on the host: 64-byte aligned memory, as CpuBackend::alloc gives.
    constexpr size_t kAlign = 64;
    // Pinned memory stays resident, so more than the machine's physical memory is refused
    // here rather than left to the allocator (which may abort under a sanitizer).
    if (bytes > std::numeric_limits<size_t>::max() - (kAlign - 1) || bytes > physical_memory_bytes())
      return out_of_memory("cpu: cannot allocate {} bytes of pinned host memory", bytes);
    const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
    void* p = std::aligned_alloc(kAlign, rounded == 0 ? kAlign : rounded);
    if (!p) return out_of_memory("cpu: cannot allocate {} bytes of pinned host memory", bytes);
    return p;
  }
  void do_free_pinned(void* ptr) override { std::free(ptr); }

  // An event is a distinct live object so handles compare and destroy like CUDA's.
  struct CpuEvent {
    bool blocking_sync = false;
  };
  Result<Event> do_create_event(bool blocking_sync) override {
    auto* e = new (std::nothrow) CpuEvent{blocking_sync};
    if (!e) return out_of_memory("cpu: cannot allocate an event");
    return reinterpret_cast<Event>(e);
  }
  void do_destroy_event(Event e) override { delete reinterpret_cast<CpuEvent*>(e); }
  Status do_record(Event, Queue) override { return Status::ok(); }
  Status do_wait(Queue, Event) override { return Status::ok(); }
  Status do_wait_queue(Queue, Queue) override { return Status::ok(); }
  Result<bool> do_query(Event) override { return true; }
  Status do_synchronize(Event) override { return Status::ok(); }
  Status do_synchronize(Queue) override { return Status::ok(); }

  Status do_copy(CopyDir, void* dst, const void* src, size_t bytes, Queue, Event) override {
    // Both sides are host memory; memmove keeps a caller's overlapping ranges defined.
    std::memmove(dst, src, bytes);
    return Status::ok();
  }
};

}  // namespace

Transfer* cpu_transfer() {
  // Stateless, so one instance serves every CPU backend and thread; never destroyed, so a
  // backend outliving static destruction still has it.
  static Transfer* const t = new CpuTransfer();
  return t;
}

Transfer* Backend::transfer() { return kind() == DeviceKind::Cpu ? cpu_transfer() : nullptr; }

}  // namespace gsa::backend

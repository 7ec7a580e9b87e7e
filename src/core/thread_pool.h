// A fixed pool of worker threads for data-parallel loops (parallel_for). One pool per engine;
// kernels receive it by pointer. It does not schedule independent long-lived tasks: the
// asynchronous selector owns its own threads.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace gsa {

class ThreadPool {
 public:
  /// n_threads <= 0 picks the number of hardware threads. The calling thread takes part in
  /// every parallel_for, so n_threads - 1 workers are started.
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int n_threads() const { return n_threads_; }

  /// Runs fn(begin, end, thread_index) over [0, n) split into contiguous chunks, one or more per
  /// thread, and returns when all are done. Not reentrant: fn must not call parallel_for.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn,
                    int64_t min_chunk = 1);

 private:
  void worker_loop(int index);

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_start_;
  std::condition_variable cv_done_;
  const std::function<void(int64_t, int64_t, int)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int64_t job_chunk_ = 1;
  int64_t next_ = 0;     // next chunk start, guarded by mu_
  int pending_ = 0;      // workers still busy with the current generation
  uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace gsa

// ThreadPool: a generation counter wakes workers; chunks are handed out under one mutex, which
// is cheap next to the matmul- and attention-sized chunks the pool runs.
#include "core/thread_pool.h"

#include <algorithm>

namespace gsa {

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = int(std::max(1u, std::thread::hardware_concurrency()));
  n_threads_ = n_threads;
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_start_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn,
                              int64_t min_chunk) {
  if (n <= 0) return;
  const int64_t chunk = std::max<int64_t>(min_chunk, (n + n_threads_ * 4 - 1) / (n_threads_ * 4));
  if (n_threads_ == 1 || n <= chunk) {
    fn(0, n, 0);
    return;
  }
  std::unique_lock<std::mutex> lock(mu_);
  job_ = &fn;
  job_n_ = n;
  job_chunk_ = chunk;
  next_ = 0;
  pending_ = int(workers_.size());
  ++generation_;
  cv_start_.notify_all();
  // The caller works too.
  while (next_ < job_n_) {
    const int64_t b = next_;
    const int64_t e = std::min(job_n_, b + job_chunk_);
    next_ = e;
    lock.unlock();
    fn(b, e, 0);
    lock.lock();
  }
  cv_done_.wait(lock, [this] { return pending_ == 0; });
  job_ = nullptr;
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_start_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    while (next_ < job_n_) {
      const int64_t b = next_;
      const int64_t e = std::min(job_n_, b + job_chunk_);
      next_ = e;
      const auto* fn = job_;
      lock.unlock();
      (*fn)(b, e, index);
      lock.lock();
    }
    if (--pending_ == 0) cv_done_.notify_all();
  }
}

}  // namespace gsa

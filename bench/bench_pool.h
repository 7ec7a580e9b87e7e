// The thread pool the CPU benchmarks run on: every hardware thread, or GSA_BENCH_THREADS.
#pragma once

#include <cstdlib>

#include "core/thread_pool.h"

namespace gsa::bench {

inline ThreadPool& pool() {
  static ThreadPool p([] {
    const char* env = std::getenv("GSA_BENCH_THREADS");
    return env ? std::atoi(env) : 0;
  }());
  return p;
}

}  // namespace gsa::bench

// Owning, 64-byte aligned host buffers. Allocation failure is a Status, never an abort.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "core/status.h"

namespace gsa {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

/// A typed, aligned, zero-initialized array of n elements.
template <typename T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  static Result<AlignedBuffer<T>> make(size_t n) {
    AlignedBuffer<T> b;
    if (n == 0) return b;
    if (n > (SIZE_MAX - 63) / sizeof(T)) return out_of_memory("buffer of {} elements", n);
    const size_t bytes = (n * sizeof(T) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, bytes);
    if (!p) return out_of_memory("cannot allocate {} bytes", bytes);
    std::memset(p, 0, bytes);
    b.ptr_.reset(p);
    b.n_ = n;
    return b;
  }
  T* data() { return static_cast<T*>(ptr_.get()); }
  const T* data() const { return static_cast<const T*>(ptr_.get()); }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }
  T& operator[](size_t i) { return data()[i]; }
  const T& operator[](size_t i) const { return data()[i]; }

 private:
  std::unique_ptr<void, FreeDeleter> ptr_;
  size_t n_ = 0;
};

}  // namespace gsa

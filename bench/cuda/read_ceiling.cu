// The measured bandwidth ceiling of the card: a plain large read-only reduction (every byte read
// once with 16-byte loads, one partial sum per CTA), for the benchmarks' "% of ceiling" column.
#include <cuda_runtime.h>

#include <cstdint>

namespace gsa::bench {
namespace {

__global__ void read_reduce_kernel(const uint4* __restrict__ src,  // [n]
                                   int64_t n, uint32_t* __restrict__ out) {
  uint32_t acc = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcs(src + i);
    acc ^= v.x + v.y + v.z + v.w;
  }
  for (int o = 16; o > 0; o >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0) atomicXor(out + blockIdx.x % 1024, acc);
}

}  // namespace

/// Launches the reduction over `bytes` (a multiple of 16) of device memory on `stream`.
cudaError_t read_reduce(const void* src, size_t bytes, uint32_t* out_1024, int sm_count, cudaStream_t stream) {
  read_reduce_kernel<<<sm_count * 8, 512, 0, stream>>>(static_cast<const uint4*>(src), int64_t(bytes / 16), out_1024);
  return cudaGetLastError();
}

}  // namespace gsa::bench

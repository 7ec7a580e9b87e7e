// The CPU Backend: host memory, synchronous ops forwarding to the cpu:: kernels.
#include <cstdlib>
#include <cstring>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_kernels.h"

namespace gsa::backend {
namespace {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(ThreadPool* pool) : pool_(pool) {}
  DeviceKind kind() const override { return DeviceKind::Cpu; }
  const char* name() const override { return "cpu"; }
  bool supports_ggml_weights(uint32_t ggml_type) const override {
    return cpu::matmul_ggml_supported(ggml_type);
  }

  Result<void*> alloc(size_t bytes) override {
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    if (!p) return out_of_memory("cpu backend: cannot allocate {} bytes", bytes);
    return p;
  }
  void free(void* ptr) override { std::free(ptr); }
  Status upload(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
    return Status::ok();
  }
  Status download(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
    return Status::ok();
  }
  Status copy(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memmove(dst, src, bytes);
    return Status::ok();
  }
  Status synchronize() override { return Status::ok(); }

  Status matmul(const MatmulParams& p) override { return cpu::matmul(p, pool_); }
  Status rmsnorm(const RmsNormParams& p) override { return cpu::rmsnorm(p, pool_); }
  Status rope(const RopeParams& p) override { return cpu::rope(p, pool_); }
  Status kv_append(const KvAppendParams& p) override { return cpu::kv_append(p, pool_); }
  Status attention(const AttentionParams& p) override { return cpu::attention(p, pool_); }
  Status swiglu(const SwigluParams& p) override { return cpu::swiglu(p, pool_); }
  Status add(const AddParams& p) override { return cpu::add(p, pool_); }
  Status embed(const EmbedParams& p) override { return cpu::embed(p, pool_); }
  Status fill_random(const FillRandomParams& p) override { return cpu::fill_random(p, pool_); }
  Status argmax(const ArgmaxParams& p) override { return cpu::argmax(p, pool_); }
  Status rep_update(const RepUpdateParams& p) override { return cpu::rep_update(p, pool_); }
  Status block_select(const BlockSelectParams& p) override { return cpu::block_select(p, pool_); }

 private:
  ThreadPool* pool_;
};

}  // namespace

Status Backend::copy(void* dst, const void* src, size_t bytes) {
  std::vector<uint8_t> staging(bytes);
  GSA_RETURN_IF_ERROR(download(staging.data(), src, bytes));
  GSA_RETURN_IF_ERROR(upload(dst, staging.data(), bytes));
  return synchronize();
}

std::unique_ptr<Backend> make_cpu_backend(ThreadPool* pool) {
  return std::make_unique<CpuBackend>(pool);
}

}  // namespace gsa::backend

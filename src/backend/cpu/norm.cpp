// CPU RMSNorm over rows: y = x * (1 / sqrt(mean(x^2) + eps)) * w. The sum of squares is kept in
// double and the scale applied before the weight, in the order llama.cpp uses (rms_norm then
// mul), so logits can be compared with it closely. In place (x == y) is allowed.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_check.h"
#include "backend/cpu/cpu_kernels.h"

namespace gsa::cpu {
namespace {

using backend::RmsNormParams;

void rmsnorm_row(const float* x, const float* w, float* y, int64_t dim, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < dim; ++i) sum += double(x[i] * x[i]);
  const float mean = float(sum / double(dim));
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < dim; ++i) y[i] = (x[i] * scale) * w[i];
}

}  // namespace

Status rmsnorm(const RmsNormParams& p, ThreadPool* pool) {
  if (p.act_type != DType::F32) return unsupported("cpu rmsnorm: activations must be f32");
  if (p.n_rows < 0 || p.dim <= 0)
    return invalid_argument("rmsnorm: bad shape n_rows={} dim={}", p.n_rows, p.dim);
  if (!(p.eps >= 0.0f) || !std::isfinite(p.eps)) return invalid_argument("rmsnorm: bad eps {}", p.eps);
  if (!product_fits({p.n_rows, p.dim}))
    return invalid_argument("rmsnorm: shape too large (n_rows={} dim={})", p.n_rows, p.dim);
  if (p.n_rows == 0) return Status::ok();
  if (!p.x || !p.w || !p.y) return invalid_argument("rmsnorm: null pointer");
  const float* x = static_cast<const float*>(p.x);
  float* y = static_cast<float*>(p.y);
  const int64_t min_rows = std::max<int64_t>(1, 16384 / p.dim);
  pool->parallel_for(p.n_rows, [&](int64_t b, int64_t e, int) {
    for (int64_t r = b; r < e; ++r) rmsnorm_row(x + r * p.dim, p.w, y + r * p.dim, p.dim, p.eps);
  }, min_rows);
  return Status::ok();
}

}  // namespace gsa::cpu

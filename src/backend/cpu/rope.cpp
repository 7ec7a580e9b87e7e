// CPU rotary embedding, in place, both pair layouts of ops.h. Angles follow llama.cpp's float
// recurrence (theta_i = pos * theta_scale^i by repeated multiplication, theta_scale =
// theta^(-2/rot_dim), cosf/sinf), so our logits track llama.cpp's; nothing is cached globally.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_check.h"
#include "backend/cpu/cpu_kernels.h"

namespace gsa::cpu {

using backend::RopeParams;

Status rope(const RopeParams& p, ThreadPool* pool) {
  if (p.act_type != DType::F32) return unsupported("cpu rope: activations must be f32");
  if (p.n_tokens < 0 || p.n_heads <= 0 || p.head_dim <= 0)
    return invalid_argument("rope: bad shape n_tokens={} n_heads={} head_dim={}", p.n_tokens,
                            p.n_heads, p.head_dim);
  if (p.rot_dim <= 0 || p.rot_dim > p.head_dim || p.rot_dim % 2 != 0)
    return invalid_argument("rope: rot_dim {} must be even and in (0, head_dim={}]", p.rot_dim, p.head_dim);
  if (!(p.theta > 0.0f) || !std::isfinite(p.theta)) return invalid_argument("rope: bad theta {}", p.theta);
  if (!product_fits({p.n_tokens, p.n_heads, p.head_dim}))
    return invalid_argument("rope: shape too large (n_tokens={} n_heads={} head_dim={})", p.n_tokens,
                            p.n_heads, p.head_dim);
  if (p.n_tokens == 0) return Status::ok();
  if (!p.x || !p.pos) return invalid_argument("rope: null pointer");
  float* x = static_cast<float*>(p.x);
  const int half = p.rot_dim / 2;
  const float theta_scale = std::pow(p.theta, -2.0f / float(p.rot_dim));
  pool->parallel_for(p.n_tokens, [&](int64_t b, int64_t e, int) {
    std::vector<float> cs(size_t(2 * half));  // (cos, sin) of each pair
    for (int64_t t = b; t < e; ++t) {
      float angle = float(p.pos[t]);
      for (int i = 0; i < half; ++i) {
        cs[2 * i] = std::cos(angle);
        cs[2 * i + 1] = std::sin(angle);
        angle *= theta_scale;
      }
      for (int h = 0; h < p.n_heads; ++h) {
        float* v = x + (t * p.n_heads + h) * p.head_dim;
        const int stride = p.neox ? half : 1;  // distance between the two members of a pair
        for (int i = 0; i < half; ++i) {
          float* a = p.neox ? v + i : v + 2 * i;
          const float c = cs[2 * i], s = cs[2 * i + 1];
          const float x0 = a[0], x1 = a[stride];
          a[0] = x0 * c - x1 * s;
          a[stride] = x0 * s + x1 * c;
        }
      }
    }
  }, std::max<int64_t>(1, 4096 / (int64_t(p.n_heads) * p.head_dim)));
  return Status::ok();
}

}  // namespace gsa::cpu

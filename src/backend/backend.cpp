// Default implementations of Backend's composite ops, in terms of its primitive ops. Backends
// with a fused kernel override them; the CPU backend uses these as they are.
#include "backend/backend.h"

namespace gsa::backend {

Status Backend::rope_append(const RopeAppendParams& p) {
  if (p.strided()) return unsupported("{} rope_append: strided inputs need the fused decode path", name());
  const RopeAppendSteps s = split_rope_append(p);
  GSA_RETURN_IF_ERROR(rope(s.rope_q));
  GSA_RETURN_IF_ERROR(rope(s.rope_k));
  GSA_RETURN_IF_ERROR(kv_append(s.append));
  if (s.update) GSA_RETURN_IF_ERROR(rep_update(s.rep));
  return Status::ok();
}

Status Backend::add_rmsnorm(const AddRmsNormParams& p) {
  GSA_RETURN_IF_ERROR(add({p.x, p.y, p.n_rows * p.dim, p.act_type}));
  return rmsnorm({p.y, p.w, p.out, p.n_rows, p.dim, p.eps, p.act_type});
}

Status Backend::copy_2d(void* dst, size_t dst_pitch, const void* src, size_t src_pitch,
                        size_t width, size_t rows) {
  for (size_t r = 0; r < rows; ++r)
    GSA_RETURN_IF_ERROR(copy(static_cast<char*>(dst) + r * dst_pitch,
                             static_cast<const char*>(src) + r * src_pitch, width));
  return Status::ok();
}

}  // namespace gsa::backend

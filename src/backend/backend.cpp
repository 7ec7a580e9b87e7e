// Default implementations of Backend's composite ops, in terms of its primitive ops. Backends
// with a fused kernel override them; the CPU backend uses these as they are.
#include "backend/backend.h"

namespace gsa::backend {

Status Backend::rope_append(const RopeAppendParams& p) {
  const RopeAppendSteps s = split_rope_append(p);
  GSA_RETURN_IF_ERROR(rope(s.rope_q));
  GSA_RETURN_IF_ERROR(rope(s.rope_k));
  GSA_RETURN_IF_ERROR(kv_append(s.append));
  if (s.update) GSA_RETURN_IF_ERROR(rep_update(s.rep));
  return Status::ok();
}

}  // namespace gsa::backend

// Qwen2 architecture (Qwen2.5 and its Coder models): Llama plus biases on the q, k and v
// projections, and NeoX-style RoPE (pairs (i, i + rot_dim / 2)).
#include "model/hparams.h"

namespace gsa::model {

Result<HParams> qwen2_hparams(const gguf::GgufFile& f) {
  HParams hp;
  hp.arch = Arch::Qwen2;
  GSA_RETURN_IF_ERROR(read_common_hparams(f, "qwen2", &hp));
  hp.rope_neox = true;
  hp.qkv_bias = true;
  hp.qk_norm = false;
  return hp;
}

}  // namespace gsa::model

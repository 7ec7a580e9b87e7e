// Qwen3 architecture: no qkv biases, an RMSNorm over each q and k head (weights of head_dim)
// before RoPE, NeoX-style RoPE, head_dim from attention.key_length (may differ from dim/heads).
#include "model/hparams.h"

namespace gsa::model {

Result<HParams> qwen3_hparams(const gguf::GgufFile& f) {
  HParams hp;
  hp.arch = Arch::Qwen3;
  GSA_RETURN_IF_ERROR(read_common_hparams(f, "qwen3", &hp));
  hp.rope_neox = true;
  hp.qkv_bias = false;
  hp.qk_norm = true;
  return hp;
}

}  // namespace gsa::model

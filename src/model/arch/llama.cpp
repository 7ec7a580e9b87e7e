// Llama architecture (also SmolLM2): RMSNorm, GQA, SwiGLU, RoPE on adjacent pairs (GGUF
// converters permute q/k rows so that llama.cpp's normal RoPE applies), no biases.
#include "model/hparams.h"

namespace gsa::model {

Result<HParams> llama_hparams(const gguf::GgufFile& f) {
  HParams hp;
  hp.arch = Arch::Llama;
  GSA_RETURN_IF_ERROR(read_common_hparams(f, "llama", &hp));
  hp.rope_neox = false;
  hp.qkv_bias = false;
  hp.qk_norm = false;
  return hp;
}

}  // namespace gsa::model

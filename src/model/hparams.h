// Model hyperparameters and the per-architecture description (which tensors exist, how RoPE
// rotates). Read from GGUF metadata by the arch/ files; one file per architecture.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"
#include "gguf/gguf.h"

namespace gsa::model {

enum class Arch { Llama, Qwen2, Qwen3 };

const char* arch_name(Arch a);

struct HParams {
  Arch arch = Arch::Llama;
  int n_layers = 0;
  int dim = 0;          // hidden size
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int ffn_dim = 0;
  int vocab = 0;
  int ctx_len = 0;      // trained context length
  int rot_dim = 0;      // rotated dims per head
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;
  bool rope_neox = false;   // pairs (i, i + rot_dim/2) instead of (2i, 2i+1)
  bool qkv_bias = false;    // Qwen2
  bool qk_norm = false;     // Qwen3: RMSNorm on each q and k head before RoPE
  bool tied_output = false; // output projection shares token_embd

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  /// Checks internal consistency (divisibility, positive sizes).
  Status validate() const;
  /// Parameter count of the weights.
  int64_t n_params() const;
};

/// Reads general.architecture and the arch's hyperparameters; Unsupported for other archs.
Result<HParams> hparams_from_gguf(const gguf::GgufFile& f);

/// Hyperparameters of well-known shapes, for synthetic-weight benchmarks:
/// "smollm2-135m", "qwen2.5-0.5b", "qwen2.5-7b".
Result<HParams> hparams_preset(const std::string& name);

// Per-arch readers (arch/*.cpp).
Result<HParams> llama_hparams(const gguf::GgufFile& f);
Result<HParams> qwen2_hparams(const gguf::GgufFile& f);
Result<HParams> qwen3_hparams(const gguf::GgufFile& f);

/// Shared by the arch readers: reads "<prefix>.block_count" etc. into hp.
Status read_common_hparams(const gguf::GgufFile& f, const std::string& prefix, HParams* hp);

}  // namespace gsa::model

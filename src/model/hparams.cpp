// Hyperparameter reading shared by all architectures, validation and presets.
#include "model/hparams.h"

namespace gsa::model {

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::Llama: return "llama";
    case Arch::Qwen2: return "qwen2";
    case Arch::Qwen3: return "qwen3";
  }
  return "?";
}

Status HParams::validate() const {
  if (n_layers <= 0 || dim <= 0 || n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0 ||
      ffn_dim <= 0 || vocab <= 0)
    return invalid_argument(
        "hyperparameters must be positive: layers {}, dim {}, heads {}, kv heads {}, head dim {}, "
        "ffn {}, vocab {}", n_layers, dim, n_heads, n_kv_heads, head_dim, ffn_dim, vocab);
  if (n_heads % n_kv_heads != 0)
    return invalid_argument("head count {} is not a multiple of the kv head count {}", n_heads,
                            n_kv_heads);
  if (rot_dim <= 0 || rot_dim > head_dim || rot_dim % 2 != 0)
    return invalid_argument("rope dimension {} must be even and in (0, {}]", rot_dim, head_dim);
  if (n_layers > 1024 || dim > 65536 || n_heads > 1024 || head_dim > 1024 || ffn_dim > 1 << 20 ||
      vocab > 1 << 22)
    return invalid_argument("hyperparameters out of range (layers {}, dim {}, heads {}, head dim {})",
                            n_layers, dim, n_heads, head_dim);
  if (!(norm_eps > 0.0f) || !(rope_theta > 0.0f))
    return invalid_argument("norm epsilon {} and rope theta {} must be positive", norm_eps, rope_theta);
  return Status::ok();
}

int64_t HParams::n_params() const {
  const int64_t attn = int64_t(dim) * q_dim() * 2 + int64_t(dim) * kv_dim() * 2;
  const int64_t ffn = int64_t(dim) * ffn_dim * 3;
  const int64_t embd = int64_t(vocab) * dim * (tied_output ? 1 : 2);
  return int64_t(n_layers) * (attn + ffn + 2 * dim) + embd + dim;
}

Status read_common_hparams(const gguf::GgufFile& f, const std::string& p, HParams* hp) {
  auto u32 = [&](const std::string& key, int* out) -> Status {
    auto v = f.get_u32(p + key);
    if (!v) return v.status();
    *out = int(*v);
    return Status::ok();
  };
  GSA_RETURN_IF_ERROR(u32(".block_count", &hp->n_layers));
  GSA_RETURN_IF_ERROR(u32(".embedding_length", &hp->dim));
  GSA_RETURN_IF_ERROR(u32(".feed_forward_length", &hp->ffn_dim));
  GSA_RETURN_IF_ERROR(u32(".attention.head_count", &hp->n_heads));
  hp->n_kv_heads = hp->n_heads;
  if (f.find(p + ".attention.head_count_kv"))
    GSA_RETURN_IF_ERROR(u32(".attention.head_count_kv", &hp->n_kv_heads));
  hp->ctx_len = 2048;
  if (f.find(p + ".context_length")) GSA_RETURN_IF_ERROR(u32(".context_length", &hp->ctx_len));
  if (hp->n_heads <= 0) return invalid_argument("{}.attention.head_count must be positive", p);
  hp->head_dim = hp->dim / hp->n_heads;
  if (f.find(p + ".attention.key_length"))
    GSA_RETURN_IF_ERROR(u32(".attention.key_length", &hp->head_dim));
  hp->rot_dim = hp->head_dim;
  if (f.find(p + ".rope.dimension_count"))
    GSA_RETURN_IF_ERROR(u32(".rope.dimension_count", &hp->rot_dim));
  if (f.find(p + ".rope.freq_base")) {
    GSA_ASSIGN_OR_RETURN(hp->rope_theta, f.get_f32(p + ".rope.freq_base"));
  }
  GSA_ASSIGN_OR_RETURN(hp->norm_eps, f.get_f32(p + ".attention.layer_norm_rms_epsilon"));
  // The vocabulary size comes from the embedding tensor, which every file has.
  const gguf::TensorInfo* emb = f.find_tensor("token_embd.weight");
  if (!emb) return not_found("tensor 'token_embd.weight' is missing");
  if (emb->shape.size() != 2 || emb->shape[0] != hp->dim)
    return invalid_argument("tensor 'token_embd.weight': expected [{}, vocab], got {} dims", hp->dim,
                            emb->shape.size());
  hp->vocab = int(emb->shape[1]);
  hp->tied_output = f.find_tensor("output.weight") == nullptr;
  return Status::ok();
}

Result<HParams> hparams_from_gguf(const gguf::GgufFile& f) {
  GSA_ASSIGN_OR_RETURN(std::string arch, f.get_string("general.architecture"));
  Result<HParams> hp = Status(StatusCode::Internal, "unset");
  if (arch == "llama") hp = llama_hparams(f);
  else if (arch == "qwen2") hp = qwen2_hparams(f);
  else if (arch == "qwen3") hp = qwen3_hparams(f);
  else return unsupported("architecture '{}' is not supported (llama, qwen2, qwen3 are)", arch);
  if (!hp) return hp.status();
  GSA_RETURN_IF_ERROR(hp->validate());
  return hp;
}

Result<HParams> hparams_preset(const std::string& name) {
  HParams hp;
  if (name == "smollm2-135m") {
    hp = {Arch::Llama, 30, 576, 9, 3, 64, 1536, 49152, 8192, 64, 100000.0f, 1e-5f,
          false, false, false, true};
  } else if (name == "qwen2.5-0.5b") {
    hp = {Arch::Qwen2, 24, 896, 14, 2, 64, 4864, 151936, 32768, 64, 1000000.0f, 1e-6f,
          true, true, false, true};
  } else if (name == "qwen2.5-7b") {
    hp = {Arch::Qwen2, 28, 3584, 28, 4, 128, 18944, 152064, 131072, 128, 1000000.0f, 1e-6f,
          true, true, false, false};
  } else {
    return invalid_argument("unknown shape preset '{}' (smollm2-135m, qwen2.5-0.5b, qwen2.5-7b)", name);
  }
  return hp;
}

}  // namespace gsa::model

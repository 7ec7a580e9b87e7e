// `gsa info [MODEL]`: architecture, hyperparameters, tokenizer and a tensor summary.
#include <cstdio>
#include <map>

#include "cli/common.h"
#include "model/hparams.h"
#include "tokenizer/tokenizer.h"

namespace gsa::cli {

int run_info(CLI::App*, const std::string& model) {
  auto path = resolve_model(model);
  if (!path) return fail(path.status());
  auto f = gguf::GgufFile::open(*path);
  if (!f) return fail(f.status());
  std::printf("file:          %s\n", path->c_str());
  std::printf("gguf version:  %u, %llu bytes, %zu metadata keys, %zu tensors\n", f->version(),
              (unsigned long long)f->file_size(), f->metadata().size(), f->tensors().size());
  if (auto name = f->get_string("general.name")) std::printf("name:          %s\n", name->c_str());
  if (auto lic = f->get_string("general.license")) std::printf("license:       %s\n", lic->c_str());
  auto hp = model::hparams_from_gguf(*f);
  if (!hp) return fail(hp.status());
  const model::HParams& h = *hp;
  std::printf("architecture:  %s\n", model::arch_name(h.arch));
  std::printf("layers:        %d\n", h.n_layers);
  std::printf("hidden:        %d\n", h.dim);
  std::printf("heads:         %d query, %d kv (GQA %d), head dim %d\n", h.n_heads, h.n_kv_heads,
              h.n_heads / h.n_kv_heads, h.head_dim);
  std::printf("ffn:           %d\n", h.ffn_dim);
  std::printf("vocab:         %d\n", h.vocab);
  std::printf("context:       %d\n", h.ctx_len);
  std::printf("rope:          theta %.0f, %d dims, %s\n", h.rope_theta, h.rot_dim,
              h.rope_neox ? "neox pairs" : "adjacent pairs");
  std::printf("norm eps:      %g\n", h.norm_eps);
  std::printf("qkv bias:      %s, qk norm: %s, tied output: %s\n", h.qkv_bias ? "yes" : "no",
              h.qk_norm ? "yes" : "no", h.tied_output ? "yes" : "no");
  std::printf("parameters:    %.1f M\n", double(h.n_params()) / 1e6);
  auto tok = tokenizer::Tokenizer::from_gguf(*f);
  if (!tok) {
    std::printf("tokenizer:     unsupported (%s)\n", tok.status().message().c_str());
  } else {
    std::printf("tokenizer:     byte-level BPE, pre '%s', %d tokens, bos %d, eos %d, add bos %s\n",
                tok->pre().c_str(), tok->n_vocab(), tok->bos_id(), tok->eos_id(),
                tok->add_bos() ? "yes" : "no");
    std::printf("chat template: %s\n", tok->chat_template().empty() ? "none" : "present");
  }
  std::map<std::string, std::pair<int, uint64_t>> by_type;
  for (const auto& t : f->tensors()) {
    auto& e = by_type[gguf::ggml_type_name(t.type)];
    e.first++;
    e.second += t.n_bytes;
  }
  std::printf("tensors by type:\n");
  for (const auto& [type, e] : by_type)
    std::printf("  %-6s %4d tensors  %8.1f MiB\n", type.c_str(), e.first, double(e.second) / (1 << 20));
  return 0;
}

}  // namespace gsa::cli

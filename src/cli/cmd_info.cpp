// `gsa info [MODEL]`: architecture, hyperparameters, tokenizer and a tensor summary. Metadata
// strings are shown with non-printable bytes escaped (\xNN), saying so.
#include <cstdio>
#include <map>
#include <string>
#include <string_view>

#include "cli/common.h"
#include "model/hparams.h"
#include "tokenizer/tokenizer.h"

namespace gsa::cli {

namespace {

// Length of the valid UTF-8 sequence at s[i] that prints as text, or 0: C1 controls
// (U+0080-U+009F) and the bidirectional overrides (U+202A-U+202E, U+2066-U+2069), which can
// reorder or hide what a terminal shows, count as non-printable.
size_t printable_utf8(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const auto cont = [&](size_t k) { return i + k < s.size() && (b(k) & 0xC0) == 0x80; };
  const unsigned char c = b(0);
  if (c >= 0xC2 && c <= 0xDF && cont(1)) return (c == 0xC2 && b(1) < 0xA0) ? 0 : 2;
  if (c >= 0xE0 && c <= 0xEF && cont(1) && cont(2)) {
    if ((c == 0xE0 && b(1) < 0xA0) || (c == 0xED && b(1) >= 0xA0)) return 0;  // overlong, surrogate
    if (c == 0xE2 && b(1) == 0x80 && b(2) >= 0xAA && b(2) <= 0xAE) return 0;
    if (c == 0xE2 && b(1) == 0x81 && b(2) >= 0xA6 && b(2) <= 0xA9) return 0;
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4 && cont(1) && cont(2) && cont(3)) {
    if ((c == 0xF0 && b(1) < 0x90) || (c == 0xF4 && b(1) >= 0x90)) return 0;  // overlong, > U+10FFFF
    return 4;
  }
  return 0;
}

// s for a terminal: printable ASCII and printable UTF-8 as they are, every other byte as \xNN
// (then with a note of why, and backslashes doubled so the escapes read unambiguously).
std::string printable(std::string_view s) {
  std::string out;
  bool escaped = false;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7F) {
      out += c == '\\' ? "\\\\" : std::string(1, char(c));
      ++i;
    } else if (const size_t n = c >= 0x80 ? printable_utf8(s, i) : 0; n > 0) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += fmt::format("\\x{:02x}", c);
      escaped = true;
      ++i;
    }
  }
  if (!escaped) return std::string(s);
  return out + " (non-printable bytes shown escaped)";
}

}  // namespace

int run_info(CLI::App*, const std::string& model) {
  auto path = resolve_model(model);
  if (!path) return fail(path.status());
  auto f = gguf::GgufFile::open(*path);
  if (!f) return fail(f.status());
  std::printf("file:          %s\n", path->c_str());
  std::printf("gguf version:  %u, %llu bytes, %zu metadata keys, %zu tensors\n", f->version(),
              (unsigned long long)f->file_size(), f->metadata().size(), f->tensors().size());
  // Metadata strings are untrusted bytes: control characters would reach the terminal.
  if (auto name = f->get_string("general.name")) std::printf("name:          %s\n", printable(*name).c_str());
  if (auto lic = f->get_string("general.license")) std::printf("license:       %s\n", printable(*lic).c_str());
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
    std::printf("tokenizer:     unsupported (%s)\n", printable(tok.status().message()).c_str());
  } else {
    std::printf("tokenizer:     byte-level BPE, pre '%s', %d tokens, bos %d, eos %d, add bos %s\n",
                printable(tok->pre()).c_str(), tok->n_vocab(), tok->bos_id(), tok->eos_id(),
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

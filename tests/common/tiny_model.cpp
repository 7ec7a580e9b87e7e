// Tiny synthetic GGUF models for tests.
#include "tiny_model.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <cmath>
#include <cstring>
#include <random>
#include <unistd.h>

#include "core/dtype.h"
#include "gguf/gguf.h"

namespace gsa::testing {

namespace {

// GPT-2's byte -> printable code point mapping, as UTF-8 strings.
std::vector<std::string> byte_tokens() {
  std::vector<int> cps(256, -1);
  for (int b = 33; b <= 126; ++b) cps[size_t(b)] = b;
  for (int b = 161; b <= 172; ++b) cps[size_t(b)] = b;
  for (int b = 174; b <= 255; ++b) cps[size_t(b)] = b;
  int next = 256;
  for (int b = 0; b < 256; ++b)
    if (cps[size_t(b)] < 0) cps[size_t(b)] = next++;
  std::vector<std::string> out;
  for (int cp : cps) {
    std::string s;
    if (cp < 0x80) {
      s += char(cp);
    } else {
      s += char(0xC0 | (cp >> 6));
      s += char(0x80 | (cp & 0x3F));
    }
    out.push_back(s);
  }
  return out;
}

}  // namespace

std::vector<uint8_t> make_tiny_model(const TinyModelSpec& s) {
  gguf::GgufWriter w;
  const std::string a = s.arch;
  w.set_string("general.architecture", a);
  w.set_string("general.name", "tiny-" + a);
  w.set_u32(a + ".block_count", uint32_t(s.n_layers));
  w.set_u32(a + ".embedding_length", uint32_t(s.dim));
  w.set_u32(a + ".feed_forward_length", uint32_t(s.ffn_dim));
  w.set_u32(a + ".attention.head_count", uint32_t(s.n_heads));
  w.set_u32(a + ".attention.head_count_kv", uint32_t(s.n_kv_heads));
  w.set_u32(a + ".context_length", uint32_t(s.ctx_len));
  w.set_f32(a + ".rope.freq_base", 10000.0f);
  w.set_f32(a + ".attention.layer_norm_rms_epsilon", 1e-5f);

  std::vector<std::string> tokens = byte_tokens();
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"t", "h"}, {"th", "e"}, {"Ġ", "t"}, {"Ġt", "h"}, {"Ġth", "e"}, {"i", "n"}, {"a", "n"},
      {"e", "r"}, {"o", "n"}, {"Ġ", "a"}, {"r", "e"}};
  std::vector<std::string> merge_strs;
  for (const auto& [l, r] : merges) {
    merge_strs.push_back(l + " " + r);
    tokens.push_back(l + r);
  }
  std::vector<int32_t> types(tokens.size(), 1);
  const int32_t eos = int32_t(tokens.size());
  for (const char* sp : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}) {
    tokens.push_back(sp);
    types.push_back(3);
  }
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", "default");
  w.set_string_array("tokenizer.ggml.tokens", tokens);
  w.set_i32_array("tokenizer.ggml.token_type", types);
  w.set_string_array("tokenizer.ggml.merges", merge_strs);
  w.set_u32("tokenizer.ggml.bos_token_id", uint32_t(eos));
  w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(eos));
  w.set_bool("tokenizer.ggml.add_bos_token", false);

  const int vocab = int(tokens.size());
  const int hd = s.dim / s.n_heads;
  std::mt19937 rng(uint32_t(s.seed));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto rnd = [&](size_t n, float scale) {
    std::vector<float> v(n);
    for (auto& x : v) x = u(rng) * scale;
    return v;
  };
  auto norm = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = 1.0f + 0.2f * u(rng);
    return v;
  };
  // Half of the matrices are stored as F16 to exercise the dequantizing load path.
  auto add_mat = [&](const std::string& name, int in, int out, bool f16) {
    auto v = rnd(size_t(in) * out, 1.0f / std::sqrt(float(in)) * 1.5f);
    if (!f16) {
      w.add_tensor_f32(name, {in, out}, v);
      return;
    }
    std::vector<uint8_t> bytes(v.size() * 2);
    for (size_t i = 0; i < v.size(); ++i) {
      const uint16_t h = f32_to_f16(v[i]);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
    w.add_tensor(name, {in, out}, gguf::GgmlType::F16, std::move(bytes));
  };
  add_mat("token_embd.weight", s.dim, vocab, false);
  if (!s.tied) add_mat("output.weight", s.dim, vocab, true);
  w.add_tensor_f32("output_norm.weight", {s.dim}, norm(size_t(s.dim)));
  for (int l = 0; l < s.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    w.add_tensor_f32(p + "attn_norm.weight", {s.dim}, norm(size_t(s.dim)));
    add_mat(p + "attn_q.weight", s.dim, s.n_heads * hd, l % 2 == 0);
    add_mat(p + "attn_k.weight", s.dim, s.n_kv_heads * hd, l % 2 == 1);
    add_mat(p + "attn_v.weight", s.dim, s.n_kv_heads * hd, false);
    if (a == "qwen2") {
      w.add_tensor_f32(p + "attn_q.bias", {s.n_heads * hd}, rnd(size_t(s.n_heads * hd), 0.3f));
      w.add_tensor_f32(p + "attn_k.bias", {s.n_kv_heads * hd}, rnd(size_t(s.n_kv_heads * hd), 0.3f));
      w.add_tensor_f32(p + "attn_v.bias", {s.n_kv_heads * hd}, rnd(size_t(s.n_kv_heads * hd), 0.3f));
    }
    if (a == "qwen3") {
      w.add_tensor_f32(p + "attn_q_norm.weight", {hd}, norm(size_t(hd)));
      w.add_tensor_f32(p + "attn_k_norm.weight", {hd}, norm(size_t(hd)));
    }
    add_mat(p + "attn_output.weight", s.n_heads * hd, s.dim, true);
    w.add_tensor_f32(p + "ffn_norm.weight", {s.dim}, norm(size_t(s.dim)));
    add_mat(p + "ffn_gate.weight", s.dim, s.ffn_dim, false);
    add_mat(p + "ffn_up.weight", s.dim, s.ffn_dim, true);
    add_mat(p + "ffn_down.weight", s.ffn_dim, s.dim, false);
  }
  return w.finish();
}

std::string write_tiny_model(const TinyModelSpec& spec, const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("gsa-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / (name + ".gguf")).string();
  auto bytes = make_tiny_model(spec);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return {};
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
  return path;
}

}  // namespace gsa::testing

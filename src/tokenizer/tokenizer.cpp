// Tokenizer construction from TokenizerData, encoding (special-token partition, pre-tokenizer,
// rank-ordered BPE merges with a word cache), decoding and the streaming decoder.
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <mutex>
#include <unordered_map>

#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/unicode.h"

namespace gsa::tokenizer {

namespace {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using IdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

constexpr size_t kMaxVocab = size_t{1} << 24;
constexpr size_t kMaxMerges = size_t{1} << 24;
constexpr size_t kCacheMaxWords = 1 << 16;
constexpr size_t kCacheMaxWordBytes = 64;

// Control tokens that end a turn in the chat formats gsa knows, whatever the metadata says.
constexpr std::array<std::string_view, 8> kEndOfTurnTexts = {
    "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>",
    "<|end_of_text|>", "<end_of_turn>", "<|end|>", "<EOT>"};

}  // namespace

struct BpeTables {
  struct Merge {
    int32_t rank;
    int32_t merged;
  };
  struct Special {
    std::string text;
    int32_t id;
    bool needs_parse_special;  // control / unknown tokens; user-defined ones always match
  };
  std::array<int32_t, 256> byte_ids{};     // token of each single byte
  IdMap normal_ids;                        // raw bytes -> id, tokens BPE may produce
  IdMap all_ids;                           // raw bytes -> id, every token (first one wins)
  std::unordered_map<uint64_t, Merge> merges;  // (left id, right id) -> rank and result
  std::array<std::vector<Special>, 256> specials;  // by first byte, longest first
  bool ignore_merges = false;

  // Word cache: piece bytes -> ids. Bounded; cleared when full.
  mutable std::mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>>
      cache;
};

Result<Tokenizer> Tokenizer::from_data(TokenizerData d) {
  if (d.model != "gpt2") {
    return unsupported("tokenizer model '{}' is not supported (only byte-level BPE, 'gpt2')",
                       d.model);
  }
  const size_t n = d.tokens.size();
  if (n == 0) return invalid_argument("tokenizer: the vocabulary is empty");
  if (n > kMaxVocab) {
    return invalid_argument("tokenizer: {} tokens exceeds the limit of {}", n, kMaxVocab);
  }
  if (!d.token_types.empty() && d.token_types.size() != n) {
    return invalid_argument("tokenizer: {} token types for {} tokens", d.token_types.size(), n);
  }
  if (d.merges.size() > kMaxMerges) {
    return invalid_argument("tokenizer: {} merges exceeds the limit of {}", d.merges.size(),
                            kMaxMerges);
  }
  const std::pair<const char*, int32_t> ids[] = {
      {"bos", d.bos_id}, {"eos", d.eos_id}, {"eot", d.eot_id}, {"pad", d.pad_id}};
  for (const auto& [name, id] : ids) {
    if (id < -1 || id >= static_cast<int64_t>(n)) {
      return invalid_argument("tokenizer: {} token id {} is out of range for {} tokens", name, id,
                              n);
    }
  }
  if (d.add_bos && d.bos_id < 0) {
    return invalid_argument("tokenizer: add_bos_token is set but there is no bos token id");
  }
  if (d.add_eos && d.eos_id < 0) {
    return invalid_argument("tokenizer: add_eos_token is set but there is no eos token id");
  }

  Tokenizer t;
  GSA_ASSIGN_OR_RETURN(t.pre_tokenizer_, PreTokenizer::create(d.pre));
  auto tables = std::make_shared<BpeTables>();
  tables->ignore_merges = d.ignore_merges;
  t.pieces_.resize(n);
  t.types_.resize(n, TokenType::Normal);
  IdMap text_ids;  // byte-level text -> id, for resolving merges
  text_ids.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const auto id = static_cast<int32_t>(i);
    if (!d.token_types.empty()) {
      const int32_t ty = d.token_types[i];
      if (ty < 0 || ty > static_cast<int32_t>(TokenType::Byte)) {
        return invalid_argument("tokenizer: token {} has unknown type {}", i, ty);
      }
      t.types_[i] = static_cast<TokenType>(ty);
    }
    const TokenType ty = t.types_[i];
    const bool special = ty == TokenType::Control || ty == TokenType::UserDefined ||
                         ty == TokenType::Unknown;
    // Special tokens are stored as their plain text, the others in byte-level form.
    t.pieces_[i] = special ? d.tokens[i] : byte_level_decode(d.tokens[i]);
    text_ids.emplace(d.tokens[i], id);
    tables->all_ids.emplace(t.pieces_[i], id);
    if (special) {
      if (!d.tokens[i].empty()) {
        const auto first = static_cast<uint8_t>(d.tokens[i][0]);
        tables->specials[first].push_back({d.tokens[i], id, ty != TokenType::UserDefined});
      }
    } else {
      tables->normal_ids.emplace(t.pieces_[i], id);
    }
  }
  for (auto& bucket : tables->specials) {
    std::stable_sort(bucket.begin(), bucket.end(), [](const auto& a, const auto& b) {
      return a.text.size() > b.text.size();
    });
  }
  // Some vocabularies lack a few byte tokens (SmolLM2 has no token for 21 bytes, mostly ones
  // that never occur in UTF-8). Such bytes are dropped, as llama.cpp and HF tokenizers do.
  int missing_bytes = 0;
  for (int b = 0; b < 256; ++b) {
    const auto it = tables->normal_ids.find(std::string(1, static_cast<char>(b)));
    tables->byte_ids[b] = it == tables->normal_ids.end() ? -1 : it->second;
    missing_bytes += it == tables->normal_ids.end();
  }
  if (missing_bytes == 256) {
    return invalid_argument("tokenizer: the vocabulary has no single-byte tokens; it is not a "
                            "byte-level BPE vocabulary");
  }
  tables->merges.reserve(d.merges.size());
  std::string joined;
  for (size_t r = 0; r < d.merges.size(); ++r) {
    const std::string& m = d.merges[r];
    const size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
    if (sp == std::string::npos || sp + 1 >= m.size()) {
      return invalid_argument("tokenizer: merge {} ('{}') is not two space-separated parts", r,
                              m.substr(0, 64));
    }
    const std::string_view left(m.data(), sp);
    const std::string_view right(m.data() + sp + 1, m.size() - sp - 1);
    joined.assign(left).append(right);
    const auto l = text_ids.find(left);
    const auto rt = text_ids.find(right);
    const auto j = text_ids.find(joined);
    // A merge naming tokens the vocabulary lacks can never apply; skip it as HF would reject it
    // only at load time, and llama.cpp ignores it.
    if (l == text_ids.end() || rt == text_ids.end() || j == text_ids.end()) continue;
    tables->merges.emplace(pair_key(l->second, rt->second),
                           BpeTables::Merge{static_cast<int32_t>(r), j->second});
  }

  t.bos_id_ = d.bos_id;
  t.eos_id_ = d.eos_id;
  t.eot_id_ = d.eot_id;
  t.pad_id_ = d.pad_id;
  t.add_bos_ = d.add_bos;
  t.add_eos_ = d.add_eos;
  t.pre_ = std::move(d.pre);
  t.chat_template_ = std::move(d.chat_template);
  for (int32_t id : {d.eos_id, d.eot_id}) {
    if (id >= 0) t.eog_ids_.push_back(id);
  }
  for (std::string_view text : kEndOfTurnTexts) {
    const auto it = tables->all_ids.find(text);
    if (it != tables->all_ids.end() && t.types_[it->second] == TokenType::Control) {
      t.eog_ids_.push_back(it->second);
    }
  }
  std::sort(t.eog_ids_.begin(), t.eog_ids_.end());
  t.eog_ids_.erase(std::unique(t.eog_ids_.begin(), t.eog_ids_.end()), t.eog_ids_.end());
  t.bpe_ = std::move(tables);
  return t;
}

void Tokenizer::encode_piece(std::string_view piece, std::vector<int32_t>* out) const {
  const BpeTables& tb = *bpe_;
  if (piece.empty()) return;
  if (piece.size() == 1) {
    const int32_t id = tb.byte_ids[static_cast<uint8_t>(piece[0])];
    if (id >= 0) out->push_back(id);
    return;
  }
  if (tb.ignore_merges) {
    const auto it = tb.normal_ids.find(piece);
    if (it != tb.normal_ids.end()) {
      out->push_back(it->second);
      return;
    }
  }
  const bool cacheable = piece.size() <= kCacheMaxWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(tb.cache_mu);
    const auto it = tb.cache.find(piece);
    if (it != tb.cache.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }

  // Symbols form a linked list over the piece's bytes; candidate merges sit in a min-heap by
  // (rank, position). Stale candidates are detected when popped, so a merge costs O(log n).
  struct Symbol {
    int32_t id;  // -1: a byte without a token, or merged away
    int32_t prev;
    int32_t next;
  };
  struct Candidate {
    int32_t rank;
    int32_t left;
    int32_t right;
    int32_t left_id;
    int32_t right_id;
    int32_t merged;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  thread_local std::vector<Symbol> syms;
  thread_local std::vector<Candidate> heap;
  const auto n = static_cast<int32_t>(piece.size());
  syms.resize(n);
  for (int32_t i = 0; i < n; ++i) {
    syms[i] = {tb.byte_ids[static_cast<uint8_t>(piece[i])], i - 1, i + 1 < n ? i + 1 : -1};
  }
  heap.clear();
  auto try_add = [&](int32_t left, int32_t right) {
    // A byte without a token (id -1) is a barrier: nothing merges across it.
    if (left < 0 || right < 0 || syms[left].id < 0 || syms[right].id < 0) return;
    const auto it = tb.merges.find(pair_key(syms[left].id, syms[right].id));
    if (it == tb.merges.end()) return;
    heap.push_back({it->second.rank, left, right, syms[left].id, syms[right].id,
                    it->second.merged});
    std::push_heap(heap.begin(), heap.end(), std::greater<>{});
  };
  for (int32_t i = 0; i + 1 < n; ++i) try_add(i, i + 1);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>{});
    const Candidate c = heap.back();
    heap.pop_back();
    Symbol& l = syms[c.left];
    Symbol& r = syms[c.right];
    if (l.id != c.left_id || r.id != c.right_id || l.next != c.right) continue;  // stale
    l.id = c.merged;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = c.left;
    r.id = -1;
    try_add(l.prev, c.left);
    try_add(c.left, l.next);
  }
  const size_t start = out->size();
  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    if (syms[i].id >= 0) out->push_back(syms[i].id);
  }
  if (cacheable) {
    std::lock_guard<std::mutex> lock(tb.cache_mu);
    if (tb.cache.size() >= kCacheMaxWords) tb.cache.clear();
    tb.cache.emplace(std::string(piece), std::vector<int32_t>(out->begin() + start, out->end()));
  }
}

Status Tokenizer::encode_text(std::string_view text, std::vector<int32_t>* out) const {
  thread_local std::vector<Span> spans;
  spans.clear();
  GSA_RETURN_IF_ERROR(pre_tokenizer_->split(text, &spans));
  for (const Span s : spans) encode_piece(text.substr(s.begin, s.end - s.begin), out);
  return Status::ok();
}

Result<std::vector<int32_t>> Tokenizer::encode(std::string_view text, bool add_special,
                                               bool parse_special) const {
  constexpr size_t kMaxText = size_t{1} << 30;
  if (text.size() >= kMaxText) {
    return invalid_argument("tokenizer: text of {} bytes exceeds the limit of {} bytes",
                            text.size(), kMaxText);
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special && add_bos_) out.push_back(bos_id_);
  // Cut special tokens out first (leftmost, longest), then encode the text between them.
  const BpeTables& tb = *bpe_;
  size_t segment = 0;
  size_t i = 0;
  while (i < text.size()) {
    const auto& bucket = tb.specials[static_cast<uint8_t>(text[i])];
    const BpeTables::Special* hit = nullptr;
    for (const auto& s : bucket) {
      if (s.needs_parse_special && !parse_special) continue;
      if (text.substr(i, s.text.size()) == s.text) {
        hit = &s;
        break;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    GSA_RETURN_IF_ERROR(encode_text(text.substr(segment, i - segment), &out));
    out.push_back(hit->id);
    i += hit->text.size();
    segment = i;
  }
  GSA_RETURN_IF_ERROR(encode_text(text.substr(segment), &out));
  if (add_special && add_eos_) out.push_back(eos_id_);
  return out;
}

std::string Tokenizer::token_to_piece(int32_t id) const {
  if (id < 0 || id >= n_vocab()) return {};
  return pieces_[id];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= n_vocab()) continue;
    const TokenType ty = types_[id];
    if (skip_special && (ty == TokenType::Control || ty == TokenType::Unknown)) continue;
    out += pieces_[id];
  }
  return out;
}

int32_t Tokenizer::find_token(std::string_view bytes) const {
  const auto it = bpe_->all_ids.find(bytes);
  return it == bpe_->all_ids.end() ? -1 : it->second;
}

TokenType Tokenizer::token_type(int32_t id) const {
  if (id < 0 || id >= n_vocab()) return TokenType::Undefined;
  return types_[id];
}

bool Tokenizer::can_encode_byte(uint8_t b) const { return bpe_->byte_ids[b] >= 0; }

bool Tokenizer::is_eog(int32_t id) const {
  return std::binary_search(eog_ids_.begin(), eog_ids_.end(), id);
}

namespace {

// Appends the valid UTF-8 in `bytes` to out, replacing each invalid byte by U+FFFD. When
// keep_tail is set, an incomplete but so far well-formed sequence at the end is not consumed;
// returns the number of bytes consumed.
size_t emit_utf8(std::string_view bytes, bool keep_tail, std::string* out) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    const size_t len = utf8_sequence_len(p + i, n - i);
    if (len > 0) {
      out->append(bytes.substr(i, len));
      i += len;
      continue;
    }
    if (keep_tail && utf8_incomplete_prefix(p + i, n - i)) return i;
    out->append("\xEF\xBF\xBD");
    ++i;
  }
  return n;
}

}  // namespace

std::string StreamDecoder::push(int32_t id) {
  const TokenType ty = tok_->token_type(id);
  if (ty == TokenType::Undefined) return {};
  if (skip_special_ && (ty == TokenType::Control || ty == TokenType::Unknown)) return {};
  pending_ += tok_->token_to_piece(id);
  std::string out;
  const size_t used = emit_utf8(pending_, /*keep_tail=*/true, &out);
  pending_.erase(0, used);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  emit_utf8(pending_, /*keep_tail=*/false, &out);
  pending_.clear();
  return out;
}

}  // namespace gsa::tokenizer

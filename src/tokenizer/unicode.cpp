// UTF-8 validation/encoding and the GPT-2 byte-level mapping (see unicode.h).
#include "tokenizer/unicode.h"

namespace gsa::tokenizer {
namespace {

bool is_cont(uint8_t b) { return (b & 0xC0) == 0x80; }

// The second byte carries the overlong / surrogate / > U+10FFFF restrictions.
bool second_byte_ok(uint8_t lead, uint8_t b1) {
  uint8_t lo = 0x80, hi = 0xBF;
  if (lead == 0xE0) lo = 0xA0;
  if (lead == 0xED) hi = 0x9F;
  if (lead == 0xF0) lo = 0x90;
  if (lead == 0xF4) hi = 0x8F;
  return b1 >= lo && b1 <= hi;
}

// byte -> code point, and code point (< 0x180) -> byte + 1 (0: unmapped).
struct ByteMap {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 0x180> from_cp{};
  ByteMap() {
    uint32_t extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      to_cp[b] = printable ? static_cast<uint32_t>(b) : 0x100 + extra++;
      from_cp[to_cp[b]] = static_cast<int16_t>(b + 1);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

}  // namespace

size_t utf8_lead_len(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

size_t utf8_sequence_len(const uint8_t* p, size_t n) {
  if (n == 0) return 0;
  const uint8_t b0 = p[0];
  const size_t len = utf8_lead_len(b0);
  if (len <= 1 || len > n) return len == 1 ? 1 : 0;
  if (!second_byte_ok(b0, p[1])) return 0;
  for (size_t i = 2; i < len; ++i) {
    if (!is_cont(p[i])) return 0;
  }
  return len;
}

bool utf8_incomplete_prefix(const uint8_t* p, size_t k) {
  if (k == 0) return false;
  const size_t want = utf8_lead_len(p[0]);
  if (want <= 1 || k >= want) return false;
  if (k >= 2) {
    if (!second_byte_ok(p[0], p[1])) return false;
  }
  for (size_t i = 2; i < k; ++i) {
    if (!is_cont(p[i])) return false;
  }
  return true;
}

bool utf8_is_valid(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const size_t len = utf8_sequence_len(p + i, n - i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

uint32_t byte_to_code_point(uint8_t b) { return byte_map().to_cp[b]; }

int byte_from_code_point(uint32_t cp) {
  if (cp >= byte_map().from_cp.size()) return -1;
  return byte_map().from_cp[cp] - 1;
}

std::string byte_level_decode(std::string_view text, bool* all_mapped) {
  std::string out;
  out.reserve(text.size());
  bool mapped = true;
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    size_t len = utf8_sequence_len(p + i, n - i);
    if (len == 0) {  // not UTF-8 at all: keep the byte as it is
      out.push_back(static_cast<char>(p[i]));
      mapped = false;
      ++i;
      continue;
    }
    uint32_t cp = 0;
    if (len == 1) {
      cp = p[i];
    } else {
      cp = p[i] & (0x7F >> len);
      for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    const int b = byte_from_code_point(cp);
    if (b >= 0) {
      out.push_back(static_cast<char>(b));
    } else {
      out.append(text.substr(i, len));
      mapped = false;
    }
    i += len;
  }
  if (all_mapped) *all_mapped = mapped;
  return out;
}

std::string byte_level_encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) utf8_append(out, byte_to_code_point(static_cast<uint8_t>(c)));
  return out;
}

}  // namespace gsa::tokenizer

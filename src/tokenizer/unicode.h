// UTF-8 helpers for the tokenizer: strict validation (RFC 3629, the rules PCRE2 enforces), code
// point encoding, and the GPT-2 byte-level mapping between raw bytes and printable code points.
// No Unicode property tables live here: the pre-tokenizer regexes (PCRE2) own classification.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace gsa::tokenizer {

/// Length (1-4) of the well-formed UTF-8 sequence starting at p[0] (n bytes readable), or 0 when
/// the bytes there are not a complete, well-formed sequence (overlong, surrogate, > U+10FFFF,
/// truncated or a stray continuation byte).
size_t utf8_sequence_len(const uint8_t* p, size_t n);

/// True when every byte of s belongs to a well-formed UTF-8 sequence.
bool utf8_is_valid(std::string_view s);

/// True when p[0..k) is the start of a well-formed sequence that needs more bytes.
bool utf8_incomplete_prefix(const uint8_t* p, size_t k);

/// Bytes a sequence with this lead byte claims (1-4), or 0 for a continuation / invalid lead.
size_t utf8_lead_len(uint8_t lead);

/// Appends the UTF-8 encoding of code point cp (cp <= 0x10FFFF, not a surrogate).
void utf8_append(std::string& out, uint32_t cp);

/// GPT-2 byte-level mapping: every byte value gets a printable code point (printable Latin-1
/// bytes map to themselves, the others to U+0100 + k), so that BPE vocabularies hold no control
/// characters or spaces. byte_to_code_point(0x20) == U+0120 ('Ġ').
uint32_t byte_to_code_point(uint8_t b);

/// Inverse of byte_to_code_point; -1 for a code point outside the mapping.
int byte_from_code_point(uint32_t cp);

/// Decodes the byte-level text of a vocabulary entry into raw bytes. Code points outside the
/// mapping are kept as their UTF-8 bytes (returned false in *all_mapped when non-null).
std::string byte_level_decode(std::string_view text, bool* all_mapped = nullptr);

/// Encodes raw bytes into byte-level text (one code point per byte).
std::string byte_level_encode(std::string_view bytes);

}  // namespace gsa::tokenizer

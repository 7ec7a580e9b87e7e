// Encoding and verification of the block file header (format in block_file.h).
#include "offload/block_file.h"

#include <xxhash.h>

#include <cstring>

namespace gsa::offload {

namespace {

constexpr int64_t kLayerEntryBytes = 16;

void put_u32(std::byte* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = std::byte((v >> (8 * i)) & 0xff);
}
void put_u64(std::byte* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = std::byte((v >> (8 * i)) & 0xff);
}
uint32_t get_u32(const std::byte* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t(p[i]) << (8 * i);
  return v;
}
uint64_t get_u64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}

uint64_t header_checksum(std::span<const std::byte> covered) {
  return XXH3_64bits(covered.data(), covered.size());
}

}  // namespace

BlockHeader BlockHeader::empty(uint64_t model_id, int n_layers, int64_t layer_bytes,
                               uint64_t hash) {
  BlockHeader h;
  h.model_id = model_id;
  h.n_layers = n_layers;
  h.layer_bytes = layer_bytes;
  h.hash = hash;
  h.payload_offset = payload_base(n_layers);
  h.checksums.assign(size_t(n_layers), 0);
  h.written.assign(size_t(n_layers), 0);
  return h;
}

bool BlockHeader::complete() const {
  for (uint8_t w : written) {
    if (!w) return false;
  }
  return n_layers > 0;
}

int64_t header_bytes(int n_layers) { return kFixedHeaderBytes + kLayerEntryBytes * n_layers + 8; }

int64_t payload_base(int n_layers) {
  return (header_bytes(n_layers) + kPayloadAlign - 1) / kPayloadAlign * kPayloadAlign;
}

std::vector<std::byte> encode_header(const BlockHeader& h) {
  std::vector<std::byte> out(size_t(header_bytes(h.n_layers)), std::byte{0});
  std::byte* p = out.data();
  std::memcpy(p, kBlockMagic, sizeof(kBlockMagic));
  put_u32(p + 8, kBlockVersion);
  put_u32(p + 12, uint32_t(h.n_layers));
  put_u64(p + 16, h.model_id);
  put_u64(p + 24, uint64_t(h.layer_bytes));
  put_u64(p + 32, h.hash);
  put_u64(p + 40, uint64_t(h.payload_offset));
  for (int l = 0; l < h.n_layers; ++l) {
    std::byte* e = p + kFixedHeaderBytes + kLayerEntryBytes * l;
    put_u64(e, h.checksums[size_t(l)]);
    put_u32(e + 8, h.written[size_t(l)] ? 1u : 0u);
  }
  const size_t covered = out.size() - 8;
  put_u64(p + covered, header_checksum(std::span(out).first(covered)));
  return out;
}

Result<int> peek_header_layers(std::span<const std::byte> prefix) {
  if (int64_t(prefix.size()) < kFixedHeaderBytes) {
    return invalid_argument("header is {} bytes, expected at least {}", prefix.size(),
                            kFixedHeaderBytes);
  }
  if (std::memcmp(prefix.data(), kBlockMagic, sizeof(kBlockMagic)) != 0) {
    return invalid_argument("bad magic (not a gsa KV block file)");
  }
  const uint32_t version = get_u32(prefix.data() + 8);
  if (version != kBlockVersion) {
    return invalid_argument("format version {}, expected {}", version, kBlockVersion);
  }
  const uint32_t n_layers = get_u32(prefix.data() + 12);
  if (n_layers < 1 || n_layers > uint32_t(kMaxLayers)) {
    return invalid_argument("n_layers {} outside [1, {}]", n_layers, kMaxLayers);
  }
  return int(n_layers);
}

Result<BlockHeader> decode_header(std::span<const std::byte> bytes, bool* checksum_failed) {
  if (checksum_failed) *checksum_failed = false;
  GSA_ASSIGN_OR_RETURN(const int n_layers, peek_header_layers(bytes));
  const int64_t size = header_bytes(n_layers);
  if (int64_t(bytes.size()) < size) {
    return invalid_argument("header is {} bytes, expected {}", bytes.size(), size);
  }
  const std::byte* p = bytes.data();
  const uint64_t stored = get_u64(p + size - 8);
  const uint64_t actual = header_checksum(bytes.first(size_t(size - 8)));
  if (stored != actual) {
    if (checksum_failed) *checksum_failed = true;
    return invalid_argument("header checksum mismatch (stored {:016x}, computed {:016x})", stored,
                            actual);
  }
  BlockHeader h;
  h.n_layers = n_layers;
  h.model_id = get_u64(p + 16);
  h.layer_bytes = int64_t(get_u64(p + 24));
  h.hash = get_u64(p + 32);
  h.payload_offset = int64_t(get_u64(p + 40));
  if (h.layer_bytes <= 0) return invalid_argument("layer_bytes {} is not positive", h.layer_bytes);
  if (h.payload_offset != payload_base(n_layers)) {
    return invalid_argument("payload offset {}, expected {}", h.payload_offset,
                            payload_base(n_layers));
  }
  h.checksums.resize(size_t(n_layers));
  h.written.resize(size_t(n_layers));
  for (int l = 0; l < n_layers; ++l) {
    const std::byte* e = p + kFixedHeaderBytes + kLayerEntryBytes * l;
    const uint32_t written = get_u32(e + 8);
    if (written > 1 || get_u32(e + 12) != 0) {
      return invalid_argument("layer {} entry is malformed", l);
    }
    h.checksums[size_t(l)] = get_u64(e);
    h.written[size_t(l)] = uint8_t(written);
  }
  return h;
}

uint64_t layer_seed(uint64_t hash, int layer) {
  // Any fixed bijection of (hash, layer) works; the odd multiplier spreads the layer index.
  return hash ^ (uint64_t(layer) * 0x9e3779b97f4a7c15ull);
}

uint64_t layer_checksum(uint64_t hash, int layer, std::span<const std::byte> payload) {
  return XXH3_64bits_withSeed(payload.data(), payload.size(), layer_seed(hash, layer));
}

}  // namespace gsa::offload

// The on-disk format of one KV block file (".kvb"), independent of how the bytes reach the disk.
// All integers are little-endian.
//
//   offset        size      field
//   0             8         magic "GSAKVB01"
//   8             4         u32 format version (kBlockVersion)
//   12            4         u32 n_layers (1 .. kMaxLayers)
//   16            8         u64 model_id (the caller's fingerprint of model + KV geometry)
//   24            8         i64 layer_bytes (K+V bytes of the block in one layer)
//   32            8         u64 hash (the block's prefix-cache chain hash; names the file)
//   40            8         i64 payload_offset (= payload_base(n_layers))
//   48            16 * n    per layer: u64 checksum, u32 written (0 or 1), u32 reserved (0)
//   48 + 16n      8         u64 XXH3-64 of bytes [0, 48 + 16n): the header checksum
//   payload_offset + l * layer_bytes: layer l's payload, layer_bytes long
//
// A layer's checksum is XXH3-64 of its payload seeded with layer_seed(hash, layer), so a payload
// that lands at the wrong offset, or in the wrong block's file, fails verification too. The
// header is padded to a 4 KiB boundary; the padding is not covered by any checksum and carries
// no meaning.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/status.h"

namespace gsa::offload {

inline constexpr char kBlockMagic[8] = {'G', 'S', 'A', 'K', 'V', 'B', '0', '1'};
inline constexpr uint32_t kBlockVersion = 1;
inline constexpr int kMaxLayers = 4096;
inline constexpr int64_t kFixedHeaderBytes = 48;  // up to the per-layer table
inline constexpr int64_t kPayloadAlign = 4096;

struct BlockHeader {
  uint64_t model_id = 0;
  int32_t n_layers = 0;
  int64_t layer_bytes = 0;
  uint64_t hash = 0;
  int64_t payload_offset = 0;
  std::vector<uint64_t> checksums;  // per layer; meaningful only where written
  std::vector<uint8_t> written;     // per layer, 0 or 1

  /// A fresh header for `hash` with no layer written.
  static BlockHeader empty(uint64_t model_id, int n_layers, int64_t layer_bytes, uint64_t hash);
  /// Every layer written.
  bool complete() const;
};

/// Encoded header size for `n_layers`, header checksum included.
int64_t header_bytes(int n_layers);
/// Where the payload starts: header_bytes rounded up to kPayloadAlign.
int64_t payload_base(int n_layers);

std::vector<std::byte> encode_header(const BlockHeader& h);

/// Reads n_layers from the first kFixedHeaderBytes of a file, after checking magic and version;
/// the caller then reads header_bytes(n_layers) bytes for decode_header. InvalidArgument (with a
/// message saying what is wrong) on bad magic, version or layer count.
Result<int> peek_header_layers(std::span<const std::byte> prefix);

/// Decodes a whole header (at least header_bytes(n_layers) bytes; the rest is ignored) after
/// verifying its checksum. InvalidArgument on any inconsistency; `*checksum_failed` (when given)
/// tells whether the header checksum was what failed. Does not compare against an expected
/// model or geometry: the caller does.
Result<BlockHeader> decode_header(std::span<const std::byte> bytes,
                                  bool* checksum_failed = nullptr);

/// The checksum seed of layer `layer` of block `hash`.
uint64_t layer_seed(uint64_t hash, int layer);
/// XXH3-64 of `payload` seeded with layer_seed(hash, layer).
uint64_t layer_checksum(uint64_t hash, int layer, std::span<const std::byte> payload);

}  // namespace gsa::offload

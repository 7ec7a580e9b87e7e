// Robustness of the block file header parser: random garbage under valid file names, and valid
// files with random bytes changed, must give an error (or, for a change the checksums do not
// cover, exactly the bytes written) and never a crash or unverified bytes.
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "offload/block_file.h"
#include "offload/block_store.h"
#include "offload_test_util.h"

namespace gsa::offload {
namespace {

using testing::random_bytes;
using testing::TempDir;

constexpr StoreGeometry kGeom{2, 300};
constexpr uint64_t kModel = 0xfeed;

std::vector<std::byte> layer_data(uint64_t hash, int layer) {
  return random_bytes(size_t(kGeom.layer_bytes), hash ^ (uint64_t(layer) << 32));
}

TEST(BlockFileFuzz, GarbageFilesAreErrors) {
  TempDir tmp;
  auto r = FileBlockStore::open(tmp.path(), kGeom, kModel);
  ASSERT_TRUE(r.is_ok());
  FileBlockStore& store = **r;
  std::mt19937_64 rng(1234);
  for (int i = 0; i < 400; ++i) {
    const uint64_t h = rng();
    std::vector<std::byte> bytes = random_bytes(size_t(rng() % 4097), rng());
    if (i % 4 == 1 && bytes.size() >= sizeof(kBlockMagic)) {  // get past the magic check
      std::memcpy(bytes.data(), kBlockMagic, sizeof(kBlockMagic));
    }
    if (i % 4 == 2 && bytes.size() >= 16) {  // and the version and a small layer count
      std::memcpy(bytes.data(), kBlockMagic, sizeof(kBlockMagic));
      const uint32_t fields[2] = {kBlockVersion, uint32_t(kGeom.n_layers)};
      std::memcpy(bytes.data() + 8, fields, sizeof(fields));
    }
    testing::write_file(store.path_of(h), bytes);
    for (int l = 0; l < kGeom.n_layers; ++l) {
      std::vector<std::byte> out(size_t(kGeom.layer_bytes));
      Status s = store.read_layer(h, l, out);
      EXPECT_FALSE(s.is_ok()) << "garbage file " << i << " of " << bytes.size() << " bytes";
    }
    EXPECT_FALSE(store.contains(h));
  }
  EXPECT_EQ(store.stats().bytes_read, 0);
}

TEST(BlockFileFuzz, MutatedValidFilesNeverYieldWrongBytes) {
  TempDir tmp;
  auto r = FileBlockStore::open(tmp.path(), kGeom, kModel);
  ASSERT_TRUE(r.is_ok());
  FileBlockStore& store = **r;
  std::mt19937_64 rng(99);
  const int64_t file_size = store.payload_offset(kGeom.n_layers);
  const int64_t header_end = header_bytes(kGeom.n_layers);
  for (int i = 0; i < 300; ++i) {
    const uint64_t h = rng();
    for (int l = 0; l < kGeom.n_layers; ++l) {
      ASSERT_TRUE(store.write_layer(h, l, layer_data(h, l)).is_ok());
    }
    // Mostly inside the header (where the parser is), sometimes anywhere in the file.
    const int n_flips = 1 + int(rng() % 3);
    bool covered = false;  // whether a flip hit bytes some checksum covers
    std::set<int64_t> flipped;  // distinct offsets, so no two flips cancel out
    for (int f = 0; f < n_flips; ++f) {
      const int64_t off = int64_t(rng() % uint64_t(i % 3 == 0 ? file_size : header_end));
      if (!flipped.insert(off).second) continue;
      testing::flip_byte_on_disk(store.path_of(h), off, uint8_t(1 + rng() % 255));
      covered = covered || off < header_end || off >= store.payload_offset(0);
    }
    int ok = 0;
    for (int l = 0; l < kGeom.n_layers; ++l) {
      std::vector<std::byte> out(size_t(kGeom.layer_bytes));
      Status s = store.read_layer(h, l, out);
      if (s.is_ok()) {
        EXPECT_EQ(out, layer_data(h, l)) << "file " << i << " layer " << l;
        ++ok;
      }
    }
    if (!covered) {
      EXPECT_EQ(ok, kGeom.n_layers) << "a flip in the padding broke file " << i;
    } else if (i % 3 != 0) {
      EXPECT_EQ(ok, 0) << "a header flip went unnoticed in file " << i;
    }
  }
}

TEST(BlockFileFuzz, DecodeHeaderTakesAnyBytes) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::vector<std::byte> bytes = random_bytes(size_t(rng() % 200), rng());
    if (bytes.size() >= 16 && i % 2) {
      std::memcpy(bytes.data(), kBlockMagic, sizeof(kBlockMagic));
      const uint32_t fields[2] = {kBlockVersion, uint32_t(rng() % 8)};
      std::memcpy(bytes.data() + 8, fields, sizeof(fields));
    }
    EXPECT_FALSE(decode_header(bytes).is_ok());
  }
  const BlockHeader h = BlockHeader::empty(kModel, 3, 64, 5);
  std::vector<std::byte> good = encode_header(h);
  auto back = decode_header(good);
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->model_id, kModel);
  EXPECT_EQ(back->n_layers, 3);
  EXPECT_EQ(back->hash, 5u);
  EXPECT_FALSE(back->complete());
}

}  // namespace
}  // namespace gsa::offload

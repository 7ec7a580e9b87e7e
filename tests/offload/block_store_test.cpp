// FileBlockStore on a real directory: round trips, reopening, misses, corruption on disk, other
// models' files, remove, open errors.
#include "offload/block_store.h"

#include <algorithm>
#include <filesystem>
#include <random>

#include <gtest/gtest.h>

#include "offload_test_util.h"

namespace gsa::offload {
namespace {

using testing::flip_byte_on_disk;
using testing::random_bytes;
using testing::TempDir;

constexpr StoreGeometry kGeom{4, 1003};  // an odd size: nothing may assume alignment
constexpr uint64_t kModel = 0x1234'5678'9abc'def0ull;
const std::vector<uint64_t> kHashes = {0, 1, 0xdeadbeefcafef00dull, 0x00ff00ff00ff00ffull,
                                       ~uint64_t(0)};

std::vector<std::byte> layer_data(uint64_t hash, int layer) {
  return random_bytes(size_t(kGeom.layer_bytes), hash * 31 + uint64_t(layer) + 7);
}

std::unique_ptr<FileBlockStore> open_store(const std::string& dir, uint64_t model = kModel,
                                           FileIo* io = nullptr) {
  auto r = FileBlockStore::open(dir, kGeom, model, io);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? std::move(r).value() : nullptr;
}

void write_block(FileBlockStore& store, uint64_t hash) {
  for (int l = kGeom.n_layers - 1; l >= 0; --l) {
    ASSERT_TRUE(store.write_layer(hash, l, layer_data(hash, l)).is_ok());
  }
}

// Reads layer `layer` of `hash` and expects it to be the bytes write_block wrote.
void expect_layer(FileBlockStore& store, uint64_t hash, int layer) {
  std::vector<std::byte> out(size_t(kGeom.layer_bytes));
  Status s = store.read_layer(hash, layer, out);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  EXPECT_EQ(out, layer_data(hash, layer)) << "hash " << hash << " layer " << layer;
}

// Reads and expects failure with `code`, a message naming the file, and a zeroed buffer.
void expect_read_fails(FileBlockStore& store, uint64_t hash, int layer, StatusCode code) {
  std::vector<std::byte> out(size_t(kGeom.layer_bytes), std::byte{0x5a});
  Status s = store.read_layer(hash, layer, out);
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), code) << s.to_string();
  EXPECT_NE(s.message().find(store.path_of(hash)), std::string::npos) << s.to_string();
  EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](std::byte b) { return b == std::byte{0}; }))
      << "unverified bytes left in the buffer";
}

TEST(FileBlockStore, RoundTripsLayersWrittenOutOfOrder) {
  TempDir tmp;
  auto store = open_store(tmp.path());
  ASSERT_TRUE(store);
  std::mt19937 rng(42);
  for (uint64_t h : kHashes) {
    std::vector<int> order = {0, 1, 2, 3};
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t i = 0; i < order.size(); ++i) {
      EXPECT_FALSE(store->contains(h)) << "complete before its last layer";
      ASSERT_TRUE(store->write_layer(h, order[i], layer_data(h, order[i])).is_ok());
    }
    EXPECT_TRUE(store->contains(h));
  }
  for (uint64_t h : kHashes) {
    for (int l = 0; l < kGeom.n_layers; ++l) expect_layer(*store, h, l);
  }
  const StoreStats st = store->stats();
  EXPECT_EQ(st.blocks_written, int64_t(kHashes.size()));
  EXPECT_EQ(st.layers_written, int64_t(kHashes.size()) * kGeom.n_layers);
  EXPECT_EQ(st.bytes_written, st.layers_written * kGeom.layer_bytes);
  EXPECT_EQ(st.bytes_read, st.bytes_written);
  EXPECT_EQ(st.checksum_failures, 0);
  EXPECT_EQ(st.io_errors, 0);
}

TEST(FileBlockStore, NamesFilesByHash) {
  TempDir tmp;
  auto store = open_store(tmp.path() + "/");
  ASSERT_TRUE(store);
  EXPECT_EQ(store->path_of(0xdeadbeefcafef00dull), tmp.path() + "/de/deadbeefcafef00d.kvb");
  EXPECT_EQ(store->path_of(1), tmp.path() + "/00/0000000000000001.kvb");
  write_block(*store, 0xdeadbeefcafef00dull);
  EXPECT_TRUE(std::filesystem::exists(tmp.path() + "/de/deadbeefcafef00d.kvb"));
  EXPECT_EQ(store->payload_offset(0), 4096);
  EXPECT_EQ(store->payload_offset(3), 4096 + 3 * kGeom.layer_bytes);
}

TEST(FileBlockStore, ReopenedStoreReadsTheSameBytes) {
  TempDir tmp;
  {
    auto store = open_store(tmp.path());
    ASSERT_TRUE(store);
    for (uint64_t h : kHashes) write_block(*store, h);
    ASSERT_TRUE(store->sync(kHashes[0]).is_ok());
  }
  auto again = open_store(tmp.path());  // as after a restart
  ASSERT_TRUE(again);
  for (uint64_t h : kHashes) {
    EXPECT_TRUE(again->contains(h));
    for (int l = 0; l < kGeom.n_layers; ++l) expect_layer(*again, h, l);
  }
}

TEST(FileBlockStore, MissingBlockOrLayerIsNotFound) {
  TempDir tmp;
  auto store = open_store(tmp.path());
  ASSERT_TRUE(store);
  expect_read_fails(*store, 77, 0, StatusCode::NotFound);
  EXPECT_FALSE(store->contains(77));
  ASSERT_TRUE(store->write_layer(77, 2, layer_data(77, 2)).is_ok());
  expect_read_fails(*store, 77, 1, StatusCode::NotFound);
  expect_layer(*store, 77, 2);
  EXPECT_FALSE(store->contains(77));
  EXPECT_EQ(store->sync(78).code(), StatusCode::NotFound);
  EXPECT_EQ(store->stats().io_errors, 0);
}

TEST(FileBlockStore, RejectsBadArguments) {
  TempDir tmp;
  auto store = open_store(tmp.path());
  ASSERT_TRUE(store);
  std::vector<std::byte> small(10);
  EXPECT_EQ(store->write_layer(1, 0, small).code(), StatusCode::InvalidArgument);
  EXPECT_EQ(store->read_layer(1, 0, small).code(), StatusCode::InvalidArgument);
  EXPECT_EQ(store->write_layer(1, 4, layer_data(1, 0)).code(), StatusCode::InvalidArgument);
  EXPECT_EQ(store->write_layer(1, -1, layer_data(1, 0)).code(), StatusCode::InvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(store->path_of(1)));
}

TEST(FileBlockStore, FlippedPayloadByteOnDiskIsDetected) {
  TempDir tmp;
  auto store = open_store(tmp.path());
  ASSERT_TRUE(store);
  const uint64_t h = kHashes[2];
  write_block(*store, h);
  flip_byte_on_disk(store->path_of(h), store->payload_offset(1) + 500, 0x80);
  expect_read_fails(*store, h, 1, StatusCode::Io);
  std::vector<std::byte> out(size_t(kGeom.layer_bytes));
  Status s = store->read_layer(h, 1, out);
  EXPECT_NE(s.message().find("checksum mismatch"), std::string::npos) << s.to_string();
  expect_layer(*store, h, 0);  // the other layers are intact
  expect_layer(*store, h, 2);
  EXPECT_EQ(store->stats().checksum_failures, 2);
  EXPECT_EQ(store->stats().io_errors, 0);
}

TEST(FileBlockStore, CorruptHeaderIsDetected) {
  TempDir tmp;
  auto store = open_store(tmp.path());
  ASSERT_TRUE(store);
  // magic, version, model_id, layer_bytes, a layer's checksum, a written flag, header checksum
  const int64_t offsets[] = {0, 8, 17, 24, 48 + 16 * 2, 48 + 16 * 3 + 8, 48 + 16 * 4 + 3};
  for (int64_t off : offsets) {
    const uint64_t h = 1000 + uint64_t(off);
    write_block(*store, h);
    flip_byte_on_disk(store->path_of(h), off, 0x04);
    for (int l = 0; l < kGeom.n_layers; ++l) expect_read_fails(*store, h, l, StatusCode::Io);
    EXPECT_FALSE(store->contains(h)) << "offset " << off;
  }
  EXPECT_GT(store->stats().checksum_failures, 0);
}

TEST(FileBlockStore, CorruptHeaderIsReplacedOnWrite) {
  TempDir tmp;
  auto store = open_store(tmp.path());
  ASSERT_TRUE(store);
  write_block(*store, 5);
  flip_byte_on_disk(store->path_of(5), 20);
  ASSERT_TRUE(store->write_layer(5, 3, layer_data(5, 3)).is_ok());
  expect_layer(*store, 5, 3);
  expect_read_fails(*store, 5, 0, StatusCode::NotFound);  // the file was started anew
}

TEST(FileBlockStore, TruncatedFileIsDetected) {
  TempDir tmp;
  auto store = open_store(tmp.path());
  ASSERT_TRUE(store);
  write_block(*store, 9);
  const std::string path = store->path_of(9);
  std::filesystem::resize_file(path, uint64_t(store->payload_offset(3) + 10));
  expect_layer(*store, 9, 2);
  expect_read_fails(*store, 9, 3, StatusCode::Io);
  std::vector<std::byte> out(size_t(kGeom.layer_bytes));
  EXPECT_NE(store->read_layer(9, 3, out).message().find("short read"), std::string::npos);
  std::filesystem::resize_file(path, 20);  // inside the header
  for (int l = 0; l < kGeom.n_layers; ++l) expect_read_fails(*store, 9, l, StatusCode::Io);
  EXPECT_FALSE(store->contains(9));
  std::filesystem::resize_file(path, 0);
  expect_read_fails(*store, 9, 0, StatusCode::Io);
  EXPECT_EQ(store->stats().checksum_failures, 0);
  EXPECT_GE(store->stats().io_errors, 6);
}

TEST(FileBlockStore, OtherModelsBlocksAreNotUsed) {
  TempDir tmp;
  auto a = open_store(tmp.path(), kModel);
  auto b = open_store(tmp.path(), kModel + 1);
  ASSERT_TRUE(a && b);
  write_block(*a, 3);
  EXPECT_FALSE(b->contains(3));
  expect_read_fails(*b, 3, 0, StatusCode::NotFound);
  std::vector<std::byte> out(size_t(kGeom.layer_bytes));
  EXPECT_NE(b->read_layer(3, 0, out).message().find("belongs to model"), std::string::npos);
  // b's write replaces the file with a block of its own model.
  ASSERT_TRUE(b->write_layer(3, 0, layer_data(3, 0)).is_ok());
  expect_layer(*b, 3, 0);
  expect_read_fails(*b, 3, 1, StatusCode::NotFound);
  expect_read_fails(*a, 3, 0, StatusCode::NotFound);
  EXPECT_FALSE(a->contains(3));
}

TEST(FileBlockStore, OtherGeometryWithTheSameModelIdIsAnError) {
  TempDir tmp;
  auto a = open_store(tmp.path());
  ASSERT_TRUE(a);
  write_block(*a, 3);
  auto r = FileBlockStore::open(tmp.path(), {kGeom.n_layers, kGeom.layer_bytes + 1}, kModel);
  ASSERT_TRUE(r.is_ok());
  std::vector<std::byte> out(size_t(kGeom.layer_bytes + 1));
  Status s = (*r)->read_layer(3, 0, out);
  EXPECT_EQ(s.code(), StatusCode::Io) << s.to_string();
  EXPECT_FALSE((*r)->contains(3));
}

TEST(FileBlockStore, RemoveDeletesTheBlock) {
  TempDir tmp;
  auto store = open_store(tmp.path());
  ASSERT_TRUE(store);
  write_block(*store, 11);
  write_block(*store, 12);
  ASSERT_TRUE(store->remove(11).is_ok());
  EXPECT_FALSE(store->contains(11));
  EXPECT_FALSE(std::filesystem::exists(store->path_of(11)));
  expect_read_fails(*store, 11, 0, StatusCode::NotFound);
  EXPECT_EQ(store->remove(11).code(), StatusCode::NotFound);
  EXPECT_TRUE(store->contains(12));
  write_block(*store, 11);  // and it can be written again
  expect_layer(*store, 11, 1);
}

TEST(FileBlockStore, OverwriteReplacesTheLayer) {
  TempDir tmp;
  auto store = open_store(tmp.path());
  ASSERT_TRUE(store);
  write_block(*store, 21);
  const std::vector<std::byte> other = layer_data(99, 1);
  ASSERT_TRUE(store->write_layer(21, 1, other).is_ok());
  std::vector<std::byte> out(size_t(kGeom.layer_bytes));
  ASSERT_TRUE(store->read_layer(21, 1, out).is_ok());
  EXPECT_EQ(out, other);
  EXPECT_TRUE(store->contains(21));
  EXPECT_EQ(store->stats().blocks_written, 1);
}

TEST(FileBlockStore, OpenCreatesMissingDirectories) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/a/b/c";
  auto store = open_store(dir);
  ASSERT_TRUE(store);
  EXPECT_TRUE(std::filesystem::is_directory(dir));
  EXPECT_TRUE(std::filesystem::is_empty(dir)) << "the writability probe was left behind";
}

TEST(FileBlockStore, OpenFailsClearlyOnABadDirectory) {
  TempDir tmp;
  const std::string file = tmp.path() + "/plain-file";
  testing::write_file(file, random_bytes(10, 1));
  for (const std::string& dir : {file, file + "/sub"}) {
    auto r = FileBlockStore::open(dir, kGeom, kModel);
    ASSERT_FALSE(r.is_ok()) << dir;
    EXPECT_EQ(r.status().code(), StatusCode::Io);
    EXPECT_NE(r.status().message().find(dir), std::string::npos) << r.status().to_string();
  }
  EXPECT_EQ(FileBlockStore::open("", kGeom, kModel).status().code(), StatusCode::InvalidArgument);
}

TEST(FileBlockStore, OpenRejectsBadGeometry) {
  TempDir tmp;
  const StoreGeometry bad[] = {{0, 100}, {-1, 100}, {kMaxLayers + 1, 100}, {4, 0}, {4, -5},
                               {4, int64_t(1) << 40}};
  for (const StoreGeometry& g : bad) {
    auto r = FileBlockStore::open(tmp.path(), g, kModel);
    EXPECT_EQ(r.status().code(), StatusCode::InvalidArgument)
        << g.n_layers << " x " << g.layer_bytes;
  }
}

}  // namespace
}  // namespace gsa::offload

// FileBlockStore under injected faults (FaultyIo: full disk, short reads, flipped bytes, a slow
// disk) and under concurrent use from several threads.
#include <atomic>
#include <filesystem>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "offload/block_store.h"
#include "offload_test_util.h"

namespace gsa::offload {
namespace {

using testing::FaultyIo;
using testing::random_bytes;
using testing::TempDir;

constexpr StoreGeometry kGeom{3, 4096 + 17};
constexpr uint64_t kModel = 42;

std::vector<std::byte> layer_data(uint64_t hash, int layer) {
  return random_bytes(size_t(kGeom.layer_bytes), hash * 131 + uint64_t(layer));
}

std::unique_ptr<FileBlockStore> open_store(const std::string& dir, FileIo* io) {
  auto r = FileBlockStore::open(dir, kGeom, kModel, io);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? std::move(r).value() : nullptr;
}

Status read(FileBlockStore& store, uint64_t hash, int layer, std::vector<std::byte>* out) {
  out->assign(size_t(kGeom.layer_bytes), std::byte{0});
  return store.read_layer(hash, layer, *out);
}

void expect_enospc(const Status& s, const FileBlockStore& store, uint64_t hash) {
  EXPECT_EQ(s.code(), StatusCode::Io) << s.to_string();
  EXPECT_NE(s.message().find("No space left on device"), std::string::npos) << s.to_string();
  EXPECT_NE(s.message().find(store.path_of(hash)), std::string::npos) << s.to_string();
}

TEST(FileBlockStoreFaults, FullDiskOnAFreshBlockLeavesNothing) {
  TempDir tmp;
  FaultyIo io;
  auto store = open_store(tmp.path(), &io);
  ASSERT_TRUE(store);
  for (int nth : {1, 2}) {  // the payload write, then the header write, of a new file
    const uint64_t h = 100 + uint64_t(nth);
    io.fail_write_in = nth;
    expect_enospc(store->write_layer(h, 1, layer_data(h, 1)), *store, h);
    std::vector<std::byte> out;
    EXPECT_EQ(read(*store, h, 1, &out).code(), StatusCode::NotFound);
    EXPECT_FALSE(std::filesystem::exists(store->path_of(h)));
    ASSERT_TRUE(store->write_layer(h, 1, layer_data(h, 1)).is_ok());  // the disk has room again
    ASSERT_TRUE(read(*store, h, 1, &out).is_ok());
    EXPECT_EQ(out, layer_data(h, 1));
  }
  EXPECT_EQ(store->stats().io_errors, 2);
  EXPECT_EQ(store->stats().layers_written, 2);
}

TEST(FileBlockStoreFaults, FullDiskOnALaterLayerKeepsTheOthers) {
  TempDir tmp;
  FaultyIo io;
  auto store = open_store(tmp.path(), &io);
  ASSERT_TRUE(store);
  const uint64_t h = 7;
  ASSERT_TRUE(store->write_layer(h, 0, layer_data(h, 0)).is_ok());
  io.fail_write_in = 1;  // layer 2's payload
  expect_enospc(store->write_layer(h, 2, layer_data(h, 2)), *store, h);
  std::vector<std::byte> out;
  EXPECT_EQ(read(*store, h, 2, &out).code(), StatusCode::NotFound);
  ASSERT_TRUE(read(*store, h, 0, &out).is_ok());
  EXPECT_EQ(out, layer_data(h, 0));
  ASSERT_TRUE(store->write_layer(h, 2, layer_data(h, 2)).is_ok());
  ASSERT_TRUE(store->write_layer(h, 1, layer_data(h, 1)).is_ok());
  EXPECT_TRUE(store->contains(h));
  for (int l = 0; l < kGeom.n_layers; ++l) {
    ASSERT_TRUE(read(*store, h, l, &out).is_ok());
    EXPECT_EQ(out, layer_data(h, l));
  }
}

TEST(FileBlockStoreFaults, FailedOverwriteNeverServesTheOldBytes) {
  TempDir tmp;
  FaultyIo io;
  auto store = open_store(tmp.path(), &io);
  ASSERT_TRUE(store);
  const uint64_t h = 8;
  for (int l = 0; l < kGeom.n_layers; ++l) {
    ASSERT_TRUE(store->write_layer(h, l, layer_data(h, l)).is_ok());
  }
  io.fail_write_in = 2;  // the header clearing layer 1 succeeds, its payload write fails
  io.fail_errno = EDQUOT;
  Status s = store->write_layer(h, 1, layer_data(99, 1));
  EXPECT_EQ(s.code(), StatusCode::Io);
  EXPECT_NE(s.message().find("quota"), std::string::npos) << s.to_string();
  std::vector<std::byte> out;
  EXPECT_EQ(read(*store, h, 1, &out).code(), StatusCode::NotFound);
  EXPECT_FALSE(store->contains(h));
  ASSERT_TRUE(read(*store, h, 2, &out).is_ok());
  EXPECT_EQ(out, layer_data(h, 2));
}

TEST(FileBlockStoreFaults, FailedHeaderUpdateDropsTheBlock) {
  TempDir tmp;
  FaultyIo io;
  auto store = open_store(tmp.path(), &io);
  ASSERT_TRUE(store);
  const uint64_t h = 9;
  ASSERT_TRUE(store->write_layer(h, 0, layer_data(h, 0)).is_ok());
  io.fail_write_in = 2;  // layer 1's payload lands, the header saying so does not
  EXPECT_EQ(store->write_layer(h, 1, layer_data(h, 1)).code(), StatusCode::Io);
  std::vector<std::byte> out;
  EXPECT_EQ(read(*store, h, 1, &out).code(), StatusCode::NotFound);
  EXPECT_EQ(read(*store, h, 0, &out).code(), StatusCode::NotFound);
}

TEST(FileBlockStoreFaults, ShortReadIsAnError) {
  TempDir tmp;
  FaultyIo io;
  auto store = open_store(tmp.path(), &io);
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->write_layer(3, 0, layer_data(3, 0)).is_ok());
  io.short_read_min = kGeom.layer_bytes;  // payload reads come back half full, then at EOF
  std::vector<std::byte> out;
  // Half a read is retried for the rest, so the payload still arrives whole...
  ASSERT_TRUE(read(*store, 3, 0, &out).is_ok());
  EXPECT_EQ(out, layer_data(3, 0));
  // ...but a read that meets the end of the file early is not: in the payload, then the header.
  io.short_read_min = 0;
  for (int64_t eof : {store->payload_offset(0) + 100, int64_t(30), int64_t(0)}) {
    io.eof_at = eof;
    Status s = read(*store, 3, 0, &out);
    EXPECT_EQ(s.code(), StatusCode::Io) << s.to_string();
    EXPECT_NE(s.message().find("short read"), std::string::npos) << s.to_string();
    EXPECT_NE(s.message().find(store->path_of(3)), std::string::npos) << s.to_string();
    EXPECT_EQ(out, std::vector<std::byte>(out.size(), std::byte{0}));
  }
  EXPECT_EQ(store->stats().io_errors, 3);
}

TEST(FileBlockStoreFaults, ByteFlippedInFlightIsNeverReturned) {
  TempDir tmp;
  FaultyIo io;
  auto store = open_store(tmp.path(), &io);
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->write_layer(4, 2, layer_data(4, 2)).is_ok());
  io.flip_read_min = kGeom.layer_bytes;
  std::vector<std::byte> out;
  Status s = read(*store, 4, 2, &out);
  EXPECT_EQ(s.code(), StatusCode::Io) << s.to_string();
  EXPECT_NE(s.message().find(store->path_of(4)), std::string::npos);
  EXPECT_EQ(out, std::vector<std::byte>(out.size(), std::byte{0}));
  EXPECT_EQ(store->stats().checksum_failures, 1);
  io.flip_read_min = 0;
  ASSERT_TRUE(read(*store, 4, 2, &out).is_ok());  // the disk itself is fine
  EXPECT_EQ(out, layer_data(4, 2));
}

// Runs `n_threads` threads that each write, then read back, their own blocks.
void run_distinct_hashes(FileBlockStore& store, int n_threads, int blocks_per_thread) {
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < n_threads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < blocks_per_thread; ++i) {
        const uint64_t h = (uint64_t(t) << 60) | uint64_t(i * 2654435761u);
        for (int l = kGeom.n_layers - 1; l >= 0; --l) {
          if (!store.write_layer(h, l, layer_data(h, l))) failures++;
        }
      }
      std::vector<std::byte> out;
      for (int i = 0; i < blocks_per_thread; ++i) {
        const uint64_t h = (uint64_t(t) << 60) | uint64_t(i * 2654435761u);
        if (!store.contains(h)) failures++;
        for (int l = 0; l < kGeom.n_layers; ++l) {
          if (!read(store, h, l, &out) || out != layer_data(h, l)) failures++;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(store.stats().blocks_written, int64_t(n_threads) * blocks_per_thread);
}

TEST(FileBlockStoreConcurrency, DistinctHashesFromFourThreads) {
  TempDir tmp;
  auto store = open_store(tmp.path(), nullptr);
  ASSERT_TRUE(store);
  run_distinct_hashes(*store, 4, 64);
}

TEST(FileBlockStoreConcurrency, DistinctHashesOnASlowDisk) {
  TempDir tmp;
  FaultyIo io;
  io.delay_us = 200;
  auto store = open_store(tmp.path(), &io);
  ASSERT_TRUE(store);
  run_distinct_hashes(*store, 4, 8);
}

TEST(FileBlockStoreConcurrency, LayersOfOneBlockFromSeveralThreads) {
  TempDir tmp;
  auto store = open_store(tmp.path(), nullptr);
  ASSERT_TRUE(store);
  constexpr int kBlocks = 32;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int l = 0; l < kGeom.n_layers; ++l) {  // one thread per layer, as per-layer copy-outs
    threads.emplace_back([&, l] {
      for (uint64_t h = 0; h < kBlocks; ++h) {
        if (!store->write_layer(h, l, layer_data(h, l))) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  std::vector<std::byte> out;
  for (uint64_t h = 0; h < kBlocks; ++h) {
    EXPECT_TRUE(store->contains(h)) << h;
    for (int l = 0; l < kGeom.n_layers; ++l) {
      ASSERT_TRUE(read(*store, h, l, &out).is_ok());
      EXPECT_EQ(out, layer_data(h, l));
    }
  }
  EXPECT_EQ(store->stats().blocks_written, kBlocks);
}

}  // namespace
}  // namespace gsa::offload

// The backend-neutral Transfer (backend/transfer.h) on every backend of the build: pinned
// buffers, events, async copies on both queues, the batched gather, ordering against the compute
// queue, and the refusal of bad arguments (the same checks everywhere, before anything is
// queued). The CPU instance always runs; the CUDA one skips without a device.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "backend/transfer.h"

namespace gsa::backend {
namespace {

constexpr Queue kQueues[] = {Queue::Compute, Queue::Copy};
const Queue kBadQueue = static_cast<Queue>(7);
Event const kNoEvent = nullptr;

const char* queue_name(Queue q) { return q == Queue::Compute ? "compute" : "copy"; }

// Owners that give back what a failed assertion would otherwise leak.
struct Pinned {
  Transfer* t;
  void* p;
  ~Pinned() { t->free_pinned(p); }
  uint8_t* bytes() const { return static_cast<uint8_t*>(p); }
};
struct DeviceBuf {
  Backend* b;
  void* p;
  ~DeviceBuf() { b->free(p); }
};
struct OwnedEvent {
  Transfer* t;
  Event e;
  ~OwnedEvent() { t->destroy_event(e); }
};

// Distinct bytes per (buffer, position), so a block landing in the wrong place shows.
std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(seed + i * 7 + i / 251);
  return v;
}

class TransferTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "cuda") {
      if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
      auto r = make_cuda_backend(0);
      ASSERT_TRUE(r.is_ok()) << r.status().to_string();
      b_ = std::move(r).value();
    } else {
      b_ = make_cpu_backend(&pool_);
    }
    t_ = b_->transfer();
    ASSERT_NE(t_, nullptr);
  }

  std::unique_ptr<Pinned> pinned(size_t bytes) {
    auto r = t_->alloc_pinned(bytes);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return std::unique_ptr<Pinned>(new Pinned{t_, r.is_ok() ? r.value() : nullptr});  // no temporary to free twice
  }
  std::unique_ptr<DeviceBuf> device(size_t bytes) {
    auto r = b_->alloc(bytes);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return std::unique_ptr<DeviceBuf>(new DeviceBuf{b_.get(), r.is_ok() ? r.value() : nullptr});  // no temporary to free twice
  }
  std::unique_ptr<OwnedEvent> event(bool blocking_sync = false) {
    auto r = t_->create_event(blocking_sync);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return std::unique_ptr<OwnedEvent>(new OwnedEvent{t_, r.is_ok() ? r.value() : nullptr});  // no temporary to free twice
  }
  // Backend memory through the compute queue (Backend::download waits for it).
  std::vector<uint8_t> read_device(const void* src, size_t n) {
    std::vector<uint8_t> v(n);
    EXPECT_TRUE(b_->download(v.data(), src, n).is_ok());
    return v;
  }

  ThreadPool pool_{2};
  std::unique_ptr<Backend> b_;
  Transfer* t_ = nullptr;
};

TEST_P(TransferTest, BackendsHandOutTheirTransfer) {
  EXPECT_EQ(b_->transfer(), t_);  // the same object for the backend's lifetime
  if (b_->kind() == DeviceKind::Cpu) {
    EXPECT_EQ(t_, cpu_transfer());
  } else {
    EXPECT_NE(t_, cpu_transfer());
  }
}

TEST_P(TransferTest, PinnedBuffersHoldBytesAndRefuseImpossibleSizes) {
  for (size_t n : {size_t(0), size_t(1), size_t(63), size_t(4096), size_t(1) << 20}) {
    auto p = pinned(n);
    ASSERT_NE(p->p, nullptr) << n << " bytes";
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p->p) % 64, 0u) << n << " bytes";
    const auto v = pattern(n, 3);
    if (n == 0) continue;  // an empty vector's data() may be null
    std::memcpy(p->p, v.data(), n);
    EXPECT_EQ(std::memcmp(p->p, v.data(), n), 0);
  }
  t_->free_pinned(nullptr);  // ignored
  auto huge = t_->alloc_pinned(std::numeric_limits<size_t>::max());
  ASSERT_FALSE(huge.is_ok());
  EXPECT_EQ(huge.status().code(), StatusCode::OutOfMemory);
  for (size_t n : {std::numeric_limits<size_t>::max() - 10, std::numeric_limits<size_t>::max() / 2}) {
    auto r = t_->alloc_pinned(n);
    ASSERT_FALSE(r.is_ok()) << n;
    EXPECT_EQ(r.status().code(), StatusCode::OutOfMemory) << n;
  }
}

TEST_P(TransferTest, EventsRecordWaitQueryAndSynchronize) {
  for (bool blocking : {false, true}) {
    auto ev = event(blocking);
    ASSERT_NE(ev->e, nullptr);
    // Never recorded: complete.
    auto q0 = t_->query(ev->e);
    ASSERT_TRUE(q0.is_ok());
    EXPECT_TRUE(q0.value());
    ASSERT_TRUE(t_->synchronize(ev->e).is_ok());
    for (Queue q : kQueues) {
      SCOPED_TRACE(queue_name(q));
      ASSERT_TRUE(t_->record(ev->e, q).is_ok());
      for (Queue w : kQueues) ASSERT_TRUE(t_->wait(w, ev->e).is_ok());
      ASSERT_TRUE(t_->synchronize(ev->e).is_ok());
      auto done = t_->query(ev->e);
      ASSERT_TRUE(done.is_ok());
      EXPECT_TRUE(done.value());
      for (Queue w : kQueues) ASSERT_TRUE(t_->wait_queue(w, q).is_ok());  // w == q: a no-op
      ASSERT_TRUE(t_->synchronize(q).is_ok());
    }
  }
  auto a = event(), b = event();
  EXPECT_NE(a->e, b->e);  // distinct handles
  t_->destroy_event(nullptr);  // ignored
}

TEST_P(TransferTest, CopiesRoundTripOnEitherQueue) {
  const size_t n = 10000;
  for (Queue q : kQueues) {
    SCOPED_TRACE(queue_name(q));
    auto host = pinned(n), back = pinned(n);
    auto dev = device(n);
    auto ev = event();
    const auto v = pattern(n, 11);
    std::memcpy(host->p, v.data(), n);
    ASSERT_TRUE(t_->copy_to_device_async(dev->p, host->p, n, q, ev->e).is_ok());
    // The compute queue reads dev only after the copy's event.
    ASSERT_TRUE(t_->wait(Queue::Compute, ev->e).is_ok());
    EXPECT_EQ(read_device(dev->p, n), v);
    // And back: the copy queue follows the compute queue only through wait_queue.
    const auto w = pattern(n, 97);
    ASSERT_TRUE(b_->upload(dev->p, w.data(), n).is_ok());
    ASSERT_TRUE(t_->wait_queue(q, Queue::Compute).is_ok());
    std::memset(back->p, 0, n);
    ASSERT_TRUE(t_->copy_to_host_async(back->p, dev->p, n, q, ev->e).is_ok());
    ASSERT_TRUE(t_->synchronize(ev->e).is_ok());
    auto done = t_->query(ev->e);
    ASSERT_TRUE(done.is_ok());
    EXPECT_TRUE(done.value());
    EXPECT_EQ(std::memcmp(back->p, w.data(), n), 0);
    // Without an event, synchronize(queue) covers the copy.
    std::memset(back->p, 0, n);
    ASSERT_TRUE(t_->copy_to_host_async(back->p, dev->p, n, q, kNoEvent).is_ok());
    ASSERT_TRUE(t_->synchronize(q).is_ok());
    EXPECT_EQ(std::memcmp(back->p, w.data(), n), 0);
  }
}

// The pattern of host selection: an op writes on the compute queue, the copy queue copies the
// result out after it (wait_queue), the host waits on the copy's event, which is recorded from
// one thread and waited for on another.
TEST_P(TransferTest, CopyQueueFollowsComputeAfterWaitQueue) {
  const int64_t n = 1 << 16;
  std::vector<float> x(static_cast<size_t>(n));
  std::iota(x.begin(), x.end(), 1.0f);
  auto dev = device(size_t(n) * 4);
  auto host = pinned(size_t(n) * 4);
  auto ev = event(/*blocking_sync=*/true);
  ASSERT_TRUE(b_->upload(dev->p, x.data(), size_t(n) * 4).is_ok());
  ASSERT_TRUE(b_->add({dev->p, dev->p, n, DType::F32}).is_ok());  // x += x
  ASSERT_TRUE(t_->wait_queue(Queue::Copy, Queue::Compute).is_ok());
  ASSERT_TRUE(t_->copy_to_host_async(host->p, dev->p, size_t(n) * 4, Queue::Copy, ev->e).is_ok());
  std::atomic<bool> ok{false};
  std::thread waiter([&] { ok = t_->synchronize(ev->e).is_ok(); });
  waiter.join();
  ASSERT_TRUE(ok);
  const float* h = static_cast<const float*>(host->p);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(h[i], 2 * x[size_t(i)]) << i;
}

TEST_P(TransferTest, ZeroByteCopiesAcceptNullAndStillRecord) {
  auto ev = event();
  for (Queue q : kQueues) {
    ASSERT_TRUE(t_->copy_to_device_async(nullptr, nullptr, 0, q, ev->e).is_ok());
    ASSERT_TRUE(t_->copy_to_host_async(nullptr, nullptr, 0, q, ev->e).is_ok());
    ASSERT_TRUE(t_->copy_to_host_async(nullptr, nullptr, 0, q, kNoEvent).is_ok());
    ASSERT_TRUE(t_->synchronize(ev->e).is_ok());
    BlockCopy empty;  // no entries: nothing to check but the direction
    ASSERT_TRUE(t_->gather_async(empty, q, ev->e).is_ok());
    ASSERT_TRUE(t_->synchronize(ev->e).is_ok());
  }
}

TEST_P(TransferTest, GatherMovesListedBlocksOnlyBothWays) {
  const size_t bb = 48;  // block bytes: not a power of two
  const int64_t n_src = 8, n_dst = 10;
  // 0,1,2 -> 4,5,6 is one run; 3 -> 0 continues the source run only and 5 -> 1 the
  // destination run only (neither may merge); 7 -> 9 and 6 -> 2 go backwards or jump.
  // Destination blocks 3, 7 and 8 are not listed and keep their poison.
  const std::vector<int32_t> src_idx = {0, 1, 2, 3, 5, 7, 6};
  const std::vector<int32_t> dst_idx = {4, 5, 6, 0, 1, 9, 2};
  auto expected = [&](const std::vector<uint8_t>& src, std::vector<uint8_t> dst) {
    for (size_t i = 0; i < src_idx.size(); ++i)
      std::memcpy(dst.data() + size_t(dst_idx[i]) * bb, src.data() + size_t(src_idx[i]) * bb, bb);
    return dst;
  };
  const auto src_v = pattern(size_t(n_src) * bb, 5);
  const std::vector<uint8_t> junk(size_t(n_dst) * bb, 0xFF);
  for (Queue q : kQueues) {
    SCOPED_TRACE(queue_name(q));
    auto ev = event();
    {  // host -> device slots
      auto host = pinned(src_v.size());
      auto dev = device(junk.size());
      std::memcpy(host->p, src_v.data(), src_v.size());
      ASSERT_TRUE(b_->upload(dev->p, junk.data(), junk.size()).is_ok());
      ASSERT_TRUE(t_->wait_queue(q, Queue::Compute).is_ok());  // after the poison lands
      BlockCopy c;
      c.dir = CopyDir::HostToDevice;
      c.dst = dev->p, c.src = host->p, c.block_bytes = bb;
      c.dst_blocks = n_dst, c.src_blocks = n_src;
      c.src_index = src_idx, c.dst_index = dst_idx;
      ASSERT_TRUE(t_->gather_async(c, q, ev->e).is_ok());
      ASSERT_TRUE(t_->wait(Queue::Compute, ev->e).is_ok());
      EXPECT_EQ(read_device(dev->p, junk.size()), expected(src_v, junk));
    }
    {  // device -> host slots
      auto dev = device(src_v.size());
      auto host = pinned(junk.size());
      ASSERT_TRUE(b_->upload(dev->p, src_v.data(), src_v.size()).is_ok());
      std::memcpy(host->p, junk.data(), junk.size());
      ASSERT_TRUE(t_->wait_queue(q, Queue::Compute).is_ok());
      BlockCopy c;
      c.dir = CopyDir::DeviceToHost;
      c.dst = host->p, c.src = dev->p, c.block_bytes = bb;
      c.dst_blocks = n_dst, c.src_blocks = n_src;
      c.src_index = src_idx, c.dst_index = dst_idx;
      ASSERT_TRUE(t_->gather_async(c, q, ev->e).is_ok());
      ASSERT_TRUE(t_->synchronize(ev->e).is_ok());
      const std::vector<uint8_t> got(host->bytes(), host->bytes() + junk.size());
      EXPECT_EQ(got, expected(src_v, junk));
    }
  }
}

// Host selection's mirror: the same sorted ids on both sides, into a same-shaped table, with no
// event (a later synchronize of the queue covers it); index 0 and the last block included.
TEST_P(TransferTest, GatherMirrorsSortedIdsInPlace) {
  const size_t bb = 256;
  const int64_t n = 64;
  const std::vector<int32_t> ids = {0, 1, 2, 9, 10, 30, 62, 63};
  const auto v = pattern(size_t(n) * bb, 41);
  auto dev = device(v.size());
  auto host = pinned(v.size());
  ASSERT_TRUE(b_->upload(dev->p, v.data(), v.size()).is_ok());
  std::memset(host->p, 0, v.size());
  BlockCopy c;
  c.dir = CopyDir::DeviceToHost;
  c.dst = host->p, c.src = dev->p, c.block_bytes = bb;
  c.dst_blocks = c.src_blocks = n;
  c.src_index = ids, c.dst_index = ids;
  ASSERT_TRUE(t_->wait_queue(Queue::Copy, Queue::Compute).is_ok());
  ASSERT_TRUE(t_->gather_async(c, Queue::Copy, kNoEvent).is_ok());
  ASSERT_TRUE(t_->synchronize(Queue::Copy).is_ok());
  std::vector<uint8_t> want(v.size(), 0);
  for (int32_t id : ids) std::memcpy(want.data() + size_t(id) * bb, v.data() + size_t(id) * bb, bb);
  EXPECT_EQ(std::memcmp(host->p, want.data(), want.size()), 0);
}

TEST_P(TransferTest, BadArgumentsAreRefusedBeforeAnythingIsQueued) {
  auto ev = event();
  auto host = pinned(256);
  auto dev = device(256);
  auto invalid = [](const Status& s) { return s.code() == StatusCode::InvalidArgument; };
  // Events.
  EXPECT_TRUE(invalid(t_->record(nullptr, Queue::Compute)));
  EXPECT_TRUE(invalid(t_->wait(Queue::Copy, nullptr)));
  EXPECT_TRUE(invalid(t_->query(nullptr).status()));
  EXPECT_TRUE(invalid(t_->synchronize(kNoEvent)));
  // Queues.
  EXPECT_TRUE(invalid(t_->record(ev->e, kBadQueue)));
  EXPECT_TRUE(invalid(t_->wait(kBadQueue, ev->e)));
  EXPECT_TRUE(invalid(t_->wait_queue(kBadQueue, Queue::Compute)));
  EXPECT_TRUE(invalid(t_->wait_queue(Queue::Copy, kBadQueue)));
  EXPECT_TRUE(invalid(t_->wait_queue(kBadQueue, kBadQueue)));
  EXPECT_TRUE(invalid(t_->synchronize(kBadQueue)));
  EXPECT_TRUE(invalid(t_->copy_to_device_async(dev->p, host->p, 16, kBadQueue, ev->e)));
  EXPECT_TRUE(invalid(t_->copy_to_host_async(host->p, dev->p, 16, kBadQueue, ev->e)));
  EXPECT_TRUE(invalid(t_->copy_to_host_async(host->p, dev->p, 0, kBadQueue, ev->e)));
  // Null buffers with bytes to copy.
  EXPECT_TRUE(invalid(t_->copy_to_device_async(nullptr, host->p, 16, Queue::Copy, ev->e)));
  EXPECT_TRUE(invalid(t_->copy_to_device_async(dev->p, nullptr, 16, Queue::Copy, ev->e)));
  EXPECT_TRUE(invalid(t_->copy_to_host_async(nullptr, dev->p, 16, Queue::Copy, ev->e)));
  EXPECT_TRUE(invalid(t_->copy_to_host_async(host->p, nullptr, 16, Queue::Compute, ev->e)));

  // Gathers: each broken copy of a valid one. The destination holds a marker that must survive
  // (an entry late in the list is the bad one, so a backend that queued as it checked would
  // already have written the first blocks).
  const std::vector<int32_t> src_idx = {0, 1, 2, 3};
  const std::vector<int32_t> dst_idx = {3, 2, 1, 0};
  BlockCopy good;
  good.dir = CopyDir::DeviceToHost;
  good.dst = host->p, good.src = dev->p, good.block_bytes = 64;
  good.dst_blocks = good.src_blocks = 4;
  good.src_index = src_idx, good.dst_index = dst_idx;
  EXPECT_TRUE(check_block_copy(good).is_ok());
  const auto v = pattern(256, 1);
  ASSERT_TRUE(b_->upload(dev->p, v.data(), v.size()).is_ok());
  ASSERT_TRUE(t_->synchronize(Queue::Compute).is_ok());
  std::memset(host->p, 0xAB, 256);

  const std::vector<int32_t> short_idx = {0, 1, 2};
  const std::vector<int32_t> neg_last = {0, 1, 2, -1};
  const std::vector<int32_t> big_last = {0, 1, 2, 4};
  const std::vector<int32_t> max_last = {0, 1, 2, std::numeric_limits<int32_t>::max()};
  std::vector<std::pair<const char*, BlockCopy>> bad;
  auto with = [&](const char* what, auto edit) {
    BlockCopy c = good;
    edit(c);
    bad.emplace_back(what, c);
  };
  with("direction", [](BlockCopy& c) { c.dir = static_cast<CopyDir>(5); });
  with("index counts differ", [&](BlockCopy& c) { c.dst_index = short_idx; });
  with("no source indices", [&](BlockCopy& c) { c.src_index = {}; });
  with("block_bytes 0", [](BlockCopy& c) { c.block_bytes = 0; });
  with("null dst", [](BlockCopy& c) { c.dst = nullptr; });
  with("null src", [](BlockCopy& c) { c.src = nullptr; });
  with("src_blocks 0", [](BlockCopy& c) { c.src_blocks = 0; });
  with("dst_blocks negative", [](BlockCopy& c) { c.dst_blocks = -4; });
  with("src index negative", [&](BlockCopy& c) { c.src_index = neg_last; });
  with("dst index past the end", [&](BlockCopy& c) { c.dst_index = big_last; });
  with("src index INT32_MAX", [&](BlockCopy& c) { c.src_index = max_last; });
  with("src buffer size overflows", [](BlockCopy& c) {
    c.block_bytes = std::numeric_limits<size_t>::max() / 2;
    c.src_blocks = 3;
  });
  for (const auto& [what, c] : bad) {
    SCOPED_TRACE(what);
    EXPECT_TRUE(invalid(check_block_copy(c)));
    for (Queue q : kQueues) {
      const Status s = t_->gather_async(c, q, ev->e);
      EXPECT_TRUE(invalid(s)) << s.to_string();
    }
    EXPECT_TRUE(invalid(t_->gather_async(c, kBadQueue, ev->e)));
  }
  EXPECT_TRUE(invalid(t_->gather_async(good, kBadQueue, ev->e)));
  ASSERT_TRUE(t_->synchronize(Queue::Copy).is_ok());
  ASSERT_TRUE(t_->synchronize(Queue::Compute).is_ok());
  for (int i = 0; i < 256; ++i) ASSERT_EQ(host->bytes()[i], 0xAB) << i;
  // The good one still goes through afterwards: nothing was left half-done.
  ASSERT_TRUE(t_->gather_async(good, Queue::Copy, ev->e).is_ok());
  ASSERT_TRUE(t_->synchronize(ev->e).is_ok());
  for (int b = 0; b < 4; ++b)
    EXPECT_EQ(std::memcmp(host->bytes() + (3 - b) * 64, v.data() + b * 64, 64), 0) << b;
}

INSTANTIATE_TEST_SUITE_P(Backends, TransferTest, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace gsa::backend

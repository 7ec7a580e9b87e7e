// Helpers for the offload tests: a temporary directory per test, random payloads, direct edits of
// files on disk, and FaultyIo, a FileIo that injects the faults a real disk can produce.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "offload/file_io.h"

namespace gsa::offload::testing {

/// A fresh directory under /tmp (mkdtemp), removed with everything in it at destruction.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/gsa-offload-test-XXXXXX";
    const char* p = ::mkdtemp(tmpl);
    EXPECT_NE(p, nullptr) << "mkdtemp failed: errno " << errno;
    if (p) path_ = p;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::vector<std::byte> random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> out(n);
  for (auto& b : out) b = std::byte(rng() & 0xff);
  return out;
}

/// XORs the byte at `offset` of `path` with `mask`, as a bit rot on disk would.
inline void flip_byte_on_disk(const std::string& path, int64_t offset, uint8_t mask = 0x01) {
  const int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  unsigned char b = 0;
  ASSERT_EQ(::pread(fd, &b, 1, offset), 1) << path << " @" << offset;
  b ^= mask;
  ASSERT_EQ(::pwrite(fd, &b, 1, offset), 1) << path << " @" << offset;
  ::close(fd);
}

/// Writes `bytes` as the whole content of `path`.
inline void write_file(const std::string& path, const std::vector<std::byte>& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0) << path;
  if (!bytes.empty()) {
    ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), ssize_t(bytes.size())) << path;
  }
  ::close(fd);
}

/// Forwards to the POSIX FileIo and injects faults on request. Every knob is atomic, so a test
/// may change them while other threads use the store.
class FaultyIo final : public FileIo {
 public:
  /// The n-th pwrite from now (1 = the next one) fails with `fail_errno`; 0 disables.
  std::atomic<int64_t> fail_write_in{0};
  std::atomic<int> fail_errno{ENOSPC};
  /// Reads of at least this many bytes return only half of what was asked; 0 disables.
  std::atomic<int64_t> short_read_min{0};
  /// Reads see the file end at this offset (nothing at or past it); -1 disables.
  std::atomic<int64_t> eof_at{-1};
  /// Reads of at least this many bytes come back with their first byte flipped; 0 disables.
  std::atomic<int64_t> flip_read_min{0};
  /// Every pread and pwrite sleeps this long first (a slow disk).
  std::atomic<int64_t> delay_us{0};

  std::atomic<int64_t> n_writes{0}, n_reads{0};

  int open(const char* path, int flags, int mode) override {
    return base().open(path, flags, mode);
  }
  int64_t pread(int fd, void* buf, size_t n, int64_t offset) override {
    n_reads.fetch_add(1);
    delay();
    const int64_t min_short = short_read_min.load();
    if (min_short > 0 && int64_t(n) >= min_short) n /= 2;
    const int64_t eof = eof_at.load();
    if (eof >= 0) n = size_t(std::clamp<int64_t>(eof - offset, 0, int64_t(n)));
    if (n == 0) return 0;
    const int64_t r = base().pread(fd, buf, n, offset);
    const int64_t min_flip = flip_read_min.load();
    if (r > 0 && min_flip > 0 && int64_t(n) >= min_flip) static_cast<unsigned char*>(buf)[0] ^= 1;
    return r;
  }
  int64_t pwrite(int fd, const void* buf, size_t n, int64_t offset) override {
    n_writes.fetch_add(1);
    delay();
    // Counts down only while armed; the call that takes it from 1 to 0 fails.
    int64_t left = fail_write_in.load();
    while (left > 0 && !fail_write_in.compare_exchange_weak(left, left - 1)) {
    }
    if (left == 1) return -fail_errno.load();
    return base().pwrite(fd, buf, n, offset);
  }
  int fsync(int fd) override { return base().fsync(fd); }
  int close(int fd) override { return base().close(fd); }
  int unlink(const char* path) override { return base().unlink(path); }
  int mkdir(const char* path, int mode) override { return base().mkdir(path, mode); }

 private:
  static FileIo& base() { return posix_file_io(); }
  void delay() const {
    const int64_t us = delay_us.load();
    if (us > 0) std::this_thread::sleep_for(std::chrono::microseconds(us));
  }
};

}  // namespace gsa::offload::testing

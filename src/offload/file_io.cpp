// The POSIX FileIo: thin wrappers that turn errno into a negative return value.
#include "offload/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace gsa::offload {

namespace {

// Retries `call` while it fails with EINTR; returns its result, or -errno on failure.
template <typename F>
auto retry_eintr(F call) -> decltype(call()) {
  for (;;) {
    auto r = call();
    if (r >= 0) return r;
    if (errno != EINTR) return -errno;
  }
}

class PosixFileIo final : public FileIo {
 public:
  int open(const char* path, int flags, int mode) override {
    return retry_eintr([&] { return ::open(path, flags, mode); });
  }
  int64_t pread(int fd, void* buf, size_t n, int64_t offset) override {
    return retry_eintr([&] { return int64_t(::pread(fd, buf, n, off_t(offset))); });
  }
  int64_t pwrite(int fd, const void* buf, size_t n, int64_t offset) override {
    return retry_eintr([&] { return int64_t(::pwrite(fd, buf, n, off_t(offset))); });
  }
  int fsync(int fd) override {
    return retry_eintr([&] { return ::fsync(fd); });
  }
  int close(int fd) override {
    // Linux releases the descriptor even when close fails with EINTR: never retry it.
    return ::close(fd) == 0 ? 0 : -errno;
  }
  int unlink(const char* path) override {
    return retry_eintr([&] { return ::unlink(path); });
  }
  int mkdir(const char* path, int mode) override {
    return retry_eintr([&] { return ::mkdir(path, mode_t(mode)); });
  }
};

}  // namespace

FileIo& posix_file_io() {
  static PosixFileIo* io = new PosixFileIo();  // never destroyed: usable during static teardown
  return *io;
}

}  // namespace gsa::offload

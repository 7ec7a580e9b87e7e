// FileIo: the few POSIX file calls the offload store makes, behind an interface so tests can
// inject faults (a full disk, short reads, flipped bytes, a slow disk) without touching a real
// device. Every call reports failure as a negative errno value instead of setting errno, so an
// injected fault cannot be lost to an unrelated call in between. Implementations must be safe to
// call from several threads at once; the store shares one across all its callers.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gsa::offload {

class FileIo {
 public:
  virtual ~FileIo() = default;

  /// open(2): a file descriptor >= 0, or -errno.
  virtual int open(const char* path, int flags, int mode) = 0;
  /// pread(2): bytes read (0 at end of file, fewer than `n` near it), or -errno.
  virtual int64_t pread(int fd, void* buf, size_t n, int64_t offset) = 0;
  /// pwrite(2): bytes written (possibly fewer than `n`), or -errno.
  virtual int64_t pwrite(int fd, const void* buf, size_t n, int64_t offset) = 0;
  /// fsync(2): 0, or -errno.
  virtual int fsync(int fd) = 0;
  /// close(2): 0, or -errno. The descriptor is released either way.
  virtual int close(int fd) = 0;
  /// unlink(2): 0, or -errno.
  virtual int unlink(const char* path) = 0;
  /// mkdir(2) of one level: 0, or -errno (-EEXIST when it is already there).
  virtual int mkdir(const char* path, int mode) = 0;
};

/// The process-wide POSIX implementation (stateless, thread-safe, never destroyed). Calls
/// interrupted by a signal (EINTR) are retried.
FileIo& posix_file_io();

}  // namespace gsa::offload

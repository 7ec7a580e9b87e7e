// FileBlockStore: the file-store home tier of KV offload. A directory of block files, one per KV
// block, keyed by the block's prefix-cache chain hash (kv::PrefixCache::chain_hash), each holding
// every layer's K and V bytes of that block. The store treats a layer's bytes as opaque: the
// caller chooses the layout and gives only its size (StoreGeometry::layer_bytes).
//
// Naming: <dir>/<hh>/<hhhhhhhhhhhhhhhh>.kvb, the hash as 16 lowercase hex digits, in a
// subdirectory named by its first two (created on demand). Format: offload/block_file.h.
//
// Trust: nothing read from disk is returned unverified. Every read checks the header (magic,
// version, its own checksum, geometry) and the layer's XXH3-64 checksum; on any failure the
// caller's buffer is zeroed and an error is returned. A file written for another model_id is a
// miss (NotFound), never used; writing that hash replaces it with a block of this store's model.
// The chain hash covers only tokens, so two models' blocks of one prompt share a file name:
// give each model its own directory to keep both.
//
// Writes: a block's layers may arrive one at a time in any order (e.g. as each layer's KV is
// copied out); the block is complete, and contains() true, once every layer is written. A layer
// counts as written only after its payload and then the header saying so were both written, so
// a failed write (full disk, I/O error) leaves it unwritten (reads say NotFound), never half
// there. A failed header update drops the block's file. Overwriting a written layer first marks
// it unwritten. There is no fsync unless sync() is called: after a power loss a layer's payload
// may be missing though its header says written, which its checksum then catches (Io).
//
// Threading: every method may be called from any number of threads at once. Calls on one hash
// are ordered by a lock (one of a fixed set of lock stripes, by hash): writes and removes of a
// hash are exclusive, reads and contains() of a hash share it. Calls on distinct hashes run in
// parallel, apart from the rare pair that shares a stripe. Only one FileBlockStore (in one
// process) may write a directory at a time; the store does not lock against other writers.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <span>
#include <string>

#include "core/status.h"
#include "offload/block_file.h"
#include "offload/file_io.h"

namespace gsa::offload {

/// Fixed shape of every block in a store.
struct StoreGeometry {
  int n_layers = 0;         // layers per block, 1 .. kMaxLayers
  int64_t layer_bytes = 0;  // K+V bytes of one block in one layer (caller's layout), > 0
};

/// Counters since open(); a snapshot of independent atomics, not one consistent instant.
struct StoreStats {
  int64_t blocks_written = 0;     // blocks that became complete through write_layer
  int64_t layers_written = 0;     // successful write_layer calls
  int64_t bytes_written = 0;      // payload bytes of those calls
  int64_t bytes_read = 0;         // payload bytes returned verified by read_layer
  int64_t checksum_failures = 0;  // header or payload checksum mismatches seen by read_layer
  int64_t io_errors = 0;          // other Io statuses returned (failed calls, short reads, ...)
};

class FileBlockStore {
 public:
  /// Opens (creating it and its parents if missing) the store directory `dir` for blocks of
  /// geometry `g` written by model `model_id`. `io` (default: posix_file_io()) is not owned
  /// and must outlive the store. InvalidArgument for a bad geometry; Io naming `dir` when it
  /// cannot be created, is not a directory, or a probe file cannot be created in it.
  static Result<std::unique_ptr<FileBlockStore>> open(std::string dir, StoreGeometry g,
                                                      uint64_t model_id, FileIo* io = nullptr);

  FileBlockStore(const FileBlockStore&) = delete;
  FileBlockStore& operator=(const FileBlockStore&) = delete;

  /// Writes layer `layer` of block `hash` (bytes.size() must be layer_bytes), creating the
  /// file when missing or replacing it when it belongs to another model or is unreadable.
  /// InvalidArgument for a bad layer or size; Io with the errno text and the file name when the
  /// disk is full or a write fails, in which case the layer is left unwritten.
  Status write_layer(uint64_t hash, int layer, std::span<const std::byte> bytes);

  /// Reads layer `layer` of block `hash` into `out` (out.size() must be layer_bytes) and
  /// verifies it. NotFound when there is no file, the layer was never written, or the file
  /// belongs to another model. Io naming the file on a short read, a checksum mismatch, or a
  /// malformed header (bad magic, version, geometry, header checksum). `out` is zeroed on
  /// every error.
  Status read_layer(uint64_t hash, int layer, std::span<std::byte> out);

  /// Whether block `hash` has a valid header of this model with every layer written. Reads only
  /// the header: a payload corrupted since shows up in read_layer, not here.
  bool contains(uint64_t hash) const;

  /// Deletes block `hash`'s file. NotFound when there is none; Io when unlink fails.
  Status remove(uint64_t hash);

  /// fsyncs block `hash`'s file, so what was written so far survives a power loss. NotFound
  /// when there is no file.
  Status sync(uint64_t hash);

  StoreStats stats() const;

  const std::string& dir() const { return dir_; }
  const StoreGeometry& geometry() const { return geometry_; }
  uint64_t model_id() const { return model_id_; }
  /// Path of block `hash`'s file (whether or not it exists).
  std::string path_of(uint64_t hash) const;
  /// File offset of layer `layer`'s payload in every block file of this store.
  int64_t payload_offset(int layer) const;

 private:
  struct Counters {
    std::atomic<int64_t> blocks_written{0}, layers_written{0}, bytes_written{0}, bytes_read{0},
        checksum_failures{0}, io_errors{0};
  };
  FileBlockStore(std::string dir, StoreGeometry g, uint64_t model_id, FileIo* io);

  std::shared_mutex& stripe(uint64_t hash) const;
  Status check_layer(int layer, size_t size) const;
  Status errno_status(const char* what, const std::string& path, int err) const;
  Status open_for_write(const std::string& path, int* fd);
  // Reads and verifies the header of open file `fd`; statuses as read_layer's. Sets
  // `*checksum_failed` when the header checksum is what failed.
  Result<BlockHeader> load_header(int fd, const std::string& path, uint64_t hash,
                                  bool* checksum_failed) const;
  Status read_exact(int fd, std::span<std::byte> out, int64_t offset, const std::string& path,
                    const char* what) const;
  Status write_exact(int fd, std::span<const std::byte> bytes, int64_t offset,
                     const std::string& path, const char* what);
  Status write_header(int fd, const BlockHeader& h, const std::string& path);
  Status write_locked(int fd, const std::string& path, uint64_t hash, int layer,
                      std::span<const std::byte> bytes);
  Status read_locked(int fd, const std::string& path, uint64_t hash, int layer,
                     std::span<std::byte> out, bool* checksum_failed);
  // Counts `s` in the stats when it is an Io status and returns it.
  Status note(Status s, bool checksum_failed = false) const;

  static constexpr size_t kStripes = 64;

  std::string dir_;
  StoreGeometry geometry_;
  uint64_t model_id_ = 0;
  FileIo* io_ = nullptr;
  mutable std::array<std::shared_mutex, kStripes> stripes_;
  mutable Counters counters_;
};

}  // namespace gsa::offload

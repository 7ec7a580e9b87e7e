// FileBlockStore: block files on a local directory (contracts in block_store.h).
#include "offload/block_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <system_error>
#include <vector>

namespace gsa::offload {

namespace {

// Largest payload of one block file: far above any real KV block, low enough that no offset
// computation can overflow.
constexpr int64_t kMaxBlockPayload = int64_t(1) << 40;

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

// Closes a descriptor through the store's FileIo when the scope ends.
class FdGuard {
 public:
  FdGuard(FileIo& io, int fd) : io_(io), fd_(fd) {}
  ~FdGuard() { (void)io_.close(fd_); }
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;

 private:
  FileIo& io_;
  int fd_;
};

Status check_geometry(const StoreGeometry& g) {
  if (g.n_layers < 1 || g.n_layers > kMaxLayers) {
    return invalid_argument("offload store: n_layers {} outside [1, {}]", g.n_layers, kMaxLayers);
  }
  if (g.layer_bytes < 1 || g.layer_bytes > kMaxBlockPayload / g.n_layers) {
    return invalid_argument("offload store: layer_bytes {} outside [1, {}] for {} layers",
                            g.layer_bytes, kMaxBlockPayload / g.n_layers, g.n_layers);
  }
  return Status::ok();
}

// Creates `dir` (and its parents) when missing and proves a file can be created in it.
Status prepare_dir(const std::string& dir, FileIo& io) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return io_error("offload store directory '{}' cannot be created: {}", dir, ec.message());
  if (!std::filesystem::is_directory(dir, ec)) {
    return io_error("offload store directory '{}' is not a directory", dir);
  }
  static std::atomic<uint64_t> probe_counter{0};
  const std::string probe = fmt::format("{}/.gsa-probe-{}-{}", dir, ::getpid(), ++probe_counter);
  const int fd = io.open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return io_error("offload store directory '{}' is not writable: {}", dir, errno_text(-fd));
  }
  (void)io.close(fd);
  (void)io.unlink(probe.c_str());
  return Status::ok();
}

}  // namespace

Result<std::unique_ptr<FileBlockStore>> FileBlockStore::open(std::string dir, StoreGeometry g,
                                                             uint64_t model_id, FileIo* io) {
  GSA_RETURN_IF_ERROR(check_geometry(g));
  if (dir.empty()) return invalid_argument("offload store: empty directory name");
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  FileIo& fio = io ? *io : posix_file_io();
  GSA_RETURN_IF_ERROR(prepare_dir(dir, fio));
  return std::unique_ptr<FileBlockStore>(new FileBlockStore(std::move(dir), g, model_id, &fio));
}

FileBlockStore::FileBlockStore(std::string dir, StoreGeometry g, uint64_t model_id, FileIo* io)
    : dir_(std::move(dir)), geometry_(g), model_id_(model_id), io_(io) {}

std::string FileBlockStore::path_of(uint64_t hash) const {
  return fmt::format("{}/{:02x}/{:016x}.kvb", dir_, hash >> 56, hash);
}

int64_t FileBlockStore::payload_offset(int layer) const {
  return payload_base(geometry_.n_layers) + int64_t(layer) * geometry_.layer_bytes;
}

std::shared_mutex& FileBlockStore::stripe(uint64_t hash) const {
  return stripes_[(hash ^ (hash >> 29) ^ (hash >> 47)) % kStripes];
}

Status FileBlockStore::check_layer(int layer, size_t size) const {
  if (layer < 0 || layer >= geometry_.n_layers) {
    return invalid_argument("offload store: layer {} outside [0, {})", layer, geometry_.n_layers);
  }
  if (int64_t(size) != geometry_.layer_bytes) {
    return invalid_argument("offload store: layer buffer is {} bytes, expected {}", size,
                            geometry_.layer_bytes);
  }
  return Status::ok();
}

Status FileBlockStore::errno_status(const char* what, const std::string& path, int err) const {
  return io_error("block file '{}': {} failed: {}", path, what, errno_text(err));
}

Status FileBlockStore::note(Status s, bool checksum_failed) const {
  if (s.code() == StatusCode::Io) {
    (checksum_failed ? counters_.checksum_failures : counters_.io_errors)
        .fetch_add(1, std::memory_order_relaxed);
  }
  return s;
}

Status FileBlockStore::read_exact(int fd, std::span<std::byte> out, int64_t offset,
                                  const std::string& path, const char* what) const {
  size_t done = 0;
  while (done < out.size()) {
    const int64_t n = io_->pread(fd, out.data() + done, out.size() - done, offset + int64_t(done));
    if (n < 0) return errno_status("read", path, int(-n));
    if (n == 0) {
      return io_error("block file '{}': short read of {}: {} of {} bytes at offset {}", path, what,
                      done, out.size(), offset);
    }
    done += size_t(n);
  }
  return Status::ok();
}

Status FileBlockStore::write_exact(int fd, std::span<const std::byte> bytes, int64_t offset,
                                   const std::string& path, const char* what) {
  size_t done = 0;
  while (done < bytes.size()) {
    const int64_t n =
        io_->pwrite(fd, bytes.data() + done, bytes.size() - done, offset + int64_t(done));
    if (n < 0) return errno_status(what, path, int(-n));
    if (n == 0) {
      return io_error("block file '{}': {} wrote nothing at offset {}", path, what,
                      offset + int64_t(done));
    }
    done += size_t(n);
  }
  return Status::ok();
}

Status FileBlockStore::write_header(int fd, const BlockHeader& h, const std::string& path) {
  const std::vector<std::byte> bytes = encode_header(h);
  return write_exact(fd, bytes, 0, path, "header write");
}

Result<BlockHeader> FileBlockStore::load_header(int fd, const std::string& path, uint64_t hash,
                                                bool* checksum_failed) const {
  *checksum_failed = false;
  std::vector<std::byte> buf(static_cast<size_t>(kFixedHeaderBytes));
  GSA_RETURN_IF_ERROR(read_exact(fd, buf, 0, path, "header"));
  Result<int> n_layers = peek_header_layers(buf);
  if (!n_layers) return io_error("block file '{}': {}", path, n_layers.status().message());
  buf.resize(size_t(header_bytes(*n_layers)));
  GSA_RETURN_IF_ERROR(read_exact(fd, std::span(buf).subspan(size_t(kFixedHeaderBytes)),
                                 kFixedHeaderBytes, path, "header"));
  Result<BlockHeader> h = decode_header(buf, checksum_failed);
  if (!h) return io_error("block file '{}': {}", path, h.status().message());
  if (h->model_id != model_id_) {
    return not_found("block file '{}' belongs to model {:016x}, not {:016x}", path, h->model_id,
                     model_id_);
  }
  if (h->n_layers != geometry_.n_layers || h->layer_bytes != geometry_.layer_bytes ||
      h->hash != hash) {
    return io_error(
        "block file '{}': header says {} layers of {} bytes for hash {:016x}, expected {} of {} "
        "for {:016x}",
        path, h->n_layers, h->layer_bytes, h->hash, geometry_.n_layers, geometry_.layer_bytes,
        hash);
  }
  return h;
}

Status FileBlockStore::open_for_write(const std::string& path, int* fd) {
  const int flags = O_RDWR | O_CREAT | O_CLOEXEC;
  *fd = io_->open(path.c_str(), flags, 0644);
  if (*fd == -ENOENT) {  // first block of this subdirectory
    const std::string sub = path.substr(0, path.rfind('/'));
    const int r = io_->mkdir(sub.c_str(), 0755);
    if (r < 0 && r != -EEXIST) return errno_status("mkdir of its directory", path, -r);
    *fd = io_->open(path.c_str(), flags, 0644);
  }
  if (*fd < 0) return errno_status("open", path, -*fd);
  return Status::ok();
}

Status FileBlockStore::write_locked(int fd, const std::string& path, uint64_t hash, int layer,
                                    std::span<const std::byte> bytes) {
  // A missing, foreign or unreadable header means the file is (re)started for this model.
  bool checksum_failed = false;
  Result<BlockHeader> loaded = load_header(fd, path, hash, &checksum_failed);
  const bool fresh = !loaded.is_ok();
  BlockHeader h =
      fresh ? BlockHeader::empty(model_id_, geometry_.n_layers, geometry_.layer_bytes, hash)
            : std::move(loaded).value();
  const bool was_complete = h.complete();
  auto drop_file = [&](Status s) {
    (void)io_->unlink(path.c_str());
    return s;
  };
  if (h.written[size_t(layer)]) {  // overwrite: never let the old checksum cover new bytes
    h.written[size_t(layer)] = 0;
    Status s = write_header(fd, h, path);
    if (!s) return drop_file(s);
  }
  Status s = write_exact(fd, bytes, payload_offset(layer), path, "payload write");
  if (!s) return fresh ? drop_file(s) : s;  // a fresh file has no valid header yet
  h.written[size_t(layer)] = 1;
  h.checksums[size_t(layer)] = layer_checksum(hash, layer, bytes);
  s = write_header(fd, h, path);
  if (!s) return drop_file(s);  // the header on disk may be torn
  counters_.layers_written.fetch_add(1, std::memory_order_relaxed);
  counters_.bytes_written.fetch_add(int64_t(bytes.size()), std::memory_order_relaxed);
  if (!was_complete && h.complete()) {
    counters_.blocks_written.fetch_add(1, std::memory_order_relaxed);
  }
  return Status::ok();
}

Status FileBlockStore::write_layer(uint64_t hash, int layer, std::span<const std::byte> bytes) {
  GSA_RETURN_IF_ERROR(check_layer(layer, bytes.size()));
  std::unique_lock lock(stripe(hash));
  const std::string path = path_of(hash);
  int fd = -1;
  GSA_RETURN_IF_ERROR(note(open_for_write(path, &fd)));
  FdGuard guard(*io_, fd);
  return note(write_locked(fd, path, hash, layer, bytes));
}

Status FileBlockStore::read_locked(int fd, const std::string& path, uint64_t hash, int layer,
                                   std::span<std::byte> out, bool* checksum_failed) {
  GSA_ASSIGN_OR_RETURN(const BlockHeader h, load_header(fd, path, hash, checksum_failed));
  if (!h.written[size_t(layer)]) {
    return not_found("block file '{}': layer {} was not written", path, layer);
  }
  GSA_RETURN_IF_ERROR(read_exact(fd, out, payload_offset(layer), path, "layer payload"));
  const uint64_t actual = layer_checksum(hash, layer, out);
  if (actual != h.checksums[size_t(layer)]) {
    *checksum_failed = true;
    return io_error(
        "block file '{}': layer {} checksum mismatch (stored {:016x}, computed {:016x})", path,
        layer, h.checksums[size_t(layer)], actual);
  }
  return Status::ok();
}

Status FileBlockStore::read_layer(uint64_t hash, int layer, std::span<std::byte> out) {
  GSA_RETURN_IF_ERROR(check_layer(layer, out.size()));
  std::shared_lock lock(stripe(hash));
  const std::string path = path_of(hash);
  const int fd = io_->open(path.c_str(), O_RDONLY | O_CLOEXEC, 0);
  Status s;
  bool checksum_failed = false;
  if (fd == -ENOENT) {
    s = not_found("no block file '{}'", path);
  } else if (fd < 0) {
    s = errno_status("open", path, -fd);
  } else {
    FdGuard guard(*io_, fd);
    s = read_locked(fd, path, hash, layer, out, &checksum_failed);
  }
  if (!s) {
    std::memset(out.data(), 0, out.size());
    return note(s, checksum_failed);
  }
  counters_.bytes_read.fetch_add(int64_t(out.size()), std::memory_order_relaxed);
  return s;
}

bool FileBlockStore::contains(uint64_t hash) const {
  std::shared_lock lock(stripe(hash));
  const std::string path = path_of(hash);
  const int fd = io_->open(path.c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return false;
  FdGuard guard(*io_, fd);
  bool checksum_failed = false;
  Result<BlockHeader> h = load_header(fd, path, hash, &checksum_failed);
  return h.is_ok() && h->complete();
}

Status FileBlockStore::remove(uint64_t hash) {
  std::unique_lock lock(stripe(hash));
  const std::string path = path_of(hash);
  const int r = io_->unlink(path.c_str());
  if (r == -ENOENT) return not_found("no block file '{}'", path);
  if (r < 0) return note(errno_status("unlink", path, -r));
  return Status::ok();
}

Status FileBlockStore::sync(uint64_t hash) {
  std::shared_lock lock(stripe(hash));
  const std::string path = path_of(hash);
  const int fd = io_->open(path.c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (fd == -ENOENT) return not_found("no block file '{}'", path);
  if (fd < 0) return note(errno_status("open", path, -fd));
  FdGuard guard(*io_, fd);
  const int r = io_->fsync(fd);
  if (r < 0) return note(errno_status("fsync", path, -r));
  // The file's directory entry too, in case the file is new.
  const std::string sub = path.substr(0, path.rfind('/'));
  const int dfd = io_->open(sub.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (dfd < 0) return note(errno_status("open of its directory", path, -dfd));
  FdGuard dir_guard(*io_, dfd);
  const int dr = io_->fsync(dfd);
  if (dr < 0) return note(errno_status("fsync of its directory", path, -dr));
  return Status::ok();
}

StoreStats FileBlockStore::stats() const {
  auto get = [](const std::atomic<int64_t>& a) { return a.load(std::memory_order_relaxed); };
  StoreStats s;
  s.blocks_written = get(counters_.blocks_written);
  s.layers_written = get(counters_.layers_written);
  s.bytes_written = get(counters_.bytes_written);
  s.bytes_read = get(counters_.bytes_read);
  s.checksum_failures = get(counters_.checksum_failures);
  s.io_errors = get(counters_.io_errors);
  return s;
}

}  // namespace gsa::offload

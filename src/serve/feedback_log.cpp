#include "serve/feedback_log.h"

#include "mmintent/core/log.h"
#include "mmintent/error.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace mmintent::serve {
namespace {

std::string os_error(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

/// Writes all of `data` to `fd`, retrying short writes and EINTR.
bool write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

void sync_folder(const std::string& path) {
  const auto folder = std::filesystem::path(path).parent_path();
  const int dir = ::open(folder.empty() ? "." : folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) throw Error(os_error("cannot open the folder of", path));
  const int rc = ::fsync(dir);
  ::close(dir);
  if (rc != 0) throw Error(os_error("cannot sync the folder of", path));
}

}  // namespace

FeedbackLogWriter::FeedbackLogWriter(const std::string& path) : path_(path) {
  const bool existed = std::filesystem::exists(path);
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(os_error("serve.feedback_log: cannot open", path));
  // Cut an unfinished last line: it was never acknowledged (acknowledgement follows the sync of
  // a whole line), and a new record must not be glued to it.
  struct stat st {};
  if (::fstat(fd_, &st) != 0) throw Error(os_error("serve.feedback_log: cannot stat", path));
  off_t end = st.st_size;
  if (end > 0) {
    char c = 0;
    off_t keep = end;
    while (keep > 0) {
      if (::pread(fd_, &c, 1, keep - 1) != 1) throw Error(os_error("serve.feedback_log: cannot read", path));
      if (c == '\n') break;
      --keep;
    }
    if (keep < end) {
      if (::ftruncate(fd_, keep) != 0 || ::fdatasync(fd_) != 0) {
        throw Error(os_error("serve.feedback_log: cannot cut the unfinished last line of", path));
      }
      recovered_ = static_cast<int64_t>(end - keep);
      log::warn("serve", "feedback log " + path + ": cut an unfinished last line of " + std::to_string(recovered_) +
                             " bytes (a previous server stopped mid-write; it was never acknowledged)");
    }
  }
  if (!existed) sync_folder(path);
  flusher_ = std::thread([this] { flush_loop(); });
}

FeedbackLogWriter::~FeedbackLogWriter() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  flusher_.join();
  ::close(fd_);
}

void FeedbackLogWriter::append(const std::string& line) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (stopping_) throw Error("the feedback log is closing");
  pending_ += line;
  pending_ += '\n';
  const uint64_t mine = ++submitted_;
  work_.notify_one();
  done_.wait(lock, [&] { return durable_ >= mine || failed_upto_ >= mine; });
  if (durable_ < mine) throw Error("cannot write the feedback log " + path_ + ": " + failure_);
}

void FeedbackLogWriter::flush_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    work_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
    if (pending_.empty()) return;  // stopping, all written
    std::string batch;
    batch.swap(pending_);
    const uint64_t upto = submitted_;
    lock.unlock();
    // One write and one sync for every line queued meanwhile (group commit).
    std::string error;
    const off_t before = ::lseek(fd_, 0, SEEK_END);
    if (!write_all(fd_, batch.data(), batch.size())) {
      error = std::strerror(errno);
      // No half line may stay behind to glue the next record to.
      if (before >= 0 && ::ftruncate(fd_, before) != 0) error += "; and cannot cut the partial write";
    } else if (::fdatasync(fd_) != 0) {
      error = std::string("sync: ") + std::strerror(errno);
    }
    lock.lock();
    if (error.empty()) {
      durable_ = upto;
    } else {
      failed_upto_ = upto;
      failure_ = error;
      log::warn("serve", "feedback log " + path_ + ": " + error);
    }
    done_.notify_all();
  }
}

void write_file_durably(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(os_error("cannot create", path));
  const bool ok = write_all(fd, bytes.data(), bytes.size()) && ::fsync(fd) == 0;
  const int saved = errno;
  ::close(fd);
  errno = saved;
  if (!ok) throw Error(os_error("cannot write", path));
  sync_folder(path);
}

}  // namespace mmintent::serve

#pragma once
/// The server's durable feedback log: JSONL lines appended with group commit. A line is
/// acknowledged (append returns) only once it and everything before it are on disk
/// (write + fdatasync); the lines of concurrent callers share one fdatasync. Internal.

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mmintent::serve {

class FeedbackLogWriter {
 public:
  /// Opens (creates) `path` for appending; its folder must exist. An unfinished last line (a
  /// previous server killed mid-write, never acknowledged) is cut off first, so every record
  /// starts on a line of its own; `recovered` then says how many bytes were dropped. Throws
  /// Error naming the file when it cannot be opened, read or truncated.
  explicit FeedbackLogWriter(const std::string& path);
  /// Writes what is pending, then closes the file.
  ~FeedbackLogWriter();
  FeedbackLogWriter(const FeedbackLogWriter&) = delete;
  FeedbackLogWriter& operator=(const FeedbackLogWriter&) = delete;

  /// Appends `line` (one JSON object, no newline) and returns once it is on disk. Throws Error
  /// when the write or the sync failed (the record is then not acknowledged).
  void append(const std::string& line);
  const std::string& path() const { return path_; }
  int64_t recovered() const { return recovered_; }

 private:
  void flush_loop();

  std::string path_;
  int fd_ = -1;
  int64_t recovered_ = 0;
  std::mutex mutex_;
  std::condition_variable work_, done_;
  std::string pending_;          ///< lines not yet written
  uint64_t submitted_ = 0;       ///< sequence number of the last line queued
  uint64_t durable_ = 0;         ///< every line up to this one is on disk
  uint64_t failed_upto_ = 0;     ///< lines up to this one failed to write
  std::string failure_;
  bool stopping_ = false;
  std::thread flusher_;
};

/// Writes `bytes` to `path` (a new file) and syncs it and its folder; throws Error naming the
/// file. Used for the images of feedback records, before their line is appended.
void write_file_durably(const std::string& path, const std::string& bytes);

}  // namespace mmintent::serve

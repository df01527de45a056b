#pragma once
/// Error types thrown by mmintent. Library code throws; only the CLI turns errors into exit codes.

#include <stdexcept>
#include <string>

namespace mmintent {

/// Base of every error the library throws on purpose.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// A configuration problem: names the file, the dotted key path and the line.
class ConfigError : public Error {
 public:
  ConfigError(std::string file, std::string key, int line, const std::string& message);
  const std::string& file() const noexcept { return file_; }
  const std::string& key() const noexcept { return key_; }
  /// 1-based line in the file, 0 when unknown (e.g. a command-line override).
  int line() const noexcept { return line_; }

 private:
  std::string file_;
  std::string key_;
  int line_;
};

/// A data problem: names the file and the line (or record) that caused it.
class DataError : public Error {
 public:
  DataError(std::string file, long line, const std::string& message);
  const std::string& file() const noexcept { return file_; }
  /// 1-based line or record number, 0 when the problem concerns the whole file.
  long line() const noexcept { return line_; }

 private:
  std::string file_;
  long line_;
};

/// A checkpoint or run directory that cannot be read or written.
class CheckpointError : public Error {
 public:
  explicit CheckpointError(const std::string& what) : Error(what) {}
};

/// Training went wrong numerically (a NaN or Inf loss or gradient): names the epoch, batch and
/// optimizer step. The checkpoints on disk are those of the last good epoch.
class TrainingError : public Error {
 public:
  explicit TrainingError(const std::string& what) : Error(what) {}
};

/// A multi-process run cannot go on: a rendezvous that did not complete, a collective that
/// failed or timed out (another rank stopped), or a malformed torchrun variable.
class DistributedError : public Error {
 public:
  explicit DistributedError(const std::string& what) : Error(what) {}
};

}  // namespace mmintent

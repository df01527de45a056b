#pragma once
/// Progress display: a redrawn bar with rate and ETA on a terminal, plain periodic lines
/// otherwise (logs, CI), or nothing.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace mmintent::detail {

/// `v` with `precision` decimals ("0.3142"): the loss beside the bar, the epoch's log line.
std::string format_fixed(double v, int precision = 4);

class Progress {
 public:
  /// mode: "auto" (bar on a terminal, lines otherwise), "bar", "lines" or "none".
  Progress(std::string label, int64_t total, const std::string& mode, std::FILE* out = stderr);
  /// Marks `done` items complete; `info` (e.g. "loss 0.31") is shown beside the bar.
  void update(int64_t done, const std::string& info);
  void finish(const std::string& info);

  /// Formats seconds as [h:]mm:ss.
  static std::string format_duration(double seconds);

 private:
  void draw(bool final, const std::string& info);

  std::string label_;
  int64_t total_;
  int64_t done_ = 0;
  enum class Mode { bar, lines, none } mode_;
  std::FILE* out_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
  int next_decile_ = 1;
};

}  // namespace mmintent::detail

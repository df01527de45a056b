#include "mmintent/training/detail/progress.h"

#include <unistd.h>

#include <cmath>
#include <sstream>

namespace mmintent::detail {

std::string format_fixed(double v, int precision) {
  std::ostringstream os;
  os.precision(precision);
  os << std::fixed << v;
  return os.str();
}

Progress::Progress(std::string label, int64_t total, const std::string& mode, std::FILE* out)
    : label_(std::move(label)), total_(total), out_(out) {
  if (mode == "none") {
    mode_ = Mode::none;
  } else if (mode == "bar") {
    mode_ = Mode::bar;
  } else if (mode == "lines") {
    mode_ = Mode::lines;
  } else {
    mode_ = isatty(fileno(out_)) ? Mode::bar : Mode::lines;
  }
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

std::string Progress::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>((s / 60) % 60), static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%02lld:%02lld", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  }
  return buf;
}

void Progress::update(int64_t done, const std::string& info) {
  done_ = done;
  if (mode_ == Mode::none) return;
  const auto now = std::chrono::steady_clock::now();
  if (mode_ == Mode::bar) {
    if (now - last_draw_ < std::chrono::milliseconds(100) && done_ < total_) return;
    last_draw_ = now;
    draw(false, info);
  } else if (total_ > 0 && done_ < total_ && done_ * 10 >= next_decile_ * total_) {
    while (done_ * 10 >= next_decile_ * total_) ++next_decile_;
    draw(false, info);
  }
}

void Progress::finish(const std::string& info) {
  if (mode_ == Mode::none) return;
  done_ = total_;
  draw(true, info);
}

void Progress::draw(bool final, const std::string& info) {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = elapsed > 0 ? done_ / elapsed : 0;
  const double eta = rate > 0 ? (total_ - done_) / rate : NAN;
  const double frac = total_ > 0 ? static_cast<double>(done_) / total_ : 1.0;
  if (mode_ == Mode::bar) {
    const int width = 24;
    const int filled = static_cast<int>(frac * width);
    std::string bar(filled, '#');
    bar.resize(width, '.');
    std::fprintf(out_, "\r%s [%s] %lld/%lld %.1f it/s %s %s %s\033[K", label_.c_str(),
                 bar.c_str(), static_cast<long long>(done_), static_cast<long long>(total_), rate,
                 final ? format_duration(elapsed).c_str() : ("eta " + format_duration(eta)).c_str(),
                 info.c_str(), final ? "\n" : "");
  } else {
    std::fprintf(out_, "%s %3.0f%% %lld/%lld %.1f it/s %s %s\n", label_.c_str(), frac * 100,
                 static_cast<long long>(done_), static_cast<long long>(total_), rate,
                 final ? ("took " + format_duration(elapsed)).c_str()
                       : ("eta " + format_duration(eta)).c_str(),
                 info.c_str());
  }
  std::fflush(out_);
}

}  // namespace mmintent::detail

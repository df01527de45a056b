#include "mmintent/evaluation/plots.h"

#include "mmintent/error.h"

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

namespace mmintent {
namespace {

constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;
const cv::Scalar kWhite(255, 255, 255);
const cv::Scalar kBlack(0, 0, 0);
const cv::Scalar kGrid(225, 225, 225);
const cv::Scalar kAxis(90, 90, 90);

/// Hershey fonts draw ASCII only: every other code point becomes '?', control characters ' '.
std::string ascii(const std::string& s, size_t max_chars = 0) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char ch = static_cast<unsigned char>(s[i]);
    if ((ch & 0xC0) == 0x80) continue;  // UTF-8 continuation byte
    out += ch >= 0x80 ? '?' : (ch < 0x20 || ch == 0x7F) ? ' ' : static_cast<char>(ch);
  }
  if (max_chars > 3 && out.size() > max_chars) out = out.substr(0, max_chars - 2) + "..";
  return out;
}

cv::Size text_size(const std::string& text, double scale, int thickness = 1) {
  int baseline = 0;
  return cv::getTextSize(text, kFont, scale, thickness, &baseline);
}

/// Draws `text` with its left end at x and its vertical centre at y.
void put_left(cv::Mat& img, const std::string& text, int x, int y, double scale,
              const cv::Scalar& colour, int thickness = 1) {
  const auto sz = text_size(text, scale, thickness);
  cv::putText(img, text, {x, y + sz.height / 2}, kFont, scale, colour, thickness, cv::LINE_AA);
}

void put_right(cv::Mat& img, const std::string& text, int x_right, int y, double scale,
               const cv::Scalar& colour, int thickness = 1) {
  put_left(img, text, x_right - text_size(text, scale, thickness).width, y, scale, colour,
           thickness);
}

void put_centred(cv::Mat& img, const std::string& text, int x_centre, int y, double scale,
                 const cv::Scalar& colour, int thickness = 1) {
  put_left(img, text, x_centre - text_size(text, scale, thickness).width / 2, y, scale, colour,
           thickness);
}

/// Pastes dark-on-white `src` onto `dst` at `origin` (keeps the darker pixel of the two).
void paste_min(cv::Mat& dst, const cv::Mat& src, cv::Point origin) {
  const cv::Rect r = cv::Rect(origin, src.size()) & cv::Rect(0, 0, dst.cols, dst.rows);
  if (r.empty()) return;
  cv::Mat roi = dst(r);
  cv::min(roi, src(cv::Rect(r.x - origin.x, r.y - origin.y, r.width, r.height)), roi);
}

/// Draws `text` reading bottom to top, centred on (x_centre, y_centre).
void put_vertical(cv::Mat& img, const std::string& text, int x_centre, int y_centre,
                  double scale, const cv::Scalar& colour) {
  const auto sz = text_size(text, scale);
  cv::Mat strip(sz.height + 8, sz.width + 4, CV_8UC3, kWhite);
  cv::putText(strip, text, {2, sz.height + 3}, kFont, scale, colour, 1, cv::LINE_AA);
  cv::Mat rotated;
  cv::rotate(strip, rotated, cv::ROTATE_90_COUNTERCLOCKWISE);
  paste_min(img, rotated, {x_centre - rotated.cols / 2, y_centre - rotated.rows / 2});
}

/// matplotlib's "Blues" colour map, v in [0,1], as BGR.
cv::Scalar blues(double v) {
  static const std::array<std::array<double, 3>, 9> kStops{{{247, 251, 255},
                                                            {222, 235, 247},
                                                            {198, 219, 239},
                                                            {158, 202, 225},
                                                            {107, 174, 214},
                                                            {66, 146, 198},
                                                            {33, 113, 181},
                                                            {8, 81, 156},
                                                            {8, 48, 107}}};  // RGB
  v = std::clamp(v, 0.0, 1.0) * (kStops.size() - 1);
  const size_t i = std::min(static_cast<size_t>(v), kStops.size() - 2);
  const double t = v - static_cast<double>(i);
  std::array<double, 3> rgb;
  for (int c = 0; c < 3; ++c) rgb[c] = kStops[i][c] * (1 - t) + kStops[i + 1][c] * t;
  return cv::Scalar(rgb[2], rgb[1], rgb[0]);
}

void write_png(const cv::Mat& img, const std::string& png_path) {
  bool ok = false;
  std::string why = "cv::imwrite failed (missing directory or no permission?)";
  try {
    ok = cv::imwrite(png_path, img);
  } catch (const cv::Exception& e) {
    why = e.what();
  }
  if (!ok) throw Error("cannot write plot " + png_path + ": " + why);
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) giving at most `max_ticks` ticks, at
/// least `min_step` (1 for counts and steps, 0 for real values).
double nice_step(double range, int max_ticks, double min_step = 1.0) {
  if (!(range > 0)) return 1;
  const double raw = range / max_ticks;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * mag >= raw) return std::max(min_step, m * mag);
  }
  return std::max(min_step, 10 * mag);
}

}  // namespace

void draw_confusion_matrix(const std::vector<std::vector<int64_t>>& confusion,
                           const std::vector<std::string>& label_names, const std::string& title,
                           const std::string& png_path) {
  const int k = static_cast<int>(label_names.size());
  if (k == 0 || static_cast<int>(confusion.size()) != k) {
    throw Error("cannot draw " + png_path + ": expected a " + std::to_string(k) + "x" +
                std::to_string(k) + " confusion matrix (one row per label name), found " +
                std::to_string(confusion.size()) + " rows");
  }
  for (const auto& row : confusion) {
    if (static_cast<int>(row.size()) != k) {
      throw Error("cannot draw " + png_path + ": confusion matrix row of " +
                  std::to_string(row.size()) + " columns, expected " + std::to_string(k));
    }
  }

  // Geometry: cells shrink with the class count; names need cells of at least 12 px.
  const int cell = std::clamp(900 / k, 5, 80);
  const int side = cell * k;
  const bool names = cell >= 12;
  const bool counts = cell >= 18;
  const double name_scale = std::min(0.5, cell * 0.55 / 22.0);
  std::vector<std::string> shown(k);
  int name_w = 0;
  if (names) {
    for (int i = 0; i < k; ++i) {
      shown[i] = ascii(label_names[i], 28);
      name_w = std::max(name_w, text_size(shown[i], name_scale).width);
    }
  } else {
    name_w = text_size(std::to_string(k - 1), 0.4).width;
  }
  const double title_scale = 0.65;
  const int title_h = 50, axis_title = 30, gap = 8, colourbar = 110;
  const int left = axis_title + name_w + gap + 6;
  const int top = title_h;
  const int bottom = name_w + gap + axis_title + 10;
  const int width = std::max(left + side + colourbar, text_size(ascii(title), title_scale).width + 40);
  const int height = top + std::max(side, 120) + bottom;
  cv::Mat img(height, width, CV_8UC3, kWhite);

  put_centred(img, ascii(title), width / 2, 24, title_scale, kBlack, 1);

  // Cells: colour by the share of the gold row, text with the count.
  for (int g = 0; g < k; ++g) {
    int64_t row_sum = 0;
    for (int p = 0; p < k; ++p) row_sum += confusion[g][p];
    for (int p = 0; p < k; ++p) {
      const int64_t c = confusion[g][p];
      const double share = row_sum ? static_cast<double>(c) / row_sum : 0.0;
      const cv::Rect r(left + p * cell, top + g * cell, cell, cell);
      // A floor on the tint keeps rare confusions visible when cells are too small for text.
      cv::rectangle(img, r, blues(c > 0 ? std::max(share, 0.1) : 0.0), cv::FILLED);
      if (counts && c > 0) {
        const std::string txt = std::to_string(c);
        double s = std::min(0.55, cell / 55.0);
        while (s > 0.3 && text_size(txt, s).width > cell - 4) s -= 0.05;
        if (text_size(txt, s).width <= cell - 2) {
          put_centred(img, txt, r.x + cell / 2, r.y + cell / 2, s,
                      share > 0.55 ? kWhite : kBlack);
        }
      }
    }
  }
  if (cell >= 8) {
    for (int i = 1; i < k; ++i) {
      cv::line(img, {left + i * cell, top}, {left + i * cell, top + side}, kGrid, 1);
      cv::line(img, {left, top + i * cell}, {left + side, top + i * cell}, kGrid, 1);
    }
  }
  cv::rectangle(img, cv::Rect(left - 1, top - 1, side + 2, side + 2), kAxis, 1);

  // Axis labels: names (or index ticks when cells are too small), predicted ones rotated.
  const int tick_step = names ? 1 : (k <= 100 ? 5 : 10);
  cv::Mat strip(side, name_w + 4, CV_8UC3, kWhite);  // x labels before rotation
  for (int i = 0; i < k; i += tick_step) {
    const std::string txt = names ? shown[i] : std::to_string(i);
    const double s = names ? name_scale : 0.4;
    const int y = top + i * cell + cell / 2;
    put_right(img, txt, left - gap, y, s, kBlack);
    put_right(strip, txt, strip.cols - 2, i * cell + cell / 2, s, kBlack);
    if (!names) {
      cv::line(img, {left - 4, y}, {left - 1, y}, kAxis, 1);
      cv::line(img, {left + i * cell + cell / 2, top + side + 1},
               {left + i * cell + cell / 2, top + side + 4}, kAxis, 1);
    }
  }
  cv::Mat rotated;
  cv::rotate(strip, rotated, cv::ROTATE_90_COUNTERCLOCKWISE);
  paste_min(img, rotated, {left, top + side + gap - 2});
  put_centred(img, "predicted", left + side / 2, top + side + gap + name_w + axis_title / 2 + 4,
              0.55, kBlack);
  put_vertical(img, "gold", axis_title / 2 + 2, top + side / 2, 0.55, kBlack);

  // Colour bar: share of the gold row.
  const int bar_x = left + side + 20, bar_w = 16, bar_h = std::max(side, 120);
  for (int y = 0; y < bar_h; ++y) {
    cv::line(img, {bar_x, top + y}, {bar_x + bar_w - 1, top + y},
             blues(1.0 - static_cast<double>(y) / (bar_h - 1)), 1);
  }
  cv::rectangle(img, cv::Rect(bar_x - 1, top - 1, bar_w + 2, bar_h + 2), kAxis, 1);
  for (int pct : {0, 50, 100}) {
    const int y = top + static_cast<int>((100 - pct) / 100.0 * (bar_h - 1));
    cv::line(img, {bar_x + bar_w, y}, {bar_x + bar_w + 3, y}, kAxis, 1);
    put_left(img, std::to_string(pct) + "%", bar_x + bar_w + 6, y, 0.4, kBlack);
  }
  put_vertical(img, "share of gold row", bar_x + bar_w + 56, top + bar_h / 2, 0.45, kAxis);

  write_png(img, png_path);
}

void draw_confidence_histogram(const std::vector<double>& correct_top_probs,
                               const std::vector<double>& wrong_top_probs,
                               const std::string& title, const std::string& png_path) {
  constexpr int kBins = 20;
  auto histogram = [](const std::vector<double>& values) {
    std::array<int64_t, kBins> h{};
    for (double v : values) {
      if (std::isnan(v)) continue;
      const int b = static_cast<int>(std::clamp(v, 0.0, 1.0) * kBins);
      ++h[std::min(b, kBins - 1)];
    }
    return h;
  };
  const auto correct = histogram(correct_top_probs);
  const auto wrong = histogram(wrong_top_probs);
  int64_t max_count = 0;
  for (int b = 0; b < kBins; ++b) max_count = std::max({max_count, correct[b], wrong[b]});

  const int width = 900, height = 560;
  const int left = 80, right = 30, top = 90, bottom = 70;
  const int plot_w = width - left - right, plot_h = height - top - bottom;
  const double bin_w = static_cast<double>(plot_w) / kBins;
  cv::Mat img(height, width, CV_8UC3, kWhite);

  put_centred(img, ascii(title), width / 2, 24, 0.65, kBlack);

  // Y axis: room above the tallest bar for its count labels.
  const double step = nice_step(std::max<double>(1, max_count * 1.15), 8);
  const double y_max = std::max(step, std::ceil(std::max<double>(1, max_count * 1.15) / step) * step);
  auto y_of = [&](double count) { return top + plot_h - static_cast<int>(count / y_max * plot_h); };
  for (double t = 0; t <= y_max + 1e-9; t += step) {
    const int y = y_of(t);
    cv::line(img, {left, y}, {left + plot_w, y}, kGrid, 1);
    cv::line(img, {left - 5, y}, {left, y}, kAxis, 1);
    put_right(img, std::to_string(static_cast<int64_t>(std::llround(t))), left - 8, y, 0.45,
              kBlack);
  }

  // Bars, semi-transparent so the two series stay visible where they overlap.
  const cv::Scalar green(70, 160, 40), red(50, 50, 215);
  auto draw_bars = [&](const std::array<int64_t, kBins>& h, const cv::Scalar& colour) {
    cv::Mat overlay = img.clone();
    for (int b = 0; b < kBins; ++b) {
      if (h[b] == 0) continue;
      const cv::Rect r(cv::Point(left + static_cast<int>(b * bin_w) + 2, y_of(h[b])),
                       cv::Point(left + static_cast<int>((b + 1) * bin_w) - 2, top + plot_h));
      cv::rectangle(overlay, r, colour, cv::FILLED);
    }
    cv::addWeighted(overlay, 0.5, img, 0.5, 0, img);
    for (int b = 0; b < kBins; ++b) {
      if (h[b] == 0) continue;
      const cv::Rect r(cv::Point(left + static_cast<int>(b * bin_w) + 2, y_of(h[b])),
                       cv::Point(left + static_cast<int>((b + 1) * bin_w) - 2, top + plot_h));
      cv::rectangle(img, r, colour, 1);
    }
  };
  draw_bars(correct, green);
  draw_bars(wrong, red);

  // Counts above each bin: correct (green) just above the taller bar, wrong (red) above that.
  for (int b = 0; b < kBins; ++b) {
    const int x = left + static_cast<int>((b + 0.5) * bin_w);
    int y = y_of(static_cast<double>(std::max(correct[b], wrong[b]))) - 9;
    if (correct[b] > 0) {
      put_centred(img, std::to_string(correct[b]), x, y, 0.38, green);
      y -= 14;
    }
    if (wrong[b] > 0) put_centred(img, std::to_string(wrong[b]), x, y, 0.38, red);
  }

  // X axis: ticks every 0.1.
  cv::line(img, {left, top + plot_h}, {left + plot_w, top + plot_h}, kAxis, 1);
  cv::line(img, {left, top}, {left, top + plot_h}, kAxis, 1);
  for (int t = 0; t <= 10; ++t) {
    const int x = left + t * plot_w / 10;
    cv::line(img, {x, top + plot_h}, {x, top + plot_h + 5}, kAxis, 1);
    char buf[8];
    std::snprintf(buf, sizeof buf, "%.1f", t / 10.0);
    put_centred(img, buf, x, top + plot_h + 18, 0.45, kBlack);
  }
  put_centred(img, "top-class probability (confidence)", left + plot_w / 2, height - 22, 0.55,
              kBlack);
  put_vertical(img, "predictions per bin", 22, top + plot_h / 2, 0.55, kBlack);

  // Legend under the title.
  const std::string lc = "correct (n=" + std::to_string(correct_top_probs.size()) + ")";
  const std::string lw = "wrong (n=" + std::to_string(wrong_top_probs.size()) + ")";
  int x = left + 10;
  const int y = 58;
  cv::rectangle(img, cv::Rect(x, y - 7, 22, 14), green, cv::FILLED);
  put_left(img, lc, x + 30, y, 0.5, kBlack);
  x += 30 + text_size(lc, 0.5).width + 30;
  cv::rectangle(img, cv::Rect(x, y - 7, 22, 14), red, cv::FILLED);
  put_left(img, lw, x + 30, y, 0.5, kBlack);
  if (correct_top_probs.empty() && wrong_top_probs.empty()) {
    put_centred(img, "no predictions", left + plot_w / 2, top + plot_h / 2, 0.7, kAxis);
  }

  write_png(img, png_path);
}

namespace {

/// A dashed line from a to b (dash and gap in pixels).
void dashed_line(cv::Mat& img, cv::Point a, cv::Point b, const cv::Scalar& colour, int dash = 6,
                 int thickness = 1) {
  const double len = std::hypot(b.x - a.x, b.y - a.y);
  if (len < 1) return;
  for (double t = 0; t < len; t += 2 * dash) {
    const double t2 = std::min(len, t + dash);
    const cv::Point p(a.x + static_cast<int>((b.x - a.x) * t / len),
                      a.y + static_cast<int>((b.y - a.y) * t / len));
    const cv::Point q(a.x + static_cast<int>((b.x - a.x) * t2 / len),
                      a.y + static_cast<int>((b.y - a.y) * t2 / len));
    cv::line(img, p, q, colour, thickness, cv::LINE_AA);
  }
}

std::string format_fixed(double v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace

void draw_reliability_diagram(const std::vector<std::pair<std::string, CalibrationMetrics>>& panels,
                              const std::string& title, const std::string& png_path) {
  if (panels.empty()) throw Error("cannot draw " + png_path + ": no reliability panel given");
  const int side = 400, strip = 60, gap = 90;
  const int left = 80, top = 110, bottom = 60 + strip + 20, right = 40;
  const int n = static_cast<int>(panels.size());
  const int width =
      std::max(left + n * side + (n - 1) * gap + right, text_size(ascii(title), 0.65).width + 40);
  const int height = top + side + bottom;
  cv::Mat img(height, width, CV_8UC3, kWhite);
  put_centred(img, ascii(title), width / 2, 24, 0.65, kBlack);
  const cv::Scalar bar(214, 142, 66), gap_fill(60, 60, 230), diag(120, 120, 120);

  for (int p = 0; p < n; ++p) {
    const auto& [name, m] = panels[p];
    const int x0 = left + p * (side + gap), y0 = top;
    auto px = [&](double v) {
      return x0 + static_cast<int>(std::lround(std::clamp(v, 0.0, 1.0) * side));
    };
    auto py = [&](double v) {
      return y0 + side - static_cast<int>(std::lround(std::clamp(v, 0.0, 1.0) * side));
    };
    put_centred(img, ascii(name), x0 + side / 2, top - 18, 0.55, kBlack);
    for (int t = 0; t <= 10; t += 2) {  // grid and ticks
      const double v = t / 10.0;
      cv::line(img, {px(v), y0}, {px(v), y0 + side}, kGrid, 1);
      cv::line(img, {x0, py(v)}, {x0 + side, py(v)}, kGrid, 1);
      put_centred(img, format_fixed(v, 1), px(v), y0 + side + strip + 32, 0.42, kBlack);
      put_right(img, format_fixed(v, 1), x0 - 8, py(v), 0.42, kBlack);
    }
    // Bars up to the accuracy, the gap to the mean confidence shaded.
    for (const auto& b : m.bins) {
      if (b.count == 0) continue;
      const int xa = px(b.lower) + 1, xb = px(b.upper) - 1;
      cv::rectangle(img, cv::Rect(cv::Point(xa, py(b.accuracy)), cv::Point(xb, y0 + side)), bar,
                    cv::FILLED);
      cv::rectangle(img, cv::Rect(cv::Point(xa, py(b.accuracy)), cv::Point(xb, y0 + side)), kAxis,
                    1);
    }
    cv::Mat overlay = img.clone();
    for (const auto& b : m.bins) {
      if (b.count == 0) continue;
      const int xa = px(b.lower) + 1, xb = px(b.upper) - 1;
      const int ya = py(std::max(b.accuracy, b.confidence)),
                yb = py(std::min(b.accuracy, b.confidence));
      if (yb > ya)
        cv::rectangle(overlay, cv::Rect(cv::Point(xa, ya), cv::Point(xb, yb)), gap_fill,
                      cv::FILLED);
    }
    cv::addWeighted(overlay, 0.45, img, 0.55, 0, img);
    dashed_line(img, {px(0), py(0)}, {px(1), py(1)}, diag, 6, 1);
    cv::rectangle(img, cv::Rect(x0, y0, side + 1, side + 1), kAxis, 1);
    // ECE and accuracy in the corner.
    put_left(img, "ECE " + format_fixed(m.ece, 4), x0 + 10, y0 + 16, 0.5, kBlack);
    put_left(img, "accuracy " + format_fixed(m.accuracy, 4), x0 + 10, y0 + 36, 0.45, kBlack);
    put_left(img, "NLL " + format_fixed(m.nll, 4), x0 + 10, y0 + 56, 0.45, kBlack);
    // Share of samples per bin.
    const int sy = y0 + side + 8;
    double max_share = 0;
    for (const auto& b : m.bins)
      max_share = std::max(max_share, m.count ? static_cast<double>(b.count) / m.count : 0.0);
    for (const auto& b : m.bins) {
      if (b.count == 0 || max_share <= 0) continue;
      const double share = static_cast<double>(b.count) / m.count;
      const int h = std::max(1, static_cast<int>(std::lround(share / max_share * (strip - 4))));
      cv::rectangle(img,
                    cv::Rect(cv::Point(px(b.lower) + 1, sy + strip - h),
                             cv::Point(px(b.upper) - 1, sy + strip)),
                    cv::Scalar(150, 150, 150), cv::FILLED);
    }
    cv::rectangle(img, cv::Rect(x0, sy, side + 1, strip + 1), kAxis, 1);
    put_left(img, "samples per bin (max " + format_fixed(100 * max_share, 1) + "%)", x0 + 6,
             sy + 10, 0.38, kAxis);
    put_centred(img, "confidence (top-class probability)", x0 + side / 2, height - 16, 0.5, kBlack);
    put_vertical(img, "accuracy", x0 - 55, y0 + side / 2, 0.5, kBlack);
  }
  // Legend.
  int lx = left;
  const int ly = 56;
  cv::rectangle(img, cv::Rect(lx, ly - 7, 22, 14), bar, cv::FILLED);
  put_left(img, "accuracy per bin", lx + 30, ly, 0.45, kBlack);
  lx += 30 + text_size("accuracy per bin", 0.45).width + 25;
  cv::rectangle(img, cv::Rect(lx, ly - 7, 22, 14), gap_fill * 0.45 + kWhite * 0.55, cv::FILLED);
  put_left(img, "gap to mean confidence", lx + 30, ly, 0.45, kBlack);
  lx += 30 + text_size("gap to mean confidence", 0.45).width + 25;
  dashed_line(img, {lx, ly}, {lx + 22, ly}, diag, 4, 1);
  put_left(img, "perfect calibration", lx + 30, ly, 0.45, kBlack);
  write_png(img, png_path);
}

void draw_coverage_curve(const CoverageCurvePlot& c, const std::string& title,
                         const std::string& png_path) {
  if (c.coverage.size() != c.accuracy.size()) {
    throw Error("cannot draw " + png_path + ": " + std::to_string(c.coverage.size()) +
                " coverage values but " + std::to_string(c.accuracy.size()) + " accuracies");
  }
  const int width = 760, height = 560, left = 90, right = 40, top = 80, bottom = 70;
  const int plot_w = width - left - right, plot_h = height - top - bottom;
  cv::Mat img(height, width, CV_8UC3, kWhite);
  put_centred(img, ascii(title), width / 2, 24, 0.6, kBlack);

  // Y from a round value under the lowest accuracy (or the target) up to 1.
  double y_min = 1.0;
  for (double a : c.accuracy) y_min = std::min(y_min, a);
  if (c.target_precision >= 0) y_min = std::min(y_min, c.target_precision);
  if (c.operating_accuracy >= 0) y_min = std::min(y_min, c.operating_accuracy);
  y_min = std::clamp(std::floor(y_min * 10 - 1e-9) / 10, 0.0, 0.9);
  auto px = [&](double v) {
    return left + static_cast<int>(std::lround(std::clamp(v, 0.0, 1.0) * plot_w));
  };
  auto py = [&](double v) {
    return top + plot_h -
           static_cast<int>(
               std::lround((std::clamp(v, y_min, 1.0) - y_min) / (1 - y_min) * plot_h));
  };
  for (int t = 0; t <= 10; ++t) {
    const double v = t / 10.0;
    cv::line(img, {px(v), top}, {px(v), top + plot_h}, kGrid, 1);
    put_centred(img, format_fixed(v, 1), px(v), top + plot_h + 18, 0.42, kBlack);
  }
  const double y_step = (1 - y_min) > 0.5 ? 0.1 : (1 - y_min) > 0.2 ? 0.05 : 0.02;
  for (double v = y_min; v <= 1.0 + 1e-9; v += y_step) {
    cv::line(img, {left, py(v)}, {left + plot_w, py(v)}, kGrid, 1);
    put_right(img, format_fixed(v, 2), left - 8, py(v), 0.42, kBlack);
  }
  cv::rectangle(img, cv::Rect(left, top, plot_w + 1, plot_h + 1), kAxis, 1);
  const cv::Scalar line(180, 100, 30), target(60, 60, 220), point(40, 150, 40);
  if (c.target_precision >= 0) {
    dashed_line(img, {left, py(c.target_precision)}, {left + plot_w, py(c.target_precision)},
                target, 7, 1);
    put_left(img, "target " + format_fixed(c.target_precision, 3), left + 8,
             py(c.target_precision) - 10, 0.42, target);
  }
  if (c.coverage.empty()) {
    put_centred(img, "no accepted predictions", left + plot_w / 2, top + plot_h / 2, 0.7, kAxis);
  } else {
    std::vector<cv::Point> pts;
    for (size_t i = 0; i < c.coverage.size(); ++i)
      pts.emplace_back(px(c.coverage[i]), py(c.accuracy[i]));
    cv::polylines(img, pts, false, line, 2, cv::LINE_AA);
  }
  auto mark = [&](double x, double y, const std::string& text, const cv::Scalar& colour, int dy) {
    if (x < 0 || y < 0) return;
    const cv::Point o(px(x), py(y));
    cv::circle(img, o, 6, colour, cv::FILLED, cv::LINE_AA);
    const std::string label = ascii(text);
    const int tw = text_size(label, 0.45).width;
    const int tx = o.x + 10 + tw > left + plot_w ? o.x - 10 - tw : o.x + 10;
    put_left(img, label, tx, std::clamp(o.y + dy, top + 10, top + plot_h - 10), 0.45, colour);
  };
  mark(c.operating_coverage, c.operating_accuracy, c.operating_label, point, -16);
  mark(c.policy_coverage, c.policy_accuracy, c.policy_label, cv::Scalar(40, 120, 220), 18);
  put_centred(img, "share of requests accepted (coverage)", left + plot_w / 2, height - 22, 0.5,
              kBlack);
  put_vertical(img, "accuracy of accepted", 24, top + plot_h / 2, 0.5, kBlack);
  write_png(img, png_path);
}

void draw_learning_curve(const LearningCurvePlot& c, const std::string& title,
                         const std::string& png_path) {
  if (c.steps.size() != c.train_loss.size() || c.steps.size() != c.lr.size() ||
      c.epoch_steps.size() != c.val_loss.size()) {
    throw Error("cannot draw " + png_path + ": the learning curve's series differ in length");
  }
  const int width = 760, left = 90, right = 40, top = 70;
  const int loss_h = 330, gap = 60, lr_h = 110, bottom = 50;
  const int plot_w = width - left - right, lr_top = top + loss_h + gap;
  const int height = lr_top + lr_h + bottom;  // 620: the loss panel over the learning-rate panel
  cv::Mat img(height, width, CV_8UC3, kWhite);
  put_centred(img, ascii(title), width / 2, 24, 0.6, kBlack);
  const cv::Scalar train_colour(180, 100, 30), val_colour(40, 120, 220), lr_colour(40, 150, 40);

  const auto finite_range = [](std::initializer_list<const std::vector<double>*> series) {
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (const auto* s : series) {
      for (double v : *s) {
        if (std::isfinite(v)) {
          lo = std::min(lo, v);
          hi = std::max(hi, v);
        }
      }
    }
    if (!std::isfinite(lo)) return std::pair<double, double>{0, 1};
    if (hi - lo < 1e-12) return std::pair<double, double>{lo - 0.5 * std::max(1e-6, std::abs(lo)), hi + 0.5 * std::max(1e-6, std::abs(hi))};
    return std::pair<double, double>{lo, hi};
  };
  double x_max = 1;
  for (double s : c.steps) x_max = std::max(x_max, s);
  for (double s : c.epoch_steps) x_max = std::max(x_max, s);
  auto px = [&](double v) {
    return left + static_cast<int>(std::lround(std::clamp(v / x_max, 0.0, 1.0) * plot_w));
  };
  // One panel: grid, y ticks, frame; returns the y mapping.
  auto panel = [&](int y0, int h, double lo, double hi, int digits) {
    const double step = nice_step(hi - lo, 5, /*min_step=*/0.0);
    lo = std::floor(lo / step) * step;
    hi = std::ceil(hi / step) * step;
    if (hi <= lo) hi = lo + step;
    auto py = [=](double v) {
      return y0 + h - static_cast<int>(std::lround((std::clamp(v, lo, hi) - lo) / (hi - lo) * h));
    };
    for (double v = lo; v <= hi + step * 1e-6; v += step) {
      cv::line(img, {left, py(v)}, {left + plot_w, py(v)}, kGrid, 1);
      put_right(img, format_fixed(v, digits), left - 8, py(v), 0.42, kBlack);
    }
    const double x_step = nice_step(x_max, 8);
    for (double s = 0; s <= x_max + 1e-9; s += x_step) {
      cv::line(img, {px(s), y0}, {px(s), y0 + h}, kGrid, 1);
      put_centred(img, std::to_string(static_cast<int64_t>(std::lround(s))), px(s), y0 + h + 18, 0.42, kBlack);
    }
    cv::rectangle(img, cv::Rect(left, y0, plot_w + 1, h + 1), kAxis, 1);
    return py;
  };
  if (c.steps.empty() && c.epoch_steps.empty()) {
    cv::rectangle(img, cv::Rect(left, top, plot_w + 1, loss_h + 1), kAxis, 1);
    put_centred(img, "no steps logged", left + plot_w / 2, top + loss_h / 2, 0.7, kAxis);
    write_png(img, png_path);
    return;
  }
  const auto [loss_lo, loss_hi] = finite_range({&c.train_loss, &c.val_loss});
  const auto loss_y = panel(top, loss_h, std::max(0.0, loss_lo), loss_hi, 2);
  std::vector<cv::Point> pts;
  for (size_t i = 0; i < c.steps.size(); ++i) {
    if (std::isfinite(c.train_loss[i])) pts.emplace_back(px(c.steps[i]), loss_y(c.train_loss[i]));
  }
  if (pts.size() > 1) cv::polylines(img, pts, false, train_colour, 2, cv::LINE_AA);
  if (pts.size() == 1) cv::circle(img, pts[0], 3, train_colour, cv::FILLED, cv::LINE_AA);
  std::vector<cv::Point> val_pts;
  for (size_t i = 0; i < c.epoch_steps.size(); ++i) {
    if (!std::isfinite(c.val_loss[i])) continue;
    val_pts.emplace_back(px(c.epoch_steps[i]), loss_y(c.val_loss[i]));
    cv::circle(img, val_pts.back(), 5, val_colour, cv::FILLED, cv::LINE_AA);
  }
  if (val_pts.size() > 1) cv::polylines(img, val_pts, false, val_colour, 1, cv::LINE_AA);
  // Legend, top right.
  int ly = top + 18;
  const int lx = left + plot_w - 250;
  cv::line(img, {lx, ly - 4}, {lx + 24, ly - 4}, train_colour, 2, cv::LINE_AA);
  put_left(img, "training loss", lx + 32, ly, 0.45, kBlack);
  if (!val_pts.empty()) {
    ly += 20;
    cv::circle(img, {lx + 12, ly - 4}, 5, val_colour, cv::FILLED, cv::LINE_AA);
    put_left(img, "validation loss (epoch end)", lx + 32, ly, 0.45, kBlack);
  }
  put_vertical(img, "loss per sample", 24, top + loss_h / 2, 0.5, kBlack);

  const auto [lr_lo, lr_hi] = finite_range({&c.lr});
  const double lr_scale = lr_hi > 0 ? std::pow(10.0, std::floor(std::log10(lr_hi))) : 1.0;
  std::vector<double> lr_scaled;
  for (double v : c.lr) lr_scaled.push_back(v / lr_scale);
  const auto lr_y = panel(lr_top, lr_h, std::min(0.0, lr_lo / lr_scale), lr_hi / lr_scale, 2);
  std::vector<cv::Point> lr_pts;
  for (size_t i = 0; i < c.steps.size(); ++i) {
    if (std::isfinite(lr_scaled[i])) lr_pts.emplace_back(px(c.steps[i]), lr_y(lr_scaled[i]));
  }
  if (lr_pts.size() > 1) cv::polylines(img, lr_pts, false, lr_colour, 2, cv::LINE_AA);
  std::ostringstream scale;
  scale << "learning rate (x " << lr_scale << ")";
  put_left(img, scale.str(), left + 8, lr_top - 8, 0.45, lr_colour);
  put_centred(img, "optimizer step", left + plot_w / 2, lr_top + lr_h + 40, 0.5, kBlack);
  write_png(img, png_path);
}

}  // namespace mmintent

#include "serve/metrics.h"

#include "mmintent/error.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace mmintent::serve {
namespace {

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<int64_t>(v));
  std::ostringstream out;
  out.precision(12);
  out << v;
  return out.str();
}

std::string series(const std::string& name, const Labels& labels, const std::string& extra = "") {
  std::string out = name;
  if (labels.empty() && extra.empty()) return out;
  out += '{';
  bool first = true;
  for (const auto& [k, v] : labels) {
    out += (first ? "" : ",") + k + "=\"" + escape_label(v) + '"';
    first = false;
  }
  if (!extra.empty()) out += (first ? "" : ",") + extra;
  return out + '}';
}

}  // namespace

std::string escape_label(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void Metrics::declare(const std::string& name, const std::string& type, const std::string& help) {
  std::lock_guard<std::mutex> lock(mutex_);
  families_.push_back({name, type, help, {}, {}, {}});
}

void Metrics::declare_histogram(const std::string& name, const std::string& help,
                                std::vector<double> bounds) {
  if (!std::is_sorted(bounds.begin(), bounds.end())) throw Error("Metrics: histogram bounds of " + name + " must ascend");
  std::lock_guard<std::mutex> lock(mutex_);
  families_.push_back({name, "histogram", help, std::move(bounds), {}, {}});
}

Metrics::Family& Metrics::family(const std::string& name) {
  for (auto& f : families_) {
    if (f.name == name) return f;
  }
  throw Error("Metrics: '" + name + "' was not declared");
}

void Metrics::add(const std::string& name, const Labels& labels, double value) {
  std::lock_guard<std::mutex> lock(mutex_);
  family(name).values[labels] += value;
}

void Metrics::set(const std::string& name, const Labels& labels, double value) {
  std::lock_guard<std::mutex> lock(mutex_);
  family(name).values[labels] = value;
}

void Metrics::set_only(const std::string& name, const Labels& labels, double value) {
  set_only(name, {{labels, value}});
}

void Metrics::set_only(const std::string& name, const std::vector<std::pair<Labels, double>>& series) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& values = family(name).values;
  values.clear();
  for (const auto& [labels, value] : series) values[labels] = value;
}

void Metrics::observe(const std::string& name, const Labels& labels, double value) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& f = family(name);
  auto& h = f.histograms[labels];
  if (h.counts.empty()) h.counts.assign(f.bounds.size() + 1, 0);
  const auto bucket = std::lower_bound(f.bounds.begin(), f.bounds.end(), value) - f.bounds.begin();
  ++h.counts[static_cast<std::size_t>(bucket)];
  h.sum += value;
  ++h.count;
}

std::string Metrics::render() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  for (const auto& f : families_) {
    out += "# HELP " + f.name + " " + f.help + "\n# TYPE " + f.name + " " + f.type + "\n";
    for (const auto& [labels, v] : f.values) out += series(f.name, labels) + " " + number(v) + "\n";
    for (const auto& [labels, h] : f.histograms) {
      uint64_t cumulative = 0;
      for (std::size_t b = 0; b < h.counts.size(); ++b) {
        cumulative += h.counts[b];
        const double le = b < f.bounds.size() ? f.bounds[b] : INFINITY;
        out += series(f.name + "_bucket", labels, "le=\"" + number(le) + "\"") + " " +
               std::to_string(cumulative) + "\n";
      }
      out += series(f.name + "_sum", labels) + " " + number(h.sum) + "\n";
      out += series(f.name + "_count", labels) + " " + std::to_string(h.count) + "\n";
    }
  }
  return out;
}

}  // namespace mmintent::serve

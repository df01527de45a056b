#pragma once
/// The server's metrics in Prometheus' text exposition format (version 0.0.4), written by hand:
/// counters and histograms keyed by label values. Thread-safe. Internal.

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace mmintent::serve {

/// Label name/value pairs of one series, in the order written.
using Labels = std::vector<std::pair<std::string, std::string>>;

class Metrics {
 public:
  /// Declares a counter or a gauge (`type`) with its help text; its series appear once set.
  void declare(const std::string& name, const std::string& type, const std::string& help);
  /// Declares a histogram with these upper bounds (ascending; +Inf is added).
  void declare_histogram(const std::string& name, const std::string& help, std::vector<double> bounds);

  void add(const std::string& name, const Labels& labels, double value = 1);
  void set(const std::string& name, const Labels& labels, double value);
  void observe(const std::string& name, const Labels& labels, double value);
  /// Replaces every series of a gauge by this one (e.g. an info gauge after a reload).
  void set_only(const std::string& name, const Labels& labels, double value);
  /// Replaces every series of a gauge by these (none: the gauge shows no series).
  void set_only(const std::string& name, const std::vector<std::pair<Labels, double>>& series);

  /// Every declared metric in declaration order, series sorted by labels.
  std::string render() const;

 private:
  struct Histogram {
    std::vector<uint64_t> counts;  ///< per bound, not cumulative; the last is +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  struct Family {
    std::string name, type, help;
    std::vector<double> bounds;
    std::map<Labels, double> values;
    std::map<Labels, Histogram> histograms;
  };
  Family& family(const std::string& name);

  mutable std::mutex mutex_;
  std::vector<Family> families_;
};

/// A label value escaped for the text format (backslash, double quote, newline).
std::string escape_label(const std::string& value);

}  // namespace mmintent::serve

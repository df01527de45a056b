#include "mmintent/evaluation/report.h"

#include "mmintent/error.h"
#include "mmintent/evaluation/plots.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <numeric>
#include <set>
#include <sstream>
#include <system_error>
#include <unistd.h>

namespace mmintent {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

/// Dumps with invalid UTF-8 replaced rather than throwing (texts come from user data).
std::string dump(const Json& j, int indent) {
  return j.dump(indent, ' ', false, Json::error_handler_t::replace);
}

/// Writes `content` to a temporary file next to `path`, then renames it over `path`.
void write_atomically(const fs::path& path, const std::string& content) {
  const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error("cannot write " + tmp.string() + ": cannot open for writing");
    out << content;
    out.close();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw Error("cannot write " + tmp.string() + ": write failed (disk full?)");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw Error("cannot write " + path.string() + ": rename from " + tmp.string() +
                " failed: " + ec.message());
  }
}

/// The existing report.json as an object, or an empty object when there is none.
Json read_report(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return Json::object();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path.string() + " to merge the new split into it");
  std::stringstream ss;
  ss << in.rdbuf();
  Json j = Json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    throw Error(path.string() +
                ": expected a JSON object of splits to merge into, found unparsable or "
                "non-object content; move the file away to start a fresh report");
  }
  return j;
}

Json split_json(const ClassificationMetrics& m, double loss,
                const std::vector<std::string>& label_names) {
  Json s = Json::object();
  s["count"] = m.count;
  s["loss"] = loss;
  s["accuracy"] = m.accuracy;
  Json top = Json::object();
  for (const auto& [k, v] : m.top_k) top[std::to_string(k)] = v;
  s["top_k"] = top;
  s["macro_precision"] = m.macro_precision;
  s["macro_recall"] = m.macro_recall;
  s["macro_f1"] = m.macro_f1;
  s["weighted_f1"] = m.weighted_f1;
  Json per_class = Json::object();
  for (size_t c = 0; c < m.per_class.size(); ++c) {
    const auto& cm = m.per_class[c];
    per_class[label_names[c]] = {{"precision", cm.precision},
                                 {"recall", cm.recall},
                                 {"f1", cm.f1},
                                 {"support", cm.support}};
  }
  s["per_class"] = per_class;
  s["confusion"] = {{"labels", label_names}, {"matrix", m.confusion}};
  return s;
}

void check_inputs(const std::string& split, const Predictions& p,
                  const std::vector<std::string>& label_names) {
  const std::string where = "write_split_report(split '" + split + "'): ";
  if (split.empty() || split.find_first_of("/\\") != std::string::npos || split == "." ||
      split == "..") {
    throw Error(where + "the split name must be a plain file-name part");
  }
  if (label_names.empty()) throw Error(where + "expected at least one label name, found none");
  std::set<std::string> seen;
  for (const auto& name : label_names) {
    if (!seen.insert(name).second) throw Error(where + "duplicate label name '" + name + "'");
  }
  const int64_t k = static_cast<int64_t>(label_names.size());
  if (!p.probs.defined()) {
    if (p.labels.defined() && p.labels.numel() > 0) {
      throw Error(where + "labels given but probs is undefined");
    }
    return;
  }
  if (p.probs.dim() != 2 || p.probs.size(1) != k) {
    std::string shape = "[";
    for (int64_t d = 0; d < p.probs.dim(); ++d) {
      shape += (d ? "," : "") + std::to_string(p.probs.size(d));
    }
    throw Error(where + "expected probs [N," + std::to_string(k) +
                "] (one column per label name), found " + shape + "]");
  }
  const int64_t n = p.probs.size(0);
  if (!p.labels.defined() || p.labels.dim() != 1 || p.labels.size(0) != n) {
    throw Error(where + "expected labels [" + std::to_string(n) + "] to match probs");
  }
  if (p.indices.defined() && (p.indices.dim() != 1 || p.indices.size(0) != n)) {
    throw Error(where + "expected indices [" + std::to_string(n) + "] to match probs");
  }
}

std::vector<int64_t> to_vector(const at::Tensor& t) {
  const auto c = t.detach().to(at::kCPU, at::kLong).contiguous();
  const auto* d = c.data_ptr<int64_t>();
  return std::vector<int64_t>(d, d + c.numel());
}

/// Number of characters in a UTF-8 string (continuation bytes are not counted).
size_t display_width(const std::string& s) {
  size_t w = 0;
  for (unsigned char ch : s) w += (ch & 0xC0) != 0x80;
  return w;
}

std::string pad_right(const std::string& s, size_t width) {
  const size_t w = display_width(s);
  return w >= width ? s : s + std::string(width - w, ' ');
}

std::string fixed(double v, int precision = 4) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(precision) << v;
  return os.str();
}

std::string pad_left(const std::string& s, size_t width) {
  return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}

}  // namespace

ClassificationMetrics write_split_report(const std::string& run_dir, const std::string& split,
                                         const Predictions& predictions,
                                         const std::vector<std::string>& label_names,
                                         const std::vector<SampleInfo>& samples,
                                         const SplitReportOptions& options) {
  check_inputs(split, predictions, label_names);
  const int64_t num_classes = static_cast<int64_t>(label_names.size());
  const int64_t n = predictions.probs.defined() ? predictions.probs.size(0) : 0;

  // Gold labels, predictions and positions, validated before anything touches the disk.
  std::vector<int64_t> gold, indices, predicted;
  at::Tensor probs;
  if (n > 0) {
    probs = predictions.probs.detach().to(at::kCPU, at::kFloat).contiguous();
    gold = to_vector(predictions.labels);
    // The same arg-max as compute_metrics, so the listing agrees with the confusion matrix.
    predicted = to_vector(probs.argmax(1));
    if (predictions.indices.defined()) {
      indices = to_vector(predictions.indices);
    } else {
      indices.resize(n);
      std::iota(indices.begin(), indices.end(), int64_t{0});
    }
    for (int64_t i = 0; i < n; ++i) {
      if (gold[i] < 0 || gold[i] >= num_classes) {
        throw Error("write_split_report(split '" + split + "'): label " +
                    std::to_string(gold[i]) + " of row " + std::to_string(i) +
                    " is outside [0," + std::to_string(num_classes) + ")");
      }
      if (!samples.empty() &&
          (indices[i] < 0 || indices[i] >= static_cast<int64_t>(samples.size()))) {
        throw Error("write_split_report(split '" + split + "'): sample index " +
                    std::to_string(indices[i]) + " of row " + std::to_string(i) +
                    " is outside the " + std::to_string(samples.size()) + " sample infos");
      }
    }
  }

  ClassificationMetrics metrics;
  if (n > 0) {
    metrics = compute_metrics(probs, predictions.labels, options.top_ks);
  } else {
    metrics = compute_metrics(std::vector<int64_t>{}, std::vector<int64_t>{}, num_classes);
    for (int64_t k : options.top_ks) metrics.top_k[k] = 0.0;
  }

  const fs::path dir(run_dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) {
    throw Error("cannot write the " + split + " report into run directory " + run_dir + ": " +
                (ec ? ec.message() : std::string("not a directory")));
  }

  // report.json, merged with the splits already there.
  const fs::path report_path = dir / "report.json";
  Json report = read_report(report_path);
  report[split] = split_json(metrics, predictions.loss, label_names);
  write_atomically(report_path, dump(report, 2) + "\n");

  // misclassified_<split>.jsonl, sorted by sample index.
  std::vector<int64_t> wrong_rows;
  std::vector<double> correct_top, wrong_top;
  if (n > 0) {
    const auto* pp = probs.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i) {
      const double top = pp[i * num_classes + predicted[i]];
      if (predicted[i] == gold[i]) {
        correct_top.push_back(top);
      } else {
        wrong_top.push_back(top);
        wrong_rows.push_back(i);
      }
    }
  }
  std::stable_sort(wrong_rows.begin(), wrong_rows.end(),
                   [&](int64_t a, int64_t b) { return indices[a] < indices[b]; });
  const int64_t listed = std::clamp<int64_t>(options.listed_top, 0, num_classes);
  std::string lines;
  std::vector<int64_t> order(num_classes);
  for (int64_t row : wrong_rows) {
    const float* rp = probs.data_ptr<float>() + row * num_classes;
    std::iota(order.begin(), order.end(), int64_t{0});
    const int64_t pred = predicted[row];
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      if (rp[a] != rp[b]) return rp[a] > rp[b];
      return (a == pred) > (b == pred);  // ties: the arg-max first
    });
    Json top = Json::array();
    for (int64_t j = 0; j < listed; ++j) {
      top.push_back({{"label", label_names[order[j]]}, {"prob", static_cast<double>(rp[order[j]])}});
    }
    Json line = Json::object();
    line["index"] = indices[row];
    if (samples.empty()) {
      line["text"] = nullptr;
      line["image"] = nullptr;
    } else {
      line["text"] = samples[indices[row]].text;
      line["image"] = samples[indices[row]].image;
      if (!samples[indices[row]].audio.empty()) line["audio"] = samples[indices[row]].audio;
    }
    line["gold"] = label_names[gold[row]];
    line["top"] = top;
    lines += dump(line, -1) + "\n";
  }
  write_atomically(dir / ("misclassified_" + split + ".jsonl"), lines);

  // Plots.
  const fs::path confusion_png = dir / ("confusion_" + split + ".png");
  const fs::path confidence_png = dir / ("confidence_" + split + ".png");
  if (n == 0) {
    std::error_code ignored;
    fs::remove(confusion_png, ignored);
    fs::remove(confidence_png, ignored);
  } else if (options.plots) {
    const std::string counts = " (n=" + std::to_string(n) + ", accuracy " +
                               fixed(100.0 * metrics.accuracy, 1) + "%)";
    draw_confusion_matrix(metrics.confusion, label_names, "Confusion matrix: " + split + counts,
                          confusion_png.string());
    draw_confidence_histogram(correct_top, wrong_top,
                              "Top-class probability: " + split + counts,
                              confidence_png.string());
  }
  return metrics;
}

namespace {

/// report[split][key] = value, merged into run_dir/report.json.
void merge_section(const std::string& run_dir, const std::string& split, const std::string& key,
                   const Json& value) {
  const fs::path dir(run_dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  const fs::path report_path = dir / "report.json";
  Json report = read_report(report_path);
  report[split][key] = value;
  write_atomically(report_path, dump(report, 2) + "\n");
}

}  // namespace

void write_oos_report(const std::string& run_dir, const std::string& split, const OosReport& r) {
  Json j{{"label", r.label},
         {"method", r.method},
         {"in_scope_count", r.metrics.in_scope_count},
         {"oos_count", r.metrics.oos_count},
         {"in_scope_accuracy", r.metrics.in_scope_accuracy},
         {"oos_recall", r.metrics.oos_recall},
         {"oos_precision", r.metrics.oos_precision},
         {"oos_f1", r.metrics.oos_f1}};
  if (!r.score.empty()) {
    j["score"] = r.score;
    j["threshold"] = r.threshold;
  }
  if (!r.scores.empty()) {
    j["scores"] = Json::object();
    for (const auto& [name, d] : r.scores) j["scores"][name] = {{"auroc", d.auroc}, {"fpr_at_95_tpr", d.fpr_at_95_tpr}};
  }
  merge_section(run_dir, split, "oos", j);
}

void write_members_report(const std::string& run_dir, const std::string& split,
                          const std::vector<MemberReport>& members) {
  Json list = Json::array();
  for (const auto& m : members) {
    Json j{{"run", m.run},
           {"weights_sha256", m.weights_sha256},
           {"temperature", m.temperature},
           {"accuracy", m.accuracy},
           {"macro_f1", m.macro_f1}};
    if (m.has_oos) {
      j["in_scope_accuracy"] = m.oos.in_scope_accuracy;
      j["oos_recall"] = m.oos.oos_recall;
    }
    list.push_back(std::move(j));
  }
  merge_section(run_dir, split, "members", list);
}

void write_robustness_report(const std::string& run_dir, const std::string& split,
                             const std::vector<RobustnessReport>& reports) {
  Json all = Json::object();
  for (const auto& r : reports) {
    Json j{{"accuracy", r.accuracy}, {"macro_f1", r.macro_f1}, {"accuracy_drop", r.clean_accuracy - r.accuracy}};
    if (r.has_oos) {
      j["in_scope_accuracy"] = r.oos.in_scope_accuracy;
      j["in_scope_accuracy_drop"] = r.clean_oos.in_scope_accuracy - r.oos.in_scope_accuracy;
      j["oos_recall"] = r.oos.oos_recall;
    }
    all[r.noise] = std::move(j);
  }
  merge_section(run_dir, split, "robustness", all);
}

namespace {

Json metrics_json(const CalibrationMetrics& m) {
  Json bins = Json::array();
  for (const auto& b : m.bins) {
    bins.push_back({{"lower", b.lower},
                    {"upper", b.upper},
                    {"count", b.count},
                    {"accuracy", b.accuracy},
                    {"confidence", b.confidence}});
  }
  return Json{{"ece", m.ece}, {"nll", m.nll}, {"accuracy", m.accuracy}, {"bins", bins}};
}

void check_split_name(const std::string& split, const char* where) {
  if (split.empty() || split.find_first_of("/\\") != std::string::npos || split == "." ||
      split == "..") {
    throw Error(std::string(where) + "(split '" + split +
                "'): the split name must be a plain file-name part");
  }
}

}  // namespace

void write_calibration_report(const std::string& run_dir, const std::string& split,
                              const CalibrationReport& r, bool plots) {
  check_split_name(split, "write_calibration_report");
  Json j = Json::object();
  j["method"] = r.method;
  j["temperature"] = r.temperature;
  j["count"] = r.after.count;
  j["before"] = metrics_json(r.before);
  j["after"] = metrics_json(r.after);
  if (r.method == "split") {
    j["split"] = {{"in_scope_temperature", r.split.in_scope_temperature},
                  {"slope", r.split.slope},
                  {"intercept", r.split.intercept},
                  {"fitted_share", r.split.fitted_share},
                  {"share", r.split.share}};
  }
  if (r.has_in_scope) {
    j["oos_share"] = r.oos_share;
    auto brief = [](const CalibrationMetrics& m) {
      return Json{{"ece", m.ece}, {"nll", m.nll}, {"accuracy", m.accuracy}};
    };
    j["in_scope"] = {{"count", r.in_scope_after.count},
                     {"before", brief(r.in_scope_before)},
                     {"after", brief(r.in_scope_after)}};
  }
  merge_section(run_dir, split, "calibration", j);
  const fs::path png = fs::path(run_dir) / ("reliability_" + split + ".png");
  if (r.after.count == 0) {
    std::error_code ignored;
    fs::remove(png, ignored);
  } else if (plots) {
    draw_reliability_diagram(
        {{"before: uncalibrated (T = 1)", r.before},
         {"after: " + (r.method == "temperature" ? "temperature T = " + fixed(r.temperature, 3)
                       : r.method == "split"     ? "split, in-scope T = " + fixed(r.split.in_scope_temperature, 3) +
                                                   ", out-of-scope share " + fixed(r.split.share, 3)
                                                 : std::string("no calibration")),
          r.after}},
        "Reliability: " + split + " (n=" + std::to_string(r.after.count) + ", 15 bins)",
        png.string());
  }
}

void write_decision_report(const std::string& run_dir, const std::string& split,
                           const DecisionReport& r, bool plots) {
  check_split_name(split, "write_decision_report");
  const auto& st = r.stats;
  Json j = Json::object();
  j["min_confidence"] = r.thresholds.min_confidence;
  j["clarify_margin"] = r.thresholds.clarify_margin;
  j["chosen_on_val"] = {{"min_confidence", r.options.min_confidence == -1},
                        {"clarify_margin", r.options.clarify_margin == -1}};
  j["target_precision"] = r.options.target_precision;
  j["count"] = st.count;
  j["accept"] = st.accept_share;
  j["clarify"] = st.clarify_share;
  j["fallback"] = st.fallback_share;
  j["accepted"] = st.accepted;
  j["clarified"] = st.clarified;
  j["fallbacks"] = st.fallbacks;
  j["accepted_accuracy"] = st.accepted_accuracy;
  j["clarify_top2_accuracy"] = st.clarify_top2_accuracy;
  merge_section(run_dir, split, "decision", j);
  const fs::path png = fs::path(run_dir) / ("coverage_" + split + ".png");
  if (st.count == 0) {
    std::error_code ignored;
    fs::remove(png, ignored);
  } else if (plots) {
    CoverageCurvePlot plot;
    for (const auto& p : r.curve) {
      plot.coverage.push_back(p.coverage);
      plot.accuracy.push_back(p.accuracy);
    }
    const bool chosen = r.options.min_confidence == -1 || r.options.clarify_margin == -1;
    if (chosen) plot.target_precision = r.options.target_precision;
    // The operating point of min_confidence: the first curve point at or above it.
    for (const auto& p : r.curve) {
      if (p.threshold >= r.thresholds.min_confidence) {
        plot.operating_coverage = p.coverage;
        plot.operating_accuracy = p.accuracy;
        plot.operating_label = "min_confidence " + fixed(r.thresholds.min_confidence, 3);
        break;
      }
    }
    if (st.accepted > 0) {
      plot.policy_coverage = st.accept_share;
      plot.policy_accuracy = st.accepted_accuracy;
      plot.policy_label = "policy (clarify margin " + fixed(r.thresholds.clarify_margin, 3) +
                          "): accept " + fixed(100 * st.accept_share, 1) + "%";
    }
    draw_coverage_curve(plot,
                        "Coverage vs accuracy: " + split + " (n=" + std::to_string(st.count) +
                            ", confidence threshold sweeps)",
                        png.string());
  }
}

void write_rewrite_report(const std::string& run_dir, const std::string& split,
                          const RewriteCheck& c) {
  check_split_name(split, "write_rewrite_report");
  Json changed = Json::array();
  for (size_t i = 0; i < c.changes.size() && i < 50; ++i) {
    const auto& x = c.changes[i];
    changed.push_back({{"original", x.original},
                       {"normalised", x.normalised},
                       {"before", x.before},
                       {"after", x.after}});
  }
  Json j = Json::object();
  j["count"] = c.count;
  j["normalised_differs"] = c.normalised_differs;
  j["unchanged"] = c.unchanged;
  j["intent_unchanged_rate"] = c.count ? static_cast<double>(c.unchanged) / c.count : 1.0;
  j["changed"] = changed;
  merge_section(run_dir, split, "rewrite", j);
}

std::string format_metrics_table(const std::string& split, const ClassificationMetrics& m,
                                 const std::vector<std::string>& label_names) {
  std::ostringstream os;
  os << "split " << split << ": " << m.count << " samples, accuracy " << fixed(m.accuracy);
  for (const auto& [k, v] : m.top_k) {
    if (k != 1) os << ", top-" << k << " " << fixed(v);
  }
  os << "\nmacro precision " << fixed(m.macro_precision) << ", macro recall "
     << fixed(m.macro_recall) << ", macro F1 " << fixed(m.macro_f1) << ", weighted F1 "
     << fixed(m.weighted_f1) << "\n\n";

  auto name_of = [&](size_t c) {
    return c < label_names.size() ? label_names[c] : "class " + std::to_string(c);
  };
  size_t name_w = std::string("weighted avg").size();
  for (size_t c = 0; c < m.per_class.size(); ++c) name_w = std::max(name_w, display_width(name_of(c)));
  const size_t num_w = 9;  // "precision"
  int64_t support_total = 0;
  for (const auto& cm : m.per_class) support_total += cm.support;
  const size_t sup_w = std::max<size_t>(7, std::to_string(support_total).size());

  auto row = [&](const std::string& name, const std::string& p, const std::string& r,
                 const std::string& f, const std::string& s) {
    os << pad_right(name, name_w) << "  " << pad_left(p, num_w) << "  " << pad_left(r, num_w)
       << "  " << pad_left(f, num_w) << "  " << pad_left(s, sup_w) << "\n";
  };
  row("label", "precision", "recall", "f1", "support");
  os << std::string(name_w + 3 * (num_w + 2) + 2 + sup_w, '-') << "\n";
  double weighted_p = 0, weighted_r = 0;
  for (size_t c = 0; c < m.per_class.size(); ++c) {
    const auto& cm = m.per_class[c];
    row(name_of(c), fixed(cm.precision), fixed(cm.recall), fixed(cm.f1),
        std::to_string(cm.support));
    if (support_total > 0) {
      weighted_p += cm.precision * cm.support / static_cast<double>(support_total);
      weighted_r += cm.recall * cm.support / static_cast<double>(support_total);
    }
  }
  os << std::string(name_w + 3 * (num_w + 2) + 2 + sup_w, '-') << "\n";
  row("macro avg", fixed(m.macro_precision), fixed(m.macro_recall), fixed(m.macro_f1),
      std::to_string(support_total));
  row("weighted avg", fixed(weighted_p), fixed(weighted_r), fixed(m.weighted_f1),
      std::to_string(support_total));
  return os.str();
}

}  // namespace mmintent

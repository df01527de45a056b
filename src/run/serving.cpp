#include "mmintent/run/serving.h"

#include "mmintent/config/config.h"
#include "mmintent/data/label_map.h"
#include "mmintent/error.h"
#include "mmintent/training/detail/archive.h"

#include <nlohmann/json.hpp>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/torch.h>

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <sstream>

namespace mmintent {
namespace fs = std::filesystem;

OosSetup oos_setup(const Config& c, const LabelMap& labels) {
  OosSetup o;
  if (c.oos.label.empty()) return o;
  o.enabled = true;
  o.label = c.oos.label;
  o.method = c.oos.method;
  o.threshold_method = c.oos.method == "threshold";
  o.thresholded = c.oos.method != "class";
  o.score = c.oos.score;
  o.threshold = c.oos.threshold;
  if (o.threshold_method) {
    o.index = labels.size();  // not a trained class: one past the model's classes
  } else {
    o.index = labels.find(o.label);
    if (o.index < 0) {
      throw ConfigError(c.source, "oos.label", 0,
                        "'" + o.label + "' is not among the training labels (method: class needs "
                        "out-of-scope samples in the training split)");
    }
  }
  return o;
}

ServingSetup load_serving(const RunDirectory& run, const Config& c) {
  ServingSetup s;
  s.calibration = load_calibration(run);
  s.decision = c.decision;
  s.thresholds = {c.decision.min_confidence, c.decision.clarify_margin};
  const auto file = run.decision_file();
  std::ifstream in(file);
  if (in) {
    const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("min_confidence") || !j["min_confidence"].is_number() ||
        !j.contains("clarify_margin") || !j["clarify_margin"].is_number()) {
      throw Error("'" + file.string() + "' has no numeric min_confidence and clarify_margin");
    }
    s.thresholds = {j["min_confidence"].get<double>(), j["clarify_margin"].get<double>()};
  } else if (s.thresholds.min_confidence == -1 || s.thresholds.clarify_margin == -1) {
    throw Error("'" + file.string() +
                "' is missing: the config chooses decision thresholds on val (-1); run 'mmintent "
                "calibrate'");
  }
  return s;
}

OosSetup load_oos(const RunDirectory& run, const Config& c, const LabelMap& labels) {
  OosSetup oos = oos_setup(c, labels);
  if (!oos.thresholded) return oos;
  std::ifstream in(run.oos_file());
  const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("threshold") || !j["threshold"].is_number()) {
    throw Error("'" + run.oos_file().string() + "' is missing or has no threshold");
  }
  oos.threshold = j["threshold"].get<double>();
  const auto score = j.value("score", std::string("max_prob"));
  if (score != oos.score) {
    throw Error("'" + run.oos_file().string() + "' holds a threshold on the " + score + " score, but the run's "
                "config says oos.score: " + oos.score + "; run 'mmintent calibrate' to choose one for it");
  }
  if (oos.score == "mahalanobis") {
    const auto path = run.oos_mahalanobis_file().string();
    auto archive = detail::open_archive(path, c10::kCPU);
    auto fit = std::make_shared<MahalanobisFit>();
    try {
      archive.read("means", fit->means);
      archive.read("precision", fit->precision);
    } catch (const std::exception& e) {
      throw Error(detail::unreadable_message(path, e));
    }
    if (fit->means.dim() != 2 || fit->precision.dim() != 2 || fit->precision.size(0) != fit->means.size(1) ||
        fit->precision.size(1) != fit->means.size(1)) {
      throw Error("'" + path + "' holds no class means [C, D] with a precision [D, D]");
    }
    oos.mahalanobis = std::move(fit);
  }
  return oos;
}

at::Tensor oos_scores(const OosSetup& oos, const at::Tensor& probs, const at::Tensor& logits,
                      const at::Tensor& features) {
  if (oos.score == "energy") {
    if (!logits.defined()) throw Error("the energy out-of-scope score needs the model's logits");
    return energy_scores(logits, oos.index);
  }
  if (oos.score == "mahalanobis") {
    if (!oos.mahalanobis) throw Error("the mahalanobis out-of-scope score has no fit (oos_mahalanobis.pt)");
    if (!features.defined()) throw Error("the mahalanobis out-of-scope score needs the fused features");
    return mahalanobis_scores(*oos.mahalanobis, features);
  }
  return max_prob_scores(probs, oos.index);
}

std::vector<bool> oos_rejections(const OosSetup& oos, const at::Tensor& probs, const at::Tensor& logits,
                                 const at::Tensor& features) {
  if (!probs.defined()) return {};
  if (!oos.enabled || !oos.thresholded) return std::vector<bool>(static_cast<size_t>(probs.size(0)), false);
  const auto scores = oos_scores(oos, probs, logits, features).to(at::kCPU, at::kDouble).contiguous();
  const double* s = scores.data_ptr<double>();
  std::vector<bool> out(static_cast<size_t>(scores.numel()));
  for (int64_t i = 0; i < scores.numel(); ++i) out[static_cast<size_t>(i)] = s[i] < oos.threshold;
  return out;
}

namespace {

std::string format_double(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

}  // namespace

void save_calibration(const RunDirectory& run, const CalibrationFile& c) {
  nlohmann::ordered_json j;
  j["method"] = c.method;
  j["temperature"] = c.temperature;
  j["fitted_on"] = c.fitted_on;
  j["count"] = c.fit.count;
  j["nll_before"] = c.fit.nll_before;
  j["nll_after"] = c.fit.nll_after;
  j["at_bound"] = c.fit.at_bound;
  j["evaluations"] = c.fit.evaluations;
  if (c.method == "split") {
    const auto& f = c.split;
    j["split"] = {{"oos_index", f.oos_index},
                  {"in_scope_temperature", f.in_scope_temperature},
                  {"slope", f.slope},
                  {"intercept", f.intercept},
                  {"fitted_share", f.fitted_share},
                  {"share", f.share},
                  {"share_from", f.share_from},
                  {"count", f.count},
                  {"oos_count", f.oos_count},
                  {"in_scope_nll_before", f.in_scope_fit.nll_before},
                  {"in_scope_nll_after", f.in_scope_fit.nll_after}};
  }
  const fs::path path = run.calibration_file();
  const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump(2) << "\n";
    out.close();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw Error("cannot write " + path.string() + " (via " + tmp.string() + ")");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error("cannot write " + path.string() + ": " + ec.message());
}

CalibrationFile load_calibration(const RunDirectory& run) {
  const fs::path path = run.calibration_file();
  CalibrationFile c;
  std::error_code ec;
  if (!fs::exists(path, ec)) return c;
  std::ifstream in(path);
  const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("temperature") || !j["temperature"].is_number()) {
    throw Error(path.string() + ": expected a JSON object with a numeric 'temperature'");
  }
  c.temperature = j["temperature"].get<double>();
  if (!(c.temperature > 0) || !std::isfinite(c.temperature)) {
    throw Error(path.string() + ": 'temperature' must be a positive finite number, found " +
                format_double(c.temperature));
  }
  c.method = j.value("method", std::string("temperature"));
  c.fitted_on = j.value("fitted_on", std::string());
  c.fit.temperature = c.temperature;
  c.fit.count = j.value("count", int64_t{0});
  c.fit.nll_before = j.value("nll_before", 0.0);
  c.fit.nll_after = j.value("nll_after", 0.0);
  c.fit.at_bound = j.value("at_bound", false);
  c.fit.evaluations = j.value("evaluations", int64_t{0});
  if (c.method == "split") {
    const auto bad = [&](const std::string& why) { return Error(path.string() + ": 'split' " + why); };
    if (!j.contains("split") || !j["split"].is_object()) throw bad("is missing (method split)");
    const auto& s = j["split"];
    auto number = [&](const char* key) {
      if (!s.contains(key) || !s[key].is_number()) throw bad(std::string("has no numeric '") + key + "'");
      const double v = s[key].get<double>();
      if (!std::isfinite(v)) throw bad(std::string("'") + key + "' must be finite, found " + format_double(v));
      return v;
    };
    auto& f = c.split;
    if (!s.contains("oos_index") || !s["oos_index"].is_number_integer()) throw bad("has no integer 'oos_index'");
    f.oos_index = s["oos_index"].get<int64_t>();
    f.in_scope_temperature = number("in_scope_temperature");
    f.slope = number("slope");
    f.intercept = number("intercept");
    f.fitted_share = number("fitted_share");
    f.share = number("share");
    if (!(f.in_scope_temperature > 0)) throw bad("'in_scope_temperature' must be > 0, found " + format_double(f.in_scope_temperature));
    for (const auto& [key, v] : {std::pair{"fitted_share", f.fitted_share}, std::pair{"share", f.share}}) {
      if (!(v > 0 && v < 1)) throw bad(std::string("'") + key + "' must lie in (0, 1), found " + format_double(v));
    }
    f.share_from = s.value("share_from", std::string());
    f.count = s.value("count", int64_t{0});
    f.oos_count = s.value("oos_count", int64_t{0});
    f.in_scope_fit.temperature = f.in_scope_temperature;
    f.in_scope_fit.nll_before = s.value("in_scope_nll_before", 0.0);
    f.in_scope_fit.nll_after = s.value("in_scope_nll_after", 0.0);
  } else if (c.method != "temperature" && c.method != "none") {
    throw Error(path.string() + ": unknown 'method' '" + c.method + "' (temperature, split or none)");
  }
  return c;
}

void check_calibration(const RunDirectory& run, const ServingSetup& serving, const OosSetup& oos) {
  if (serving.calibration.method != "split") return;
  if (oos.trained_class() < 0 || serving.calibration.split.oos_index != oos.trained_class()) {
    throw Error("'" + run.calibration_file().string() + "' calibrates class " +
                std::to_string(serving.calibration.split.oos_index) +
                " apart as out of scope, but the run's trained out-of-scope class is " +
                (oos.trained_class() < 0 ? std::string("none") : std::to_string(oos.trained_class())) +
                "; run 'mmintent calibrate'");
  }
}

void remove_calibration(const RunDirectory& run) {
  std::error_code ec;
  fs::remove(run.calibration_file(), ec);
}

void save_decision(const RunDirectory& run, const ServingSetup& s, const ChosenThresholds& chosen) {
  nlohmann::json j{{"min_confidence", s.thresholds.min_confidence},
                   {"clarify_margin", s.thresholds.clarify_margin},
                   {"target_precision", s.decision.target_precision},
                   {"chosen_on_val",
                    {{"min_confidence", chosen.min_confidence_chosen},
                     {"clarify_margin", chosen.clarify_margin_chosen}}},
                   {"target_reached",
                    {{"min_confidence", chosen.min_confidence_reached},
                     {"clarify_margin", chosen.clarify_margin_reached}}}};
  run.write_atomically(run.decision_file(), j.dump(2) + "\n");
}

void save_oos(const RunDirectory& run, const OosSetup& oos) {
  std::error_code ec;
  if (!oos.enabled) {
    fs::remove(run.oos_mahalanobis_file(), ec);
    return;
  }
  nlohmann::json j{{"label", oos.label}, {"method", oos.method}};
  if (oos.thresholded) {
    j["score"] = oos.score;
    j["threshold"] = oos.threshold;
  }
  if (oos.needs_features()) {
    if (!oos.mahalanobis) throw Error("the mahalanobis out-of-scope score has no fit to save in " + run.str());
    torch::serialize::OutputArchive archive;
    archive.write("format_version", c10::IValue(detail::kWeightsFormatVersion));
    archive.write("means", oos.mahalanobis->means);
    archive.write("precision", oos.mahalanobis->precision);
    detail::save_archive(archive, run.oos_mahalanobis_file().string());
  } else {
    fs::remove(run.oos_mahalanobis_file(), ec);
  }
  run.write_atomically(run.oos_file(), j.dump(2) + "\n");
}

}  // namespace mmintent

// A run's learning curve (learning_curve.png) and its HTML report (report.html): what a person
// opens after training, built only from the run directory's own files.
#include "steps.h"

#include "mmintent/core/log.h"
#include "mmintent/core/files.h"
#include "mmintent/error.h"
#include "mmintent/evaluation/plots.h"
#include "mmintent/run/run_directory.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

namespace mmintent::detail {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

/// The JSON objects of a JSONL file, one per line; a line that is not an object (a line cut
/// by a kill) is left out.
std::vector<json> read_jsonl(const fs::path& path) {
  std::vector<json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    auto value = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (value.is_object()) out.push_back(std::move(value));
  }
  return out;
}

std::string base64(const std::string& bytes) {
  static const char* const kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t n = (uint32_t(uint8_t(bytes[i])) << 16) | (uint32_t(uint8_t(bytes[i + 1])) << 8) |
                       uint32_t(uint8_t(bytes[i + 2]));
    for (int shift : {18, 12, 6, 0}) out += kAlphabet[(n >> shift) & 63];
  }
  if (i < bytes.size()) {
    uint32_t n = uint32_t(uint8_t(bytes[i])) << 16;
    if (i + 1 < bytes.size()) n |= uint32_t(uint8_t(bytes[i + 1])) << 8;
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

/// `text` safe as HTML element content or a quoted attribute value.
std::string escape(const std::string& text) {
  std::string out;
  for (char ch : text) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += ch;
    }
  }
  return out;
}

std::string number(const json& v, int digits = 4) {
  if (!v.is_number()) return v.is_null() ? "" : escape(v.dump());
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v.get<double>();
  return os.str();
}

/// A two-column table of the scalar entries of `object` (numbers, strings, booleans).
std::string scalar_table(const json& object, const std::string& caption) {
  std::string rows;
  for (const auto& [key, value] : object.items()) {
    if (value.is_object() || value.is_array()) continue;
    rows += "<tr><th>" + escape(key) + "</th><td>" +
            (value.is_string() ? escape(value.get<std::string>()) : number(value)) + "</td></tr>\n";
  }
  if (rows.empty()) return "";
  return "<table class=\"kv\"><caption>" + escape(caption) + "</caption>\n" + rows + "</table>\n";
}

std::string image(const fs::path& png, const std::string& alt) {
  return "<figure><img alt=\"" + escape(alt) + "\" src=\"data:image/png;base64," +
         base64(read_file(png, "plot")) + "\"><figcaption>" + escape(png.filename().string()) +
         "</figcaption></figure>\n";
}

std::string split_section(const RunDirectory& run, const std::string& split, const json& r) {
  std::string html = "<section id=\"split-" + escape(split) + "\"><h2>" + escape(split) + "</h2>\n";
  json summary = json::object();
  for (const char* key : {"count", "accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_f1", "loss"}) {
    if (r.contains(key)) summary[key] = r[key];
  }
  if (r.contains("top_k") && r["top_k"].is_object()) {
    for (const auto& [k, v] : r["top_k"].items()) summary["top-" + k + " accuracy"] = v;
  }
  html += scalar_table(summary, "metrics");
  if (r.contains("per_class") && r["per_class"].is_object()) {
    html += "<table class=\"classes\"><caption>per intent</caption>\n<tr><th>intent</th><th>precision</th>"
            "<th>recall</th><th>F1</th><th>support</th></tr>\n";
    for (const auto& [name, m] : r["per_class"].items()) {
      html += "<tr><th>" + escape(name) + "</th><td>" + number(m.value("precision", json())) + "</td><td>" +
              number(m.value("recall", json())) + "</td><td>" + number(m.value("f1", json())) + "</td><td>" +
              number(m.value("support", json())) + "</td></tr>\n";
    }
    html += "</table>\n";
  }
  if (r.contains("calibration") && r["calibration"].is_object()) {
    const auto& c = r["calibration"];
    json cal = json::object();
    for (const char* key : {"method", "temperature", "count", "oos_share"}) {
      if (c.contains(key)) cal[key] = c[key];
    }
    if (c.contains("split") && c["split"].is_object()) {  // method split: what it was fitted to
      for (const char* key : {"in_scope_temperature", "share"}) {
        if (c["split"].contains(key)) cal[std::string("split ") + key] = c["split"][key];
      }
    }
    if (c.contains("in_scope") && c["in_scope"].is_object()) {
      for (const char* when : {"before", "after"}) {
        if (c["in_scope"].contains(when) && c["in_scope"][when].contains("ece")) {
          cal[std::string("in-scope ece ") + when] = c["in_scope"][when]["ece"];
        }
      }
    }
    for (const char* when : {"before", "after"}) {
      if (c.contains(when) && c[when].is_object()) {
        for (const char* key : {"ece", "nll"}) {
          if (c[when].contains(key)) cal[std::string(key) + " " + when] = c[when][key];
        }
      }
    }
    html += scalar_table(cal, "calibration");
  }
  if (r.contains("decision") && r["decision"].is_object()) html += scalar_table(r["decision"], "decisions");
  if (r.contains("out_of_scope") && r["out_of_scope"].is_object()) {
    html += scalar_table(r["out_of_scope"], "out of scope");
  }
  std::vector<fs::path> plots;
  for (const char* kind : {"confusion", "confidence", "reliability", "coverage"}) {
    const fs::path png = run.path() / (std::string(kind) + "_" + split + ".png");
    if (fs::is_regular_file(png)) plots.push_back(png);
  }
  for (const auto& png : plots) html += image(png, split + " " + png.stem().string());
  return html + "</section>\n";
}

}  // namespace

void write_learning_curve(const RunDirectory& run) {
  std::error_code ec;
  fs::remove(run.learning_curve_plot(), ec);  // an overwritten run's old curve
  LearningCurvePlot curve;
  // The training points, and the step of each epoch's last point (where its validation loss goes).
  std::vector<std::pair<int64_t, double>> last_step_of_epoch;
  for (const auto& point : read_jsonl(run.steps_log())) {
    curve.steps.push_back(point.value("step", 0.0));
    curve.train_loss.push_back(point.value("loss", 0.0));
    curve.lr.push_back(point.value("lr", 0.0));
    const int64_t epoch = point.value("epoch", int64_t{0});
    if (last_step_of_epoch.empty() || last_step_of_epoch.back().first != epoch) {
      last_step_of_epoch.emplace_back(epoch, 0.0);
    }
    last_step_of_epoch.back().second = point.value("step", 0.0);
  }
  for (const auto& line : read_jsonl(run.metrics_log())) {
    if (!line.contains("val.loss") || !line["val.loss"].is_number()) continue;
    const int64_t epoch = line.value("epoch", int64_t{0});
    for (const auto& [e, step] : last_step_of_epoch) {
      if (e == epoch) {
        curve.epoch_steps.push_back(step);
        curve.val_loss.push_back(line["val.loss"].get<double>());
      }
    }
  }
  if (curve.steps.empty()) return;  // train.log_every_steps: 0, or a run from before
  draw_learning_curve(curve, "learning curve", run.learning_curve_plot().string());
}

void write_html_report(const RunDirectory& run) {
  json report = json::object();
  if (fs::is_regular_file(run.report_file())) {
    report = json::parse(read_file(run.report_file(), "report"), nullptr, /*allow_exceptions=*/false);
    if (!report.is_object()) throw Error("cannot build report.html: '" + run.report_file().string() + "' is not a JSON object");
  }
  const std::string name = fs::absolute(run.path()).lexically_normal().filename().string();
  std::string html =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">\n"
      "<title>mmintent run " + escape(name) + "</title>\n<style>\n"
      "body{font-family:sans-serif;margin:2em auto;max-width:1100px;color:#222}\n"
      "table{border-collapse:collapse;margin:1em 1em 1em 0;display:inline-table;vertical-align:top}\n"
      "caption{font-weight:bold;text-align:left;padding:.3em 0}\n"
      "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}\n"
      "td{text-align:right;font-variant-numeric:tabular-nums}\n"
      "figure{display:inline-block;margin:1em 1em 1em 0}img{max-width:100%;border:1px solid #ddd}\n"
      "</style></head><body>\n<h1>mmintent run " + escape(name) + "</h1>\n"
      "<p class=\"path\">" + escape(fs::absolute(run.path()).lexically_normal().string()) + "</p>\n";
  if (fs::is_regular_file(run.learning_curve_plot())) {
    html += "<section id=\"training\"><h2>training</h2>\n" + image(run.learning_curve_plot(), "learning curve") +
            "</section>\n";
  }
  if (report.empty()) html += "<p>No split was evaluated: run <code>mmintent eval</code> to add one.</p>\n";
  for (const char* split : {"val", "test"}) {
    if (report.contains(split)) html += split_section(run, split, report[split]);
  }
  for (const auto& [split, r] : report.items()) {  // evaluated manifests, by name
    if (split != "val" && split != "test" && r.is_object()) html += split_section(run, split, r);
  }
  html += "</body></html>\n";
  const fs::path tmp = run.html_report().string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << html;
    if (!out) throw Error("cannot write '" + tmp.string() + "'");
  }
  fs::rename(tmp, run.html_report());
}

}  // namespace mmintent::detail

#pragma once
/// `mmintent quantize RUN --out DIR`: a finished run's model with int8 weights
/// (training/quantization.h), as a new run directory that eval, predict, calibrate, ensemble
/// and serve load like any other. Its calibration, out-of-scope threshold and decision
/// thresholds are fitted again on val (the int8 model's probabilities differ a little), its
/// splits evaluated, and quantize.json says what it was quantised from and how it compares with
/// the float model: file size, figures and agreement per split, single-request latency.

#include "mmintent/metrics/classification.h"
#include "mmintent/training/quantization.h"

#include <map>
#include <string>
#include <vector>

namespace mmintent {

struct QuantizeOptions {
  /// A finished run directory (an adapter run: its weights with the adapter merged); not an
  /// ensemble (quantise its members, then make the ensemble of the int8 runs) nor an int8 run.
  std::string run;
  std::string out_dir;  ///< the new run directory
  /// Dotted KEY=VALUE overrides of the run's config, which becomes the new run's (eval, oos,
  /// decision, calibration, runtime settings; not the model).
  std::vector<std::string> overrides;
  bool overwrite = false;    ///< allow a non-empty out_dir
  bool print_tables = true;  ///< print the evaluation tables to stdout
  /// Samples of val (else test) timed one request at a time through each model (0: none).
  int64_t latency_samples = 200;
};

/// One split served by the float model (its own calibration and out-of-scope rule) and by the
/// int8 model (fitted on val again).
struct QuantizeComparison {
  ClassificationMetrics float_metrics, int8_metrics;
  bool has_oos = false;
  double float_in_scope_accuracy = 0, int8_in_scope_accuracy = 0;
  double float_oos_recall = 0, int8_oos_recall = 0;
  double agreement = 0;  ///< share of samples both serve as the same class
};

struct QuantizeResult {
  std::string run_dir;
  Int8Summary weights;
  int64_t float_bytes = 0;  ///< the model as a float weights file (what model.pt would be)
  int64_t int8_bytes = 0;   ///< model.int8.pt
  /// Median milliseconds of one model forward pass over one sample (batch of one), the two
  /// models timed alternately on the same samples; 0 when none was timed.
  double float_latency_ms = 0, int8_latency_ms = 0;
  int64_t latency_samples = 0;
  std::map<std::string, ClassificationMetrics> metrics;  ///< the int8 run's, per evaluated split
  std::map<std::string, QuantizeComparison> comparison;  ///< per evaluated split
};

/// Checks the run (CheckpointError when unfinished, an ensemble or int8 already; ConfigError on
/// --out or an override that changes the model), writes the new run (config.yaml, labels.json,
/// the tokenizer, model.int8.pt), fits what it serves on val, evaluates eval.splits and writes
/// quantize.json. When a step fails, model.int8.pt is removed: the directory is then not a
/// finished run.
QuantizeResult quantize_run(const QuantizeOptions& options);

}  // namespace mmintent

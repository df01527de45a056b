#pragma once
/// Serving a trained run: load a run directory (config, tokenizer, label map, weights,
/// calibration and decision thresholds) and return the top-k intents with calibrated
/// probabilities and the decision (accept, clarify, fallback) for a text, an image, or both;
/// optionally rewritten into the request for the assistant behind (rewrite.h).

#include "mmintent/config/config.h"
#include "mmintent/data/dataset.h"
#include "mmintent/data/image.h"
#include "mmintent/policy/decision.h"
#include "mmintent/policy/rewrite.h"

#include <iosfwd>
#include <memory>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace mmintent {

struct IntentScore {
  std::string intent;
  double probability = 0;
};

/// What the model says about one request.
struct Prediction {
  std::vector<IntentScore> top;  ///< the most probable intents, most probable first
  /// True when the run has out-of-scope handling (oos.label) and this request is out of scope:
  /// its top intent is the out-of-scope class, or its out-of-scope score (oos.score: the top
  /// probability, the energy or the Mahalanobis score) is under the threshold chosen for the run
  /// (oos.method: threshold or both). The product should then say it does not know.
  bool out_of_scope = false;
  /// What to do (decision.h): accept top[0], clarify between `candidates`, or fall back
  /// (out of scope, or top probability under decision.min_confidence).
  Decision decision = Decision::accept;
  /// clarify: the two most probable in-scope intents, most probable first; empty otherwise.
  std::vector<IntentScore> candidates;
  /// The intent to show the person, with its probability: top[0] (the most probable class),
  /// or with decision.explore.epsilon > 0 sometimes a uniformly drawn one (policy/decision.h),
  /// and the probability with which the policy showed it (1 without exploration). A product
  /// that explores shows `shown` and logs `propensity` with the person's reaction.
  IntentScore shown;
  double propensity = 1;
};

struct PredictInput {
  PredictInput() = default;
  /// A text and an image path, as `{text, image}` (the plug-in values and pixels stay empty).
  PredictInput(std::string text_, std::string image_ = {})
      : text(std::move(text_)), image(std::move(image_)) {}

  std::string text;   ///< may be empty when the model allows missing text or is image-only
  std::string image;  ///< path; may be empty likewise
  /// Or the image already in memory: decode_image (data/image.h) of an upload with the run's
  /// config().data.image options. When set, `image` is ignored.
  std::shared_ptr<const DecodedImage> image_pixels;
  /// An audio file's path (WAV, FLAC, OGG: data/audio.h); may be empty likewise.
  std::string audio;
  /// Or the audio already in memory: decode_audio_bytes (data/audio.h) of an upload with the
  /// run's config().data.audio options. When set, `audio` is ignored.
  std::shared_ptr<const DecodedAudio> audio_samples;
  /// Plug-in modalities' values by modality name, as a manifest holds them (Record::inputs).
  std::map<std::string, std::string> inputs;
};

struct PredictorOptions {
  /// auto | cpu | cuda | cuda:N; empty: the run's runtime.device, as eval, calibrate and tune
  /// use it (its default, auto: CUDA when available, else the CPU).
  std::string device;
  int64_t threads = 0;         ///< LibTorch intra-op threads; 0 = keep the current setting
  /// decision.explore.epsilon to serve with (in [0, 1]); < 0: the run's config's.
  double explore_epsilon = -1;
};

/// What Predictor::predict_manifest did.
struct ManifestPredictions {
  int64_t predicted = 0;              ///< records predicted (and written)
  std::vector<std::string> skipped;   ///< "file:line: reason" for each record left out
};

class Predictor {
 public:
  /// Throws Error/CheckpointError naming the missing or broken file of the run directory.
  static Predictor load(const std::string& run_dir, const PredictorOptions& options = {});
  ~Predictor();
  Predictor(Predictor&&) noexcept;
  Predictor& operator=(Predictor&&) noexcept;

  /// Top-k intents, most probable first, with probabilities calibrated by the run's
  /// calibration.json (T = 1 for runs without one), the out-of-scope flag and the decision.
  Prediction predict(const PredictInput& input, int64_t top_k = 3) const;
  std::vector<Prediction> predict_batch(const std::vector<PredictInput>& inputs,
                                        int64_t top_k = 3) const;
  /// The request for the assistant behind: `input`'s text normalised and rendered for the
  /// prediction's decision with the run's `rewrite:` templates.
  RewrittenRequest rewrite(const PredictInput& input, const Prediction& prediction) const;
  /// Predicts every record of a manifest (labels optional) and writes one JSON line per record:
  /// {"line", "text", "image", "label" (if any), "top": [{"intent", "probability"}, ...],
  /// "out_of_scope" (when the run has out-of-scope handling), "decision", "shown",
  /// "propensity", "candidates" (clarify only)}; exploration draws derive from runtime.seed and
  /// each record's line, so a rerun shows the same intents; with `rewrite`: {"line", "label" (if any), then to_json_line's fields}.
  /// A record left out under `data.on_bad_sample: skip` (a bad line, an unreadable image) gets
  /// {"line", "skipped": reason} in its place, so every record of the manifest has its line.
  ManifestPredictions predict_manifest(const std::string& manifest_path,
                                       const std::string& output_jsonl, int64_t top_k = 3,
                                       bool rewrite = false) const;

  /// What predict_manifest writes, for records already read (e.g. parse_jsonl_manifest of a
  /// piece of standard input), written to `out` as they are predicted.
  ManifestPredictions predict_records(Manifest manifest, std::ostream& out, int64_t top_k = 3,
                                      bool rewrite = false) const;

  const std::vector<std::string>& intents() const;
  const Config& config() const;
  double temperature() const;  ///< calibration.json's temperature; 1 without one or for method split
  DecisionThresholds decision_thresholds() const;
  const Rewriter& rewriter() const;

 private:
  struct Impl;
  explicit Predictor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mmintent

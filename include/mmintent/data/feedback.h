#pragma once
/// Feedback logs: what a person did with a model's predictions (accepted, corrected or
/// rejected them), read and checked against a run's label map, turned into training records,
/// and mixed with a replay of the original training data for `mmintent tune`.
///
/// A feedback log is JSONL, one object per line:
///   {"text": "...", "image": "photo.png", "predicted": "refund", "reaction": "accepted"}
///   {"text": "...", "predicted": "refund", "reaction": "corrected", "corrected_to": "exchange"}
///   {"text": "...", "predicted": "refund", "reaction": "rejected"}
/// Optionally "propensity": the probability with which the product's policy showed `predicted`
/// (in (0, 1]; `mmintent predict` and the server write it), which the off-policy objectives of
/// `mmintent tune` need (app/tune.h). Other keys (ids, timestamps) are ignored.

#include "mmintent/core/batch.h"
#include "mmintent/data/dataset.h"
#include "mmintent/data/label_map.h"
#include "mmintent/data/manifest.h"

#include <cstdint>
#include <memory>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace mmintent {

/// What the person did with a prediction.
enum class Reaction { accepted, corrected, rejected };

/// "accepted", "corrected" or "rejected".
const char* reaction_name(Reaction reaction);

/// One line of a feedback log.
struct FeedbackRecord {
  std::string text;          ///< "" when absent (or when the run does not use text)
  std::string image;         ///< path resolved against the log's folder; "" when absent
  std::string predicted;     ///< the intent the model predicted (in the label map)
  Reaction reaction = Reaction::accepted;
  std::string corrected_to;  ///< the intent the person corrected it to (corrected only)
  double propensity = 0;     ///< the policy's probability of showing `predicted`; 0: not logged
  long line = 0;             ///< 1-based line in the log
  /// Plug-in modalities' values by modality name, as in Record::inputs.
  std::map<std::string, std::string> inputs;
};

struct FeedbackReadOptions {
  bool use_text = true;              ///< read "text" (the run's model uses text)
  bool use_image = true;             ///< read "image" (the run's model uses images)
  bool allow_missing_text = false;   ///< as data.allow_missing_text
  bool allow_missing_image = false;  ///< as data.allow_missing_image
  /// Plug-in modalities the run uses: modality name -> field (as ManifestFields::plugins).
  std::map<std::string, std::string> plugins;
  std::set<std::string> allow_missing_plugins;  ///< as ManifestReadOptions
  /// Plug-ins (and "audio") whose values are file paths, resolved against the log's folder.
  std::set<std::string> path_inputs;
};

struct FeedbackLog {
  std::string path;
  std::vector<FeedbackRecord> records;
  int64_t accepted = 0, corrected = 0, rejected = 0;  ///< counts per reaction
  int64_t with_propensity = 0;                        ///< records that carry a propensity
  /// "file:line: reason" for what was left out: only an unfinished last line (no newline at
  /// the end of the file and not valid JSON: a writer stopped in the middle of a record).
  std::vector<std::string> skipped;
};

/// Reads the feedback log at `path` and checks every record against `labels`. Throws
/// DataError(path, line, reason) for a missing file, a line that is not a JSON object, a
/// missing/unknown reaction, a missing or unknown `predicted` or `corrected_to` intent, a
/// `corrected_to` on a reaction other than "corrected" or equal to `predicted`, a missing
/// text or image the run needs, a propensity outside (0, 1], and a log without records. An unfinished last line (no final
/// newline, not valid JSON) is left out and listed in FeedbackLog::skipped, so a log whose
/// writer was killed mid-record still reads; an invalid line anywhere else is an error.
FeedbackLog read_feedback(const std::string& path, const LabelMap& labels,
                          const FeedbackReadOptions& options = {});

/// The log cut in two for off-policy evaluation: each distinct input (text, image and plug-in
/// values together) goes to `held_out` with probability `share`, by a hash of the input and
/// `seed`, so that repeats of one request never sit on both sides; counts are recomputed, and
/// skipped stays with `kept`. Throws Error for a share outside [0, 1).
struct FeedbackSplit {
  FeedbackLog kept, held_out;
};
FeedbackSplit split_feedback(const FeedbackLog& log, double share, uint64_t seed);

/// The training records the feedback stands for, in log order (same lines): an acceptance is
/// labelled with the predicted intent (a confirmation), a correction with the corrected
/// intent, a rejection has no label and names the predicted intent as Record::rejected. A record
/// with a propensity also names the predicted intent as Record::shown, with its propensity.
Manifest feedback_manifest(const FeedbackLog& log);

struct FeedbackReplayOptions {
  int64_t batch_size = 32;
  /// Replayed training samples per feedback sample and pass; 0 = feedback only.
  double replay_ratio = 1.0;
  /// true: the replay draw is spread over the classes so that each pass (feedback and replay
  /// together) comes as close as it can to the replay data's class mix, making up first for
  /// classes the feedback lacks (say, out-of-scope requests nobody corrects). false: a uniform
  /// draw, which keeps the replay's own mix but lets the feedback's skew through.
  bool keep_class_mix = false;
  uint64_t seed = 42;
  /// Augmentation for both parts (the run's training augmentation); null: none.
  std::shared_ptr<const AugmentOptions> augment;
};

/// One pass = every feedback sample plus round(replay_ratio * feedback size) training samples
/// drawn afresh each pass (without replacement, cycling through shuffled passes of the training
/// data, or of a class's samples, when more are asked for than it has), shuffled together.
/// With keep_class_mix, class k gets a share of the draw proportional to its deficit
/// max(0, q_k * pass size - feedback samples of k), q_k being k's share of the replay data
/// (largest-remainder rounding; see replay_per_class()). Batches mix both kinds (see
/// concat_batches); a batch's `indices` index into the feedback or the replay data set.
/// Order and draws derive from the seed and the pass number alone.
class FeedbackReplaySource : public BatchSource {
 public:
  /// `replay` may be null (no replay). Throws Error for a null or empty `feedback` data set or
  /// a batch size < 1.
  FeedbackReplaySource(std::shared_ptr<const MultimodalDataset> feedback,
                       std::shared_ptr<const MultimodalDataset> replay,
                       FeedbackReplayOptions options);

  void start_epoch(int64_t epoch) override;
  std::optional<Batch> next() override;
  int64_t num_batches() const override;
  int64_t num_samples() const override;
  int64_t batch_size_at(int64_t i) const override;

  /// Training samples replayed per pass.
  int64_t replay_per_pass() const { return replay_count_; }
  /// With keep_class_mix: training samples of each class (index = class; the last entry counts
  /// unlabelled ones) replayed per pass; empty for a uniform draw.
  const std::vector<int64_t>& replay_per_class() const { return per_class_; }
  /// The pass's samples in order: (0, i) = feedback sample i, (1, j) = training sample j.
  std::vector<std::pair<int, int64_t>> order(int64_t epoch) const;

 private:
  void plan_class_mix();
  std::shared_ptr<const MultimodalDataset> feedback_, replay_;
  FeedbackReplayOptions options_;
  int64_t replay_count_ = 0;
  std::vector<int64_t> per_class_;                ///< draws per class (keep_class_mix)
  std::vector<std::vector<int64_t>> class_pool_;  ///< replay indices per class
  std::vector<std::pair<int, int64_t>> order_;
  uint64_t epoch_seed_ = 0;
  int64_t next_batch_ = 0;
  bool started_ = false;
};

}  // namespace mmintent

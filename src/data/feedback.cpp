#include "mmintent/data/feedback.h"

#include "data/lines.h"
#include "mmintent/error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace mmintent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using detail::is_blank;

/// Reads and checks one feedback record (a parsed JSON line).
class RecordReader {
 public:
  RecordReader(const std::string& path, const LabelMap& labels, const FeedbackReadOptions& options)
      : path_(path), labels_(labels), options_(options), base_dir_(fs::path(path).parent_path()) {}

  FeedbackRecord read(const json& object, long line) const {
    if (!object.is_object()) fail(line, std::string("expected a JSON object, found ") + object.type_name());
    FeedbackRecord r;
    r.line = line;
    const auto reaction = string_field(object, "reaction", line);
    if (!reaction) fail(line, "missing field 'reaction' (accepted, corrected or rejected)");
    if (*reaction == "accepted") {
      r.reaction = Reaction::accepted;
    } else if (*reaction == "corrected") {
      r.reaction = Reaction::corrected;
    } else if (*reaction == "rejected") {
      r.reaction = Reaction::rejected;
    } else {
      fail(line, "reaction '" + *reaction + "' is not one of accepted, corrected, rejected");
    }
    const auto predicted = string_field(object, "predicted", line);
    if (!predicted) fail(line, "missing field 'predicted' (the intent the model predicted)");
    r.predicted = known_intent(*predicted, "predicted", line);
    const auto corrected = string_field(object, "corrected_to", line);
    if (r.reaction == Reaction::corrected) {
      if (!corrected) {
        fail(line, "reaction 'corrected' needs the field 'corrected_to' (the intent the person "
                   "corrected the prediction to)");
      }
      r.corrected_to = known_intent(*corrected, "corrected_to", line);
      if (r.corrected_to == r.predicted) {
        fail(line, "'corrected_to' equals 'predicted' ('" + r.predicted +
                       "'): a prediction the person keeps is reaction 'accepted'");
      }
    } else if (corrected) {
      fail(line, "field 'corrected_to' is only for reaction 'corrected', found reaction '" +
                     *reaction + "'");
    }
    if (const auto it = object.find("propensity"); it != object.end() && !it->is_null()) {
      if (!it->is_number()) fail(line, std::string("field 'propensity' must be a number, found ") + it->type_name());
      const double p = it->get<double>();
      if (!(p > 0 && p <= 1)) {
        fail(line, "field 'propensity' must be in (0, 1] (the probability with which the product "
                   "showed 'predicted'), found " + it->dump());
      }
      r.propensity = p;
    }
    if (options_.use_text) {
      const auto text = string_field(object, "text", line);
      if (text && !is_blank(*text)) {
        r.text = *text;
      } else if (!options_.allow_missing_text) {
        fail(line, text ? "empty text in field 'text'" : "missing field 'text' (the run's model uses text)");
      }
    }
    if (options_.use_image) {
      const auto image = string_field(object, "image", line);
      if (image && !image->empty()) {
        const fs::path p(*image);
        r.image = p.is_absolute() || base_dir_.empty() ? *image : (base_dir_ / p).string();
      } else if (!options_.allow_missing_image) {
        fail(line, image ? "empty image path in field 'image'"
                         : "missing field 'image' (the run's model uses images)");
      }
    }
    for (const auto& [modality, field] : options_.plugins) {
      const auto it = object.find(field);
      std::string value;
      if (it != object.end() && !it->is_null()) value = it->is_string() ? it->get<std::string>() : it->dump();
      if (!is_blank(value)) {
        const bool relative_path = options_.path_inputs.count(modality) && !base_dir_.empty() && fs::path(value).is_relative();
        r.inputs[modality] = relative_path ? (base_dir_ / value).string() : value;
      } else if (!options_.allow_missing_plugins.count(modality)) {
        fail(line, it == object.end() ? "missing field '" + field + "' (the run's model uses " + modality + ")"
                                      : "empty value in field '" + field + "' (" + modality + ")");
      }
    }
    return r;
  }

  [[noreturn]] void fail(long line, const std::string& message) const {
    throw DataError(path_, line, message);
  }

 private:
  /// A string field: nullopt when absent or null; an error for any other type.
  std::optional<std::string> string_field(const json& object, const char* name, long line) const {
    const auto it = object.find(name);
    if (it == object.end() || it->is_null()) return std::nullopt;
    if (!it->is_string()) {
      fail(line, std::string("field '") + name + "' must be a string, found " + it->type_name());
    }
    return it->get<std::string>();
  }

  const std::string& known_intent(const std::string& intent, const char* field, long line) const {
    if (intent.empty()) fail(line, std::string("field '") + field + "' is empty");
    if (labels_.find(intent) < 0) {
      std::string known;
      const std::size_t shown = std::min<std::size_t>(labels_.names().size(), 10);
      for (std::size_t k = 0; k < shown; ++k) known += (k ? ", " : "") + ("'" + labels_.names()[k] + "'");
      if (shown < labels_.names().size()) known += ", ...";
      fail(line, std::string(field) + " intent '" + intent +
                     "' is not in the run's label map (labels.json: " +
                     std::to_string(labels_.size()) + " intents: " + known + ")");
    }
    return intent;
  }

  const std::string& path_;
  const LabelMap& labels_;
  const FeedbackReadOptions& options_;
  fs::path base_dir_;
};

}  // namespace

const char* reaction_name(Reaction reaction) {
  switch (reaction) {
    case Reaction::accepted: return "accepted";
    case Reaction::corrected: return "corrected";
    case Reaction::rejected: return "rejected";
  }
  return "?";
}

FeedbackLog read_feedback(const std::string& path, const LabelMap& labels,
                          const FeedbackReadOptions& options) {
  if (!options.use_text && !options.use_image && options.plugins.empty()) {
    throw Error("read_feedback: at least one modality must be used");
  }
  std::string data = read_text_file(path, "feedback log");
  RecordReader reader(path, labels, options);
  FeedbackLog log;
  log.path = path;
  if (!data.empty() && data.back() != '\n') {
    const auto end = data.rfind('\n');
    const std::size_t start = end == std::string::npos ? 0 : end + 1;
    const std::string tail = data.substr(start);
    if (!detail::is_blank(tail) && !nlohmann::json::accept(tail)) {
      log.skipped.push_back(path + ":" + std::to_string(detail::line_of(data, start)) +
                            ": an unfinished last line (" + std::to_string(tail.size()) +
                            " bytes, no newline, not valid JSON: its writer stopped mid-record), left out");
      data.resize(start);
    }
  }
  detail::for_each_line(data, 0, [&](long line_no, std::string& line) {
    FeedbackRecord r = reader.read(detail::parse_json_line(path, line_no, line), line_no);
    if (r.propensity > 0) ++log.with_propensity;
    switch (r.reaction) {
      case Reaction::accepted: ++log.accepted; break;
      case Reaction::corrected: ++log.corrected; break;
      case Reaction::rejected: ++log.rejected; break;
    }
    log.records.push_back(std::move(r));
  });
  if (log.records.empty()) throw DataError(path, 0, "the feedback log has no records");
  return log;
}

FeedbackSplit split_feedback(const FeedbackLog& log, double share, uint64_t seed) {
  if (!(share >= 0 && share < 1)) throw Error("split_feedback: the held-out share must be in [0, 1)");
  FeedbackSplit split;
  split.kept.path = split.held_out.path = log.path;
  split.kept.skipped = log.skipped;
  for (const auto& r : log.records) {
    // FNV-1a over the input, then splitmix64 with the seed: stable across platforms and runs.
    uint64_t h = 0xcbf29ce484222325ull;
    auto add = [&h](const std::string& s) {
      for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
      h = (h ^ 0x1f) * 0x100000001b3ull;  // a separator, so ("ab", "") != ("a", "b")
    };
    add(r.text);
    add(r.image);
    for (const auto& [name, value] : r.inputs) {
      add(name);
      add(value);
    }
    uint64_t z = h ^ (seed * 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const double u = static_cast<double>(z >> 11) * 0x1.0p-53;
    FeedbackLog& side = u < share ? split.held_out : split.kept;
    if (r.propensity > 0) ++side.with_propensity;
    switch (r.reaction) {
      case Reaction::accepted: ++side.accepted; break;
      case Reaction::corrected: ++side.corrected; break;
      case Reaction::rejected: ++side.rejected; break;
    }
    side.records.push_back(r);
  }
  return split;
}

Manifest feedback_manifest(const FeedbackLog& log) {
  Manifest m;
  m.path = log.path;
  m.records.reserve(log.records.size());
  for (const auto& f : log.records) {
    Record r;
    r.text = f.text;
    r.image = f.image;
    r.inputs = f.inputs;
    r.line = f.line;
    switch (f.reaction) {
      case Reaction::accepted: r.label = f.predicted; break;
      case Reaction::corrected: r.label = f.corrected_to; break;
      case Reaction::rejected: r.rejected = f.predicted; break;
    }
    if (f.propensity > 0) {
      r.shown = f.predicted;
      r.propensity = f.propensity;
    }
    m.records.push_back(std::move(r));
  }
  return m;
}

// ---------------------------------------------------------------------------------------------

FeedbackReplaySource::FeedbackReplaySource(std::shared_ptr<const MultimodalDataset> feedback,
                                           std::shared_ptr<const MultimodalDataset> replay,
                                           FeedbackReplayOptions options)
    : feedback_(std::move(feedback)), replay_(std::move(replay)), options_(std::move(options)) {
  if (!feedback_ || feedback_->size() == 0) throw Error("FeedbackReplaySource: no feedback samples");
  if (options_.batch_size < 1) throw Error("FeedbackReplaySource: batch_size must be >= 1");
  if (!(options_.replay_ratio >= 0)) throw Error("FeedbackReplaySource: replay_ratio must be >= 0");
  if (replay_ && replay_->size() > 0) {
    replay_count_ = static_cast<int64_t>(std::llround(options_.replay_ratio * static_cast<double>(feedback_->size())));
  }
  if (replay_count_ > 0 && options_.keep_class_mix) plan_class_mix();
}

void FeedbackReplaySource::plan_class_mix() {
  // Pools of replay indices per class; unlabelled samples (label -1) in a last pool.
  int64_t classes = 0;
  for (int64_t j = 0; j < replay_->size(); ++j) classes = std::max(classes, replay_->label(j) + 1);
  for (int64_t i = 0; i < feedback_->size(); ++i) classes = std::max(classes, feedback_->label(i) + 1);
  class_pool_.assign(static_cast<size_t>(classes + 1), {});
  for (int64_t j = 0; j < replay_->size(); ++j) {
    const int64_t k = replay_->label(j);
    class_pool_[static_cast<size_t>(k >= 0 ? k : classes)].push_back(j);
  }
  std::vector<double> in_feedback(class_pool_.size(), 0.0);
  for (int64_t i = 0; i < feedback_->size(); ++i) {
    const int64_t k = feedback_->label(i);
    if (k >= 0) in_feedback[static_cast<size_t>(k)] += 1;
  }
  // Deficit of each class against the replay data's mix over the whole pass.
  const double pass = static_cast<double>(num_samples());
  std::vector<double> deficit(class_pool_.size(), 0.0);
  double total = 0;
  for (size_t k = 0; k < class_pool_.size(); ++k) {
    if (class_pool_[k].empty()) continue;
    const double share = static_cast<double>(class_pool_[k].size()) / static_cast<double>(replay_->size());
    deficit[k] = std::max(0.0, share * pass - in_feedback[k]);
    total += deficit[k];
  }
  // sum(deficit) >= replay count always (the shares sum to 1 and the feedback has at most
  // its size in labels); guard against rounding all the same.
  if (!(total > 0)) return;
  // Largest-remainder apportionment of the replay count; ties go to the lower class index.
  per_class_.assign(class_pool_.size(), 0);
  std::vector<std::pair<double, size_t>> remainders;
  int64_t given = 0;
  for (size_t k = 0; k < deficit.size(); ++k) {
    const double exact = deficit[k] / total * static_cast<double>(replay_count_);
    per_class_[k] = static_cast<int64_t>(std::floor(exact));
    given += per_class_[k];
    if (deficit[k] > 0) remainders.emplace_back(exact - std::floor(exact), k);
  }
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t r = 0; given < replay_count_ && r < remainders.size(); ++r, ++given) {
    ++per_class_[remainders[r].second];
  }
}

int64_t FeedbackReplaySource::num_samples() const { return feedback_->size() + replay_count_; }

int64_t FeedbackReplaySource::num_batches() const {
  return (num_samples() + options_.batch_size - 1) / options_.batch_size;
}

int64_t FeedbackReplaySource::batch_size_at(int64_t i) const {
  return std::min(options_.batch_size, num_samples() - i * options_.batch_size);
}

std::vector<std::pair<int, int64_t>> FeedbackReplaySource::order(int64_t epoch) const {
  std::mt19937_64 rng(mix_seed(options_.seed, static_cast<uint64_t>(epoch), 0xFEEDBAC));
  // Fisher-Yates with an explicit mapping of random words to ranges (as DataLoader::order), so
  // the order is the same on every platform.
  auto shuffle = [&rng](auto& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[static_cast<size_t>(rng() % i)]);
  };
  std::vector<std::pair<int, int64_t>> out;
  out.reserve(static_cast<size_t>(num_samples()));
  for (int64_t i = 0; i < feedback_->size(); ++i) out.emplace_back(0, i);
  // `need` draws from `pool`: shuffled passes over it, without replacement within a pass.
  auto draw = [&](const std::vector<int64_t>& pool, int64_t need) {
    std::vector<int64_t> pass(pool.size());
    while (need > 0 && !pool.empty()) {
      pass = pool;
      shuffle(pass);
      const int64_t take = std::min<int64_t>(need, static_cast<int64_t>(pool.size()));
      for (int64_t j = 0; j < take; ++j) out.emplace_back(1, pass[static_cast<size_t>(j)]);
      need -= take;
    }
  };
  if (!per_class_.empty()) {
    for (size_t k = 0; k < per_class_.size(); ++k) draw(class_pool_[k], per_class_[k]);
  } else if (replay_count_ > 0) {
    std::vector<int64_t> pass(static_cast<size_t>(replay_->size()));
    for (int64_t need = replay_count_; need > 0;) {
      for (size_t j = 0; j < pass.size(); ++j) pass[j] = static_cast<int64_t>(j);
      shuffle(pass);
      const int64_t take = std::min<int64_t>(need, replay_->size());
      for (int64_t j = 0; j < take; ++j) out.emplace_back(1, pass[static_cast<size_t>(j)]);
      need -= take;
    }
  }
  shuffle(out);
  return out;
}

void FeedbackReplaySource::start_epoch(int64_t epoch) {
  started_ = true;
  order_ = order(epoch);
  epoch_seed_ = mix_seed(options_.seed, static_cast<uint64_t>(epoch), 0xA11A);
  next_batch_ = 0;
}

std::optional<Batch> FeedbackReplaySource::next() {
  if (!started_) start_epoch(0);
  if (next_batch_ >= num_batches()) return std::nullopt;
  const int64_t begin = next_batch_ * options_.batch_size;
  const int64_t end = begin + batch_size_at(next_batch_);
  std::vector<int64_t> from_feedback, from_replay;
  for (int64_t k = begin; k < end; ++k) {
    const auto& [source, i] = order_[static_cast<size_t>(k)];
    (source == 0 ? from_feedback : from_replay).push_back(i);
  }
  const AugmentOptions* augment =
      options_.augment && options_.augment->enabled ? options_.augment.get() : nullptr;
  std::vector<Batch> parts;
  if (!from_feedback.empty()) parts.push_back(feedback_->collate(from_feedback, augment, epoch_seed_));
  if (!from_replay.empty()) parts.push_back(replay_->collate(from_replay, augment, epoch_seed_));
  ++next_batch_;
  return concat_batches(parts);
}

}  // namespace mmintent

#include "mmintent/config/loader.h"

#include "mmintent/core/modality.h"
#include "mmintent/error.h"
#include "mmintent/metrics/meters.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

namespace mmintent {
namespace fs = std::filesystem;
namespace {

/// Constraints a field's value must meet.
struct Check {
  std::optional<double> min, max;
  bool min_exclusive = false;
  std::vector<std::string> choices;
  enum class Path { none, input_file, input_any, output_dir } path = Path::none;
  bool optional_path = true;  ///< an empty path is allowed

  static Check none() { return {}; }
  static Check ge(double v) { Check c; c.min = v; return c; }
  static Check gt(double v) { Check c; c.min = v; c.min_exclusive = true; return c; }
  static Check range(double lo, double hi) { Check c; c.min = lo; c.max = hi; return c; }
  static Check one_of(std::vector<std::string> v) { Check c; c.choices = std::move(v); return c; }
  static Check input_file(bool optional = true) {
    Check c; c.path = Path::input_file; c.optional_path = optional; return c;
  }
  static Check output_dir() { Check c; c.path = Path::output_dir; return c; }
  /// A file or a directory, resolved but not checked here: what needs it checks it (a finished
  /// run's config stays loadable when, say, the run it was warm-started from is gone).
  static Check input_path() { Check c; c.path = Path::input_any; return c; }
};

std::string join(const std::vector<std::string>& v, const std::string& sep = ", ") {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

/// Where values come from: the file, its folder, and which keys the command line overrode.
struct Context {
  std::string file;
  fs::path base_dir;
  std::map<std::string, std::string> overrides;  ///< dotted key -> "key=value" as given
};

/// Reads one YAML mapping into a struct, field by field, remembering which keys it consumed.
class Reader {
 public:
  Reader(YAML::Node node, std::string prefix, const Context& ctx)
      : node_(std::move(node)), prefix_(std::move(prefix)), ctx_(ctx) {}

  [[noreturn]] void fail(const std::string& key, const YAML::Node& at, const std::string& msg) const {
    const std::string path = key.empty() ? prefix_ : (prefix_.empty() ? key : prefix_ + "." + key);
    for (const auto& [k, given] : ctx_.overrides) {
      if (path == k || path.rfind(k + ".", 0) == 0 || k.rfind(path + ".", 0) == 0) {
        throw ConfigError("command-line override '" + given + "'", path, 0, msg);
      }
    }
    const int line = at.IsDefined() && at.Mark().line >= 0 ? at.Mark().line + 1 : 0;
    throw ConfigError(ctx_.file, path, line, msg);
  }

  bool from_override(const std::string& key) const {
    return ctx_.overrides.count(prefix_.empty() ? key : prefix_ + "." + key) > 0;
  }

  template <class T>
  void field(const std::string& key, T& out, const Check& check = Check::none()) {
    seen_.insert(key);
    if (!node_.IsMap()) return;
    const YAML::Node value = node_[key];
    if (!value.IsDefined()) return;  // keep the default
    read(key, value, out, check);
  }

  template <class S>
  void section(const std::string& key, S& out);

  void finish() const {
    if (!node_.IsDefined() || node_.IsNull()) return;
    if (!node_.IsMap()) fail("", node_, "expected a mapping of keys");
    for (const auto& kv : node_) {
      // A complex key (a list, a mapping, null) is no key name; as<std::string> would throw.
      if (!kv.first.IsScalar()) fail("", kv.first, "expected a key name, found " + kind_name(kv.first));
      const auto key = kv.first.Scalar();
      if (seen_.count(key)) continue;
      std::string hint;
      size_t best = 3;
      for (const auto& known : seen_) {
        if (auto d = edit_distance(key, known); d < best) {
          best = d;
          hint = " (did you mean '" + known + "'?)";
        }
      }
      fail(key, kv.first, "unknown key" + hint + "; known keys here: " +
                              join(std::vector<std::string>(seen_.begin(), seen_.end())));
    }
  }

 private:
  std::string kind_name(const YAML::Node& n) const {
    if (n.IsMap()) return "a mapping";
    if (n.IsSequence()) return "a list";
    if (n.IsNull()) return "null";
    return "'" + n.Scalar() + "'";
  }

  template <class T>
  T scalar(const std::string& key, const YAML::Node& v, const char* expected) const {
    if (!v.IsScalar()) fail(key, v, std::string("expected ") + expected + ", found " + kind_name(v));
    try {
      return v.as<T>();
    } catch (const YAML::Exception&) {
      fail(key, v, std::string("expected ") + expected + ", found " + kind_name(v));
    }
  }

  void check_number(const std::string& key, const YAML::Node& v, double x, const Check& c) const {
    if (!std::isfinite(x)) fail(key, v, "expected a finite number, found " + kind_name(v));
    auto num = [](double d) {
      std::ostringstream os;
      os << d;
      return os.str();
    };
    if (c.min && (c.min_exclusive ? !(x > *c.min) : !(x >= *c.min))) {
      fail(key, v, "value " + num(x) + " is out of range: must be " +
                       (c.min_exclusive ? "> " : ">= ") + num(*c.min) +
                       (c.max ? " and <= " + num(*c.max) : ""));
    }
    if (c.max && x > *c.max) {
      fail(key, v, "value " + num(x) + " is out of range: must be <= " + num(*c.max) +
                       (c.min ? " and " + std::string(c.min_exclusive ? "> " : ">= ") + num(*c.min) : ""));
    }
  }

  void read(const std::string& key, const YAML::Node& v, bool& out, const Check&) const {
    out = scalar<bool>(key, v, "true or false");
  }
  void read(const std::string& key, const YAML::Node& v, int64_t& out, const Check& c) const {
    out = scalar<int64_t>(key, v, "an integer");
    check_number(key, v, static_cast<double>(out), c);
  }
  void read(const std::string& key, const YAML::Node& v, double& out, const Check& c) const {
    out = scalar<double>(key, v, "a number");
    check_number(key, v, out, c);
  }
  void read(const std::string& key, const YAML::Node& v, std::string& out, const Check& c) const {
    if (v.IsNull()) {
      out.clear();
    } else {
      out = scalar<std::string>(key, v, "a string");
    }
    if (!c.choices.empty() &&
        std::find(c.choices.begin(), c.choices.end(), out) == c.choices.end()) {
      fail(key, v, "'" + out + "' is not one of: " + join(c.choices));
    }
    if (c.path != Check::Path::none) resolve_path(key, v, out, c, from_override(key));
  }
  /// A path value: relative ones from the config file's folder, or from the working directory
  /// when given on the command line (or an output directory); input files must exist.
  void resolve_path(const std::string& key, const YAML::Node& v, std::string& out, const Check& c,
                    bool overridden) const {
    if (out.empty()) {
      if (!c.optional_path) fail(key, v, "a path is required");
      return;
    }
    fs::path p(out);
    if (p.is_relative()) {
      p = (overridden || c.path == Check::Path::output_dir) ? fs::current_path() / p : ctx_.base_dir / p;
    }
    p = p.lexically_normal();
    if (c.path == Check::Path::input_file) {
      std::error_code ec;
      if (!fs::exists(p, ec)) fail(key, v, "file '" + p.string() + "' does not exist");
      if (fs::is_directory(p, ec)) fail(key, v, "'" + p.string() + "' is a directory, expected a file");
    }
    out = p.string();
  }
  /// A mapping of names to strings (rewrite templates and display names per intent), or to
  /// paths (with a path check: resolved as a single path is).
  void read(const std::string& key, const YAML::Node& v, std::map<std::string, std::string>& out,
            const Check& c) const {
    if (v.IsNull()) {
      out.clear();
      return;
    }
    if (!v.IsMap()) fail(key, v, "expected a mapping of names to strings, found " + kind_name(v));
    std::map<std::string, std::string> values;
    for (const auto& kv : v) {
      const auto name = scalar<std::string>(key, kv.first, "a name");
      if (kv.second.IsNull()) fail(key + "." + name, kv.second, "expected a string, found null");
      auto& value = values[name];
      value = scalar<std::string>(key + "." + name, kv.second, "a string");
      if (c.path != Check::Path::none) {
        resolve_path(key + "." + name, kv.second, value, c, from_override(key) || from_override(key + "." + name));
      }
    }
    out = std::move(values);
  }
  /// `model.plugins`: per plug-in modality, a mapping of its setting keys to scalar values,
  /// checked by the modality's own check (core/modality.h).
  void read(const std::string& key, const YAML::Node& v, std::map<std::string, ModalitySettings>& out,
            const Check&) const {
    if (v.IsNull()) {
      out.clear();
      return;
    }
    if (!v.IsMap()) fail(key, v, "expected a mapping of modality names to settings, found " + kind_name(v));
    const auto known = modality_names();
    std::map<std::string, ModalitySettings> values;
    for (const auto& kv : v) {
      const auto name = scalar<std::string>(key, kv.first, "a modality name");
      const std::string at = key + "." + name;
      if (is_builtin_modality(name)) {
        fail(at, kv.first, "'" + name + "' is built in: its settings are model." + name +
                               "_encoder and data." + name);
      }
      if (std::find(known.begin(), known.end(), name) == known.end()) {
        fail(at, kv.first, "no modality '" + name + "' is registered; registered: " + join(known));
      }
      if (!kv.second.IsNull() && !kv.second.IsMap()) {
        fail(at, kv.second, "expected a mapping of keys to values, found " + kind_name(kv.second));
      }
      ModalitySettings settings;
      settings.modality = name;
      if (kv.second.IsMap()) {
        for (const auto& item : kv.second) {
          const auto k = scalar<std::string>(at, item.first, "a key name");
          if (!item.second.IsScalar()) {
            fail(at + "." + k, item.second, "expected a single value, found " + kind_name(item.second));
          }
          settings.values[k] = item.second.Scalar();
        }
      }
      try {
        check_modality_settings(settings);
      } catch (const SettingError& e) {
        const YAML::Node where = kv.second.IsMap() && kv.second[e.key()].IsDefined() ? kv.second[e.key()] : kv.first;
        fail(at + "." + e.key(), where, e.message());
      }
      values[name] = std::move(settings);
    }
    out = std::move(values);
  }
  template <class T>
  void read(const std::string& key, const YAML::Node& v, std::vector<T>& out, const Check& c) const {
    if (!v.IsSequence()) fail(key, v, "expected a list, found " + kind_name(v));
    std::vector<T> values;
    for (size_t i = 0; i < v.size(); ++i) {
      T item{};
      read(key + "[" + std::to_string(i) + "]", v[i], item, c);
      values.push_back(item);
    }
    out = std::move(values);
  }

  YAML::Node node_;
  std::string prefix_;
  const Context& ctx_;
  std::set<std::string> seen_;
};

/// Writes the same structs back to YAML.
class Writer {
 public:
  explicit Writer(YAML::Emitter& out) : out_(out) {}
  template <class T>
  void field(const std::string& key, const T& value, const Check& = Check::none()) {
    out_ << YAML::Key << key << YAML::Value;
    write(value);
  }
  template <class S>
  void section(const std::string& key, S& value);

 private:
  void write(bool v) { out_ << v; }
  void write(int64_t v) { out_ << v; }
  void write(double v) {
    // The shortest text that reads back as the same double.
    std::string s;
    for (int precision = 6; precision <= std::numeric_limits<double>::max_digits10; ++precision) {
      std::ostringstream os;
      os.precision(precision);
      os << v;
      s = os.str();
      if (std::strtod(s.c_str(), nullptr) == v) break;  // std::stod throws for subnormals
    }
    if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
    out_ << s;
  }
  void write(const std::string& v) {
    if (v.empty()) out_ << YAML::Null;
    else out_ << YAML::DoubleQuoted << v;
  }
  void write(const std::map<std::string, std::string>& m) {
    if (m.empty()) out_ << YAML::Flow;
    out_ << YAML::BeginMap;
    for (const auto& [k, v] : m) {
      out_ << YAML::Key << YAML::DoubleQuoted << k << YAML::Value << YAML::DoubleQuoted << v;
    }
    out_ << YAML::EndMap;
  }
  void write(const std::map<std::string, ModalitySettings>& m) {
    if (m.empty()) out_ << YAML::Flow;
    out_ << YAML::BeginMap;
    for (const auto& [name, settings] : m) {
      out_ << YAML::Key << name << YAML::Value;
      std::map<std::string, std::string> values = settings.values;
      if (values.empty()) out_ << YAML::Flow;
      out_ << YAML::BeginMap;
      for (const auto& [k, v] : values) out_ << YAML::Key << k << YAML::Value << v;
      out_ << YAML::EndMap;
    }
    out_ << YAML::EndMap;
  }
  template <class T>
  void write(const std::vector<T>& v) {
    out_ << YAML::Flow << YAML::BeginSeq;
    for (const auto& x : v) write(x);
    out_ << YAML::EndSeq;
  }
  YAML::Emitter& out_;
};

// ---- The schema: one visit() per struct, shared by the reader and the writer. ----

template <class V> void visit(V& v, RuntimeConfig& c) {
  v.field("device", c.device);
  v.field("threads", c.threads, Check::ge(0));
  v.field("seed", c.seed, Check::ge(0));
  v.field("precision", c.precision, Check::one_of({"fp32", "bf16"}));
  v.field("keep_freed_memory", c.keep_freed_memory);
}
template <class V> void visit(V& v, ManifestFields& c) {
  v.field("text", c.text);
  v.field("image", c.image);
  v.field("label", c.label);
}
template <class V> void visit(V& v, ImageOptions& c) {
  v.field("width", c.width, Check::range(1, 4096));
  v.field("height", c.height, Check::range(1, 4096));
  v.field("channels", c.channels, Check::range(1, 3));
  v.field("mean", c.mean);
  v.field("std", c.std, Check::gt(0));
  v.field("max_pixels", c.max_pixels, Check::ge(1));
}
template <class V> void visit(V& v, AudioOptions& c) {
  v.field("field", c.field);
  v.field("sample_rate", c.sample_rate, Check::range(1000, 192000));
  v.field("max_seconds", c.max_seconds, Check::range(0.01, 3600));
  v.field("max_file_seconds", c.max_file_seconds, Check::range(0.01, 1e6));
  v.field("n_mels", c.n_mels, Check::range(4, 512));
  v.field("window_ms", c.window_ms, Check::range(1, 200));
  v.field("hop_ms", c.hop_ms, Check::range(1, 200));
  v.field("f_min", c.f_min, Check::ge(0));
  v.field("f_max", c.f_max, Check::ge(0));
  v.field("normalize", c.normalize, Check::one_of({"utterance", "global", "none"}));
  v.field("cache", c.cache);
}
template <class V> void visit(V& v, SpecAugmentOptions& c) {
  v.field("time_masks", c.time_masks, Check::range(0, 64));
  v.field("time_width", c.time_width, Check::range(0, 100000));
  v.field("max_time_ratio", c.max_time_ratio, Check::range(0, 1));
  v.field("freq_masks", c.freq_masks, Check::range(0, 64));
  v.field("freq_width", c.freq_width, Check::range(0, 512));
}
template <class V> void visit(V& v, TextAugmentOptions& c) {
  v.field("typos", c.typos, Check::range(0, 1));
  v.field("deletion", c.deletion, Check::range(0, 1));
  v.field("swap", c.swap, Check::range(0, 1));
  v.field("token_dropout", c.token_dropout, Check::range(0, 1));
}
template <class V> void visit(V& v, AugmentOptions& c) {
  v.field("enabled", c.enabled);
  v.field("crop_padding", c.crop_padding, Check::range(0, 64));
  v.field("hflip", c.hflip, Check::range(0, 1));
  v.field("brightness", c.brightness, Check::range(0, 1));
  v.field("contrast", c.contrast, Check::range(0, 1));
  v.section("spec_augment", c.spec_augment);
  v.section("text", c.text);
}
template <class V> void visit(V& v, TokenizerTrainOptions& c) {
  v.field("vocab_size", c.vocab_size, Check::range(8, 1000000));
  v.field("model_type", c.model_type, Check::one_of({"unigram", "bpe", "word", "char"}));
  v.field("character_coverage", c.character_coverage, Check::range(0.5, 1.0));
}
template <class V> void visit(V& v, TextConfig& c) {
  v.field("tokenizer", c.tokenizer, Check::input_file());
  v.section("train", c.train);
  v.field("max_length", c.max_length, Check::range(1, 100000));
}
template <class V> void visit(V& v, LoaderConfig& c) {
  v.field("batch_size", c.batch_size, Check::range(1, 1 << 20));
  v.field("eval_batch_size", c.eval_batch_size, Check::range(1, 1 << 20));
  v.field("num_workers", c.num_workers, Check::range(0, 64));
  v.field("prefetch", c.prefetch, Check::range(1, 64));
  v.field("shuffle", c.shuffle);
  v.field("drop_last", c.drop_last);
}
template <class V> void visit(V& v, DataConfig& c) {
  v.field("train", c.train, Check::input_file(/*optional=*/false));
  v.field("val", c.val, Check::input_file());
  v.field("test", c.test, Check::input_file());
  v.field("format", c.format, Check::one_of({"auto", "jsonl", "csv", "tsv"}));
  v.section("fields", c.fields);
  v.field("labels", c.labels, Check::input_file());
  v.field("unknown_labels", c.unknown_labels, Check::one_of({"error", "skip"}));
  v.field("on_bad_sample", c.on_bad_sample, Check::one_of({"error", "skip"}));
  v.field("allow_missing_text", c.allow_missing_text);
  v.field("allow_missing_image", c.allow_missing_image);
  v.field("allow_missing_audio", c.allow_missing_audio);
  v.section("image", c.image);
  v.section("audio", c.audio);
  v.section("augment", c.augment);
  v.field("cache_images", c.cache_images);
  v.section("text", c.text);
  v.section("loader", c.loader);
}
template <class V> void visit(V& v, TextEncoderOptions& c) {
  v.field("type", c.type(), Check::one_of({"lstm", "gru"}));
  v.field("embedding_dim", c.embedding_dim(), Check::range(1, 65536));
  v.field("hidden_size", c.hidden_size(), Check::range(1, 65536));
  v.field("num_layers", c.num_layers(), Check::range(1, 16));
  v.field("bidirectional", c.bidirectional());
  v.field("dropout", c.dropout(), Check::range(0, 0.95));
  v.field("pooling", c.pooling(), Check::one_of({"last", "mean", "max"}));
  v.field("rnn_kernel", c.rnn_kernel(), Check::one_of({"auto", "fused", "native"}));
}
template <class V> void visit(V& v, ImageEncoderOptions& c) {
  v.field("channels", c.channels(), Check::range(1, 4096));
  v.field("convs_per_block", c.convs_per_block(), Check::range(1, 8));
  v.field("kernel_size", c.kernel_size(), Check::range(1, 15));
  v.field("batch_norm", c.batch_norm());
  v.field("pool", c.pool(), Check::one_of({"max", "avg", "none"}));
  v.field("dropout", c.dropout(), Check::range(0, 0.95));
  v.field("out_dim", c.out_dim(), Check::range(1, 65536));
  v.field("channels_last", c.channels_last());
  v.field("norm_kernel", c.norm_kernel(), Check::one_of({"auto", "fused", "native"}));
}
template <class V> void visit(V& v, AudioEncoderOptions& c) {
  v.field("channels", c.channels(), Check::range(1, 4096));
  v.field("type", c.type(), Check::one_of({"lstm", "gru"}));
  v.field("hidden_size", c.hidden_size(), Check::range(1, 65536));
  v.field("num_layers", c.num_layers(), Check::range(1, 16));
  v.field("bidirectional", c.bidirectional());
  v.field("dropout", c.dropout(), Check::range(0, 0.95));
  v.field("pooling", c.pooling(), Check::one_of({"last", "mean", "max"}));
  v.field("rnn_kernel", c.rnn_kernel(), Check::one_of({"auto", "fused", "native"}));
}
template <class V> void visit(V& v, FusionOptions& c) {
  v.field("type", c.type(), Check::one_of({"concat", "gated"}));
  v.field("dim", c.dim(), Check::range(1, 65536));
}
template <class V> void visit(V& v, HeadOptions& c) {
  v.field("hidden", c.hidden(), Check::range(1, 65536));
  v.field("dropout", c.dropout(), Check::range(0, 0.95));
}
template <class V> void visit(V& v, InitConfig& c) {
  v.field("from", c.from, Check::input_path());
  v.field("modules", c.modules);
}
template <class V> void visit(V& v, ModelConfig& c) {
  v.field("modalities", c.modalities, Check::one_of(modality_names()));
  v.section("text_encoder", c.text_encoder);
  v.section("image_encoder", c.image_encoder);
  v.section("audio_encoder", c.audio_encoder);
  v.section("fusion", c.fusion);
  v.section("head", c.head);
  v.field("plugins", c.plugins);
  v.section("init", c.init);
}
template <class V> void visit(V& v, OptimizerOptions& c) {
  v.field("type", c.type, Check::one_of({"adamw", "sgd"}));
  v.field("lr", c.lr, Check::gt(0));
  v.field("weight_decay", c.weight_decay, Check::ge(0));
  v.field("momentum", c.momentum, Check::range(0, 1));
  v.field("nesterov", c.nesterov);
  v.field("beta1", c.beta1, Check::range(0, 1));
  v.field("beta2", c.beta2, Check::range(0, 1));
  v.field("eps", c.eps, Check::gt(0));
}
template <class V> void visit(V& v, SchedulerOptions& c) {
  v.field("type", c.type, Check::one_of({"constant", "step", "cosine"}));
  v.field("warmup_steps", c.warmup_steps, Check::ge(0));
  v.field("step_size", c.step_size, Check::ge(1));
  v.field("gamma", c.gamma, Check::gt(0));
  v.field("min_lr", c.min_lr, Check::ge(0));
}
template <class V> void visit(V& v, LossOptions& c) {
  v.field("label_smoothing", c.label_smoothing, Check::range(0, 0.99));
  v.field("class_weights", c.class_weights, Check::gt(0));
}
template <class V> void visit(V& v, EarlyStoppingOptions& c) {
  v.field("enabled", c.enabled);
  v.field("metric", c.metric);
  v.field("mode", c.mode, Check::one_of({"min", "max"}));
  v.field("patience", c.patience, Check::ge(1));
  v.field("min_delta", c.min_delta, Check::ge(0));
  v.field("min_epochs", c.min_epochs, Check::ge(0));
  v.field("restore_best", c.restore_best);
}
template <class V> void visit(V& v, DistillOptions& c) {
  v.field("teacher", c.teacher, Check::input_path());
  v.field("temperature", c.temperature, Check::gt(0));
  v.field("alpha", c.alpha, Check::range(0, 1));
}
template <class V> void visit(V& v, AdversarialOptions& c) {
  v.field("method", c.method, Check::one_of({"none", "fgm", "pgd"}));
  v.field("epsilon", c.epsilon, Check::gt(0));
  v.field("steps", c.steps, Check::range(1, 1000));
  v.field("alpha", c.alpha, Check::gt(0));
  v.field("modalities", c.modalities, Check::one_of({"text", "image"}));
  v.field("weight", c.weight, Check::ge(0));
}
template <class V> void visit(V& v, TrainerOptions& c) {
  v.field("epochs", c.epochs, Check::range(1, 100000));
  v.field("grad_clip", c.grad_clip, Check::ge(0));
  v.field("accumulation_steps", c.accumulation_steps, Check::range(1, 4096));
  v.section("optimizer", c.optimizer);
  v.section("scheduler", c.scheduler);
  v.section("loss", c.loss);
  v.section("distill", c.distill);
  v.section("adversarial", c.adversarial);
  v.section("early_stopping", c.early_stopping);
  v.field("save_best", c.save_best);
  v.field("save_last", c.save_last);
  v.field("progress", c.progress, Check::one_of({"auto", "bar", "lines", "none"}));
  v.field("log_every_steps", c.log_every_steps, Check::range(0, 1000000000));
}
template <class V> void visit(V& v, EvalConfig& c) {
  v.field("splits", c.splits, Check::one_of({"val", "test"}));
  v.field("top_k", c.top_k, Check::range(1, 100));
  v.field("listed_top", c.listed_top, Check::range(1, 100));
  v.field("plots", c.plots);
}
template <class V> void visit(V& v, OosConfig& c) {
  v.field("label", c.label);
  v.field("method", c.method, Check::one_of({"class", "threshold", "both"}));
  v.field("score", c.score, Check::one_of({"max_prob", "energy", "mahalanobis"}));
  v.field("threshold", c.threshold, Check::range(-1, 1));
  v.field("max_in_scope_loss", c.max_in_scope_loss, Check::range(-1, 1));
}
template <class V> void visit(V& v, EnsembleConfig& c) {
  v.field("members", c.members, Check::range(1, 64));
  v.field("seeds", c.seeds);
  v.field("overrides", c.overrides);
}
template <class V> void visit(V& v, LowRankOptions& c) {
  v.field("rank", c.rank(), Check::range(1, 4096));
  v.field("alpha", c.alpha(), Check::gt(0));
  v.field("targets", c.targets(), Check::one_of({"linear", "rnn", "embedding"}));
}
template <class V> void visit(V& v, TuneConfig& c) {
  v.field("epochs", c.epochs, Check::range(1, 100000));
  v.field("lr", c.lr, Check::gt(0));
  v.field("scheduler", c.scheduler, Check::one_of({"constant", "cosine"}));
  v.field("batch_size", c.batch_size, Check::range(1, 1 << 20));
  v.field("replay_ratio", c.replay_ratio, Check::range(0, 1000));
  v.field("replay_mix", c.replay_mix, Check::one_of({"training", "uniform"}));
  v.field("rejection_weight", c.rejection_weight, Check::ge(0));
  v.field("method", c.method, Check::one_of({"full", "head", "lora"}));
  v.section("lora", c.lora);
  v.field("freeze_encoders", c.freeze_encoders);
  v.field("objective", c.objective, Check::one_of({"supervised", "ips", "snips"}));
  v.field("clip", c.clip, Check::range(1, 1e9));
  v.field("baseline", c.baseline, Check::range(0, 1));
  v.field("holdout", c.holdout, Check::range(0, 0.9));
}
template <class V> void visit(V& v, ExploreOptions& c) {
  v.field("epsilon", c.epsilon, Check::range(0, 1));
}
template <class V> void visit(V& v, CalibrationOptions& c) {
  v.field("enabled", c.enabled);
  v.field("method", c.method, Check::one_of({"temperature", "split", "none"}));
  v.field("oos_share", c.oos_share);
}
template <class V> void visit(V& v, DecisionOptions& c) {
  v.field("min_confidence", c.min_confidence, Check::range(-1, 1));
  v.field("clarify_margin", c.clarify_margin, Check::range(-1, 1));
  v.field("target_precision", c.target_precision, Check::range(0, 1));
  v.section("explore", c.explore);
}
template <class V> void visit(V& v, RewriteOptions& c) {
  v.field("fillers", c.fillers);
  v.field("templates", c.templates);
  v.field("default_template", c.default_template);
  v.field("display_names", c.display_names);
  v.field("clarify_template", c.clarify_template);
  v.field("fallback_text", c.fallback_text);
}
template <class V> void visit(V& v, DistributedOptions& c) {
  v.field("backend", c.backend, Check::one_of({"auto", "gloo", "nccl"}));
  v.field("timeout_seconds", c.timeout_seconds, Check::range(1, 86400));
  v.field("bucket_mb", c.bucket_mb, Check::range(0.001, 4096));
}
template <class V> void visit(V& v, TlsConfig& c) {
  v.field("cert", c.cert, Check::input_file());
  v.field("key", c.key, Check::input_file());
}
template <class V> void visit(V& v, ServeConfig& c) {
  v.field("host", c.host);
  v.field("port", c.port, Check::range(0, 65535));
  v.field("threads", c.threads, Check::range(1, 1024));
  v.field("max_batch", c.max_batch, Check::range(1, 4096));
  v.field("max_wait_ms", c.max_wait_ms, Check::range(0, 10000));
  v.field("max_queue", c.max_queue, Check::range(1, 1 << 24));
  v.field("max_body_bytes", c.max_body_bytes, Check::range(1024, int64_t{1} << 32));
  v.field("max_inputs", c.max_inputs, Check::range(1, 1 << 16));
  v.field("top_k", c.top_k, Check::range(1, 1 << 20));
  v.field("read_timeout_s", c.read_timeout_s, Check::range(0.001, 3600));
  v.field("write_timeout_s", c.write_timeout_s, Check::range(0.001, 3600));
  v.field("api_keys_file", c.api_keys_file, Check::input_file());
  v.field("allow_unauthenticated", c.allow_unauthenticated);
  v.field("admin_keys_file", c.admin_keys_file, Check::input_file());
  v.section("tls", c.tls);
  v.field("log_requests", c.log_requests);
  v.field("feedback_log", c.feedback_log, Check::output_dir());
  v.field("feedback_window", c.feedback_window, Check::range(1, 10000000));
  v.field("adapters", c.adapters, Check::input_path());
}
template <class V> void visit(V& v, OutputConfig& c) {
  v.field("dir", c.dir, Check::output_dir());
  v.field("overwrite", c.overwrite);
  v.field("numbered", c.numbered);
}
template <class V> void visit(V& v, Config& c) {
  v.section("runtime", c.runtime);
  v.section("data", c.data);
  v.section("model", c.model);
  v.section("train", c.train);
  v.section("eval", c.eval);
  v.section("oos", c.oos);
  v.section("calibration", c.calibration);
  v.section("decision", c.decision);
  v.section("rewrite", c.rewrite);
  v.section("tune", c.tune);
  v.section("ensemble", c.ensemble);
  v.section("distributed", c.distributed);
  v.section("output", c.output);
  v.section("serve", c.serve);
}

template <class S>
void Reader::section(const std::string& key, S& out) {
  seen_.insert(key);
  YAML::Node child = node_.IsMap() ? node_[key] : YAML::Node();
  if (child.IsDefined() && !child.IsNull() && !child.IsMap()) {
    fail(key, child, "expected a mapping of keys, found " + kind_name(child));
  }
  Reader r(child.IsDefined() ? child : YAML::Node(YAML::NodeType::Null),
           prefix_.empty() ? key : prefix_ + "." + key, ctx_);
  visit(r, out);
  r.finish();
}

template <class S>
void Writer::section(const std::string& key, S& value) {
  out_ << YAML::Key << key << YAML::Value << YAML::BeginMap;
  visit(*this, value);
  out_ << YAML::EndMap;
}

// ---- Overrides and cross-field rules. ----

void apply_override(YAML::Node& root, const std::string& spec, Context& ctx) {
  const auto eq = spec.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw ConfigError("command-line override '" + spec + "'", "", 0,
                      "expected KEY=VALUE with a dotted key, e.g. train.optimizer.lr=3e-4");
  }
  const std::string key = spec.substr(0, eq), text = spec.substr(eq + 1);
  YAML::Node value;
  try {
    value = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError("command-line override '" + spec + "'", key, 0,
                      "value is not valid YAML: " + e.msg);
  }
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string part; std::getline(ss, part, '.');) {
    if (part.empty()) {
      throw ConfigError("command-line override '" + spec + "'", key, 0, "empty key segment");
    }
    parts.push_back(part);
  }
  YAML::Node cur = root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = cur[parts[i]];
    if (next.IsDefined() && !next.IsNull() && !next.IsMap()) {
      throw ConfigError("command-line override '" + spec + "'", key, 0,
                        "'" + parts[i] + "' is not a section");
    }
    if (!next.IsDefined() || next.IsNull()) cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
    cur.reset(cur[parts[i]]);
  }
  cur[parts.back()] = value;
  ctx.overrides[key] = spec;
}

void validate(const Config& c, const Context& ctx) {
  auto fail = [&](const std::string& key, const std::string& msg) {
    for (const auto& [k, given] : ctx.overrides) {
      if (k == key) throw ConfigError("command-line override '" + given + "'", key, 0, msg);
    }
    throw ConfigError(ctx.file, key, 0, msg);
  };
  if (c.data.train.empty()) fail("data.train", "a training manifest is required");
  const auto& m = c.model.modalities;
  if (m.empty()) fail("model.modalities", "at least one modality (" + join(modality_names()) + ") is required");
  if (std::set<std::string>(m.begin(), m.end()).size() != m.size()) {
    fail("model.modalities", "a modality is listed twice");
  }
  if (c.model.uses("text") && c.data.fields.text.empty()) {
    fail("data.fields.text", "the model uses text, so a text field name is required");
  }
  if (c.model.uses("image") && c.data.fields.image.empty()) {
    fail("data.fields.image", "the model uses images, so an image field name is required");
  }
  if (c.model.uses("audio") && c.data.audio.field.empty()) {
    fail("data.audio.field", "the model uses audio, so an audio field name is required");
  }
  if (c.data.fields.label.empty()) fail("data.fields.label", "a label field name is required");
  if (c.tune.method == "lora" && c.tune.lora.targets().empty()) {
    fail("tune.lora.targets", "at least one of linear, rnn, embedding is required with tune.method lora");
  }
  if (c.tune.method == "lora" && c.tune.freeze_encoders) {
    fail("tune.freeze_encoders", "means tune.method head; it cannot be combined with tune.method lora");
  }
  if (c.model.uses("audio")) {
    const auto& a = c.data.audio;
    if (a.hop_ms > a.window_ms) fail("data.audio.hop_ms", "must be <= data.audio.window_ms");
    if (a.max_file_seconds < a.max_seconds) fail("data.audio.max_file_seconds", "must be >= data.audio.max_seconds");
    if (a.f_min >= a.sample_rate / 2.0) fail("data.audio.f_min", "must be below sample_rate / 2");
    if (a.f_max != 0 && (a.f_max <= a.f_min || a.f_max > a.sample_rate / 2.0)) {
      fail("data.audio.f_max", "must be 0 (sample_rate / 2) or in (f_min, sample_rate / 2]");
    }
  }
  for (const auto& name : m) {
    // A plug-in listed without settings: its defaults must do.
    if (is_builtin_modality(name) || c.model.plugins.count(name)) continue;
    ModalitySettings defaults;
    defaults.modality = name;
    try {
      check_modality_settings(defaults);
    } catch (const SettingError& e) {
      fail("model.plugins." + name + "." + e.key(), e.message());
    }
  }
  for (const auto& [name, settings] : c.model.plugins) {
    if (!c.model.uses(name)) {
      fail("model.plugins." + name, "settings for modality '" + name +
                                        "', which model.modalities does not list");
    }
  }
  const auto ch = static_cast<size_t>(c.data.image.channels);
  if (c.data.image.channels == 2) fail("data.image.channels", "must be 1 (grey) or 3 (colour)");
  if (c.data.image.mean.size() != 1 && c.data.image.mean.size() != ch) {
    fail("data.image.mean", "needs 1 or " + std::to_string(ch) + " values");
  }
  if (c.data.image.std.size() != 1 && c.data.image.std.size() != ch) {
    fail("data.image.std", "needs 1 or " + std::to_string(ch) + " values");
  }
  if (c.model.image_encoder.kernel_size() % 2 == 0) {
    fail("model.image_encoder.kernel_size", "must be odd");
  }
  if (c.model.image_encoder.channels().empty()) fail("model.image_encoder.channels", "must not be empty");
  const auto& adv = c.train.adversarial;
  if (adv.enabled()) {
    std::set<std::string> listed;
    for (const auto& name : adv.modalities) {
      if (!c.model.uses(name)) {
        fail("train.adversarial.modalities", "'" + name + "' is not a modality of the model (model.modalities: " +
                                                 join(c.model.modalities) + ")");
      }
      if (!listed.insert(name).second) fail("train.adversarial.modalities", "'" + name + "' is listed twice");
    }
    if (adv.modalities.empty() && !c.model.uses("text") && !c.model.uses("image")) {
      fail("train.adversarial.modalities", "the model uses neither text nor image, the inputs adversarial training perturbs");
    }
  }
  const auto& es = c.train.early_stopping;
  // What the trainer's meters report (metrics/meters.h), sorted.
  const auto known_metrics = reported_metric_names();
  if (std::find(known_metrics.begin(), known_metrics.end(), es.metric) == known_metrics.end()) {
    fail("train.early_stopping.metric",
         "'" + es.metric + "' is not a reported metric; one of: " + join(known_metrics));
  }
  if ((es.enabled || es.restore_best) && es.metric.rfind("val.", 0) == 0 && c.data.val.empty()) {
    fail("train.early_stopping.metric", "'" + es.metric + "' needs data.val to be set" +
                                            std::string(es.enabled ? "" : " (restore_best tracks it)"));
  }
  for (const auto& split : c.eval.splits) {
    if ((split == "val" && c.data.val.empty()) || (split == "test" && c.data.test.empty())) {
      fail("eval.splits", "split '" + split + "' is listed but data." + split + " is not set");
    }
  }
  if (c.runtime.device != "auto" && c.runtime.device != "cpu" && c.runtime.device != "cuda" &&
      c.runtime.device.rfind("cuda:", 0) != 0) {
    fail("runtime.device", "'" + c.runtime.device + "' is not one of auto, cpu, cuda, cuda:N");
  }
  if (c.output.dir.empty()) fail("output.dir", "an output directory is required");
  if (c.serve.host.empty()) fail("serve.host", "an address to bind is required (e.g. 127.0.0.1)");
  for (const auto& [name, dir] : c.serve.adapters) {
    if (!ServeConfig::valid_adapter_name(name)) {
      fail("serve.adapters." + name, "an adapter's name is 1 to 64 letters, digits, '_' or '-' (it names the "
                                      "adapter in requests, metrics and the feedback log)");
    }
    if (dir.empty()) fail("serve.adapters." + name, "the adapter's run directory is required");
  }
  if (c.serve.tls.cert.empty() != c.serve.tls.key.empty()) {
    fail(c.serve.tls.cert.empty() ? "serve.tls.cert" : "serve.tls.key",
         "HTTPS needs both serve.tls.cert and serve.tls.key (or neither, for plain HTTP)");
  }
  for (const auto& [key, size] : {std::pair<std::string, size_t>{"ensemble.seeds", c.ensemble.seeds.size()},
                                   {"ensemble.overrides", c.ensemble.overrides.size()}}) {
    if (size != 0 && static_cast<int64_t>(size) != c.ensemble.members) {
      fail(key, "lists " + std::to_string(size) + " members, ensemble.members is " +
                    std::to_string(c.ensemble.members) + " (one entry per member, or none)");
    }
  }
  if (c.oos.method != "class" && !c.oos.label.empty()) {
    if (c.oos.threshold < 0 && c.oos.threshold != -1) fail("oos.threshold", "must be in (0, 1) or -1 (choose on val)");
    if (c.oos.threshold != -1 && c.oos.score != "max_prob") {
      fail("oos.threshold", "a fixed threshold is a top probability (oos.score: max_prob); the " + c.oos.score +
                                " score's scale depends on the model, so its threshold is chosen on val (-1)");
    }
    if (c.oos.max_in_scope_loss != -1 && !(c.oos.max_in_scope_loss >= 0 && c.oos.max_in_scope_loss < 1)) {
      fail("oos.max_in_scope_loss", "must be in [0, 1) (0.01: give up at most one point of in-scope accuracy on val), "
                                    "or -1 (the threshold of the highest val accuracy)");
    }
    if (c.oos.threshold == -1 && c.data.val.empty()) {
      fail("oos.threshold", "choosing the threshold (-1) needs data.val");
    }
  }
  if (c.calibration.method == "split" && (c.oos.label.empty() || c.oos.method == "threshold")) {
    fail("calibration.method", "split calibrates a trained out-of-scope class apart from the intents: it needs "
                               "oos.label with oos.method class or both (else use temperature)");
  }
  if (c.calibration.method == "split" && c.ensemble.members >= 2) {
    fail("calibration.method", "an ensemble averages its members' temperature-scaled probabilities; split "
                               "calibration is for a single model (use temperature)");
  }
  if (c.calibration.oos_share != -1 && !(c.calibration.oos_share > 0 && c.calibration.oos_share < 1)) {
    fail("calibration.oos_share", "must lie in (0, 1) (the out-of-scope share of the traffic served), or -1 "
                                  "(the share of the split the calibration is fitted on)");
  }
  if (c.calibration.oos_share != -1 && c.calibration.method != "split") {
    fail("calibration.oos_share", "is read by calibration.method: split only");
  }
  for (const auto& [key, value] :
       {std::pair<std::string, double>{"decision.min_confidence", c.decision.min_confidence},
        {"decision.clarify_margin", c.decision.clarify_margin}}) {
    if (value < 0 && value != -1) fail(key, "must be in [0, 1], or -1 to choose it on val");
    if (value == -1 && c.data.val.empty()) {
      fail(key, "choosing it on the validation split (-1) needs data.val");
    }
  }
  const auto& rw = c.rewrite;
  for (size_t i = 0; i < rw.fillers.size(); ++i) {
    if (rw.fillers[i].find_first_not_of(" \t\r\n") == std::string::npos) {
      fail("rewrite.fillers[" + std::to_string(i) + "]", "a filler must not be empty");
    }
  }
  auto check_template = [&](const std::string& key, const std::string& text, TemplateKind kind) {
    const auto problem = template_problem(text, kind);
    if (problem.empty()) return;
    for (const auto& [k, given] : ctx.overrides) {  // e.g. rewrite.templates={...}
      if (key.rfind(k + ".", 0) == 0) {
        throw ConfigError("command-line override '" + given + "'", key, 0, problem);
      }
    }
    fail(key, problem);
  };
  check_template("rewrite.default_template", rw.default_template, TemplateKind::accept);
  check_template("rewrite.clarify_template", rw.clarify_template, TemplateKind::clarify);
  check_template("rewrite.fallback_text", rw.fallback_text, TemplateKind::fallback);
  for (const auto& [intent, text] : rw.templates) {
    check_template("rewrite.templates." + intent, text, TemplateKind::accept);
  }
}

/// Whether the config (its file or a command-line override) gives the dotted key a value.
bool given(const YAML::Node& node, const std::string& dotted) {
  if (!node.IsMap()) return false;
  const auto dot = dotted.find('.');
  const YAML::Node child = node[dotted.substr(0, dot)];  // const: a lookup inserts nothing
  if (!child.IsDefined() || child.IsNull()) return false;
  return dot == std::string::npos || given(child, dotted.substr(dot + 1));
}

/// The smallest config (data.train alone) must train: where a split is missing, keys the
/// config left out that would need it take a value that works without it, and the choice is
/// recorded in config.adapted. A key the config sets is kept, and validate() says what is wrong.
void adapt_to_splits(Config& c, const YAML::Node& root) {
  const bool val = !c.data.val.empty(), test = !c.data.test.empty();
  auto& es = c.train.early_stopping;
  if (!val && (es.enabled || es.restore_best) && !given(root, "train.early_stopping.metric") &&
      es.metric.rfind("val.", 0) == 0) {
    std::vector<std::string> keys;
    if (es.enabled && !given(root, "train.early_stopping.enabled")) {
      es.enabled = false;
      keys.push_back("enabled");
    }
    if (es.restore_best && !given(root, "train.early_stopping.restore_best")) {
      es.restore_best = false;
      keys.push_back("restore_best");
    }
    if (!keys.empty()) {
      c.adapted.push_back("no data.val: early stopping is off (train.early_stopping." + join(keys, ", ") +
                          ": false); training runs for train.epochs (" + std::to_string(c.train.epochs) +
                          ") and keeps the last epoch's weights");
    }
  }
  if (!given(root, "eval.splits")) {
    std::vector<std::string> kept;
    for (const auto& split : c.eval.splits) {
      if ((split == "val" && val) || (split == "test" && test) || (split != "val" && split != "test")) {
        kept.push_back(split);
      }
    }
    if (kept != c.eval.splits) {
      c.eval.splits = kept;
      c.adapted.push_back(kept.empty() ? std::string("no data.val or data.test: no report is written after "
                                                     "training (eval.splits: []); evaluate later with "
                                                     "mmintent eval RUN_DIR --split MANIFEST")
                                       : "eval.splits: [" + join(kept) + "], the splits the config has");
    }
  }
  if (!val && c.calibration.enabled && c.calibration.method != "none") {
    c.adapted.push_back("no data.val: probabilities stay uncalibrated (the calibration is fitted "
                        "on val; mmintent calibrate RUN_DIR --split MANIFEST fits it later)");
  }
}

Config parse_node(YAML::Node root, Context& ctx, const std::vector<std::string>& overrides) {
  if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw ConfigError(ctx.file, "", 1, "the config must be a mapping of sections");
  for (const auto& o : overrides) apply_override(root, o, ctx);
  Config config;
  Reader reader(root, "", ctx);
  visit(reader, config);
  reader.finish();
  adapt_to_splits(config, root);
  config.source = ctx.file;
  if (fs::path(config.output.dir).is_relative()) {
    config.output.dir = (fs::current_path() / config.output.dir).lexically_normal().string();
  }
  validate(config, ctx);
  return config;
}

}  // namespace

Config parse_config(const std::string& yaml_text, const std::string& origin,
                    const std::vector<std::string>& overrides) {
  Context ctx;
  ctx.file = origin;
  ctx.base_dir = fs::absolute(fs::path(origin)).parent_path();
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(origin, "", e.mark.line + 1, "malformed YAML: " + e.msg);
  }
  return parse_node(root, ctx, overrides);
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::error_code ec;
    throw ConfigError(path, "", 0, !fs::exists(path, ec)        ? "the config file does not exist"
                                   : fs::is_directory(path, ec) ? "the config file is a directory"
                                                                : std::string("cannot open the config file: ") +
                                                                      std::strerror(errno));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path, overrides);
}

std::string to_yaml(const Config& config) {
  YAML::Emitter out;
  out << YAML::Comment("mmintent effective config: every key, defaults included");
  out << YAML::BeginMap;
  Writer w(out);
  visit(w, const_cast<Config&>(config));
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

void save_config(const Config& config, const std::string& path) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << to_yaml(config);
    if (!out) throw Error("cannot write config to '" + tmp + "'");
  }
  fs::rename(tmp, path);
}

}  // namespace mmintent

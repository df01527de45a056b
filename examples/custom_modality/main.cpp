// mmintent_custom_modality: adds a third modality to mmintent from outside the library, with
// no change to it, and shows it pays.
//
//   mmintent_custom_modality DATA_DIR WORK_DIR [KEY=VALUE ...]
//
// The product behind a support chat usually knows more than the message and the photo: the
// state of the customer's order. Here that state is a small vector of numbers per request (an
// "order" field in the manifest, e.g. "order": [0.1, -0.3, ...]). The example
//   1. registers an "order" modality: a reader (parses and checks the numbers, collates them)
//      and an encoder (a small MLP), with its settings (`dim`, `hidden`) checked at config time;
//   2. writes a copy of the demo data (DATA_DIR, made by mmintent_make_demo) whose records carry
//      an order vector: a noisy code of the intent, as real account state is a noisy hint;
//   3. trains the same model twice on it, text + image and text + image + order, same seed;
//   4. prints both test accuracies and predicts one request with the order modality.
//
// It is built against the installed package (CMakeLists.txt next to this file).

#include <mmintent/app/run.h>              // train_from_config
#include <mmintent/config/loader.h>        // parse_config
#include <mmintent/data/manifest.h>        // read_manifest
#include <mmintent/error.h>
#include <mmintent/inference/predictor.h>  // Predictor
#include <mmintent/run/plugins.h>          // register_modality

#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

// ---- 1. The modality ---------------------------------------------------------------------

/// Parses "[x1, x2, ...]" (as the manifest reader hands a JSON list over: compact JSON text)
/// into exactly `dim` finite numbers; returns "" or what is wrong.
std::string parse_vector(const std::string& text, int64_t dim, std::vector<float>& out) {
  out.clear();
  std::string s = text;
  if (s.size() < 2 || s.front() != '[' || s.back() != ']') return "expected a list of numbers, found " + text;
  s = s.substr(1, s.size() - 2);
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    char* end = nullptr;
    const float v = std::strtof(item.c_str(), &end);
    while (end && *end == ' ') ++end;
    if (end == item.c_str() || *end != '\0' || !std::isfinite(v)) {
      return "element " + std::to_string(out.size()) + " ('" + item + "') is not a finite number";
    }
    out.push_back(v);
  }
  if (static_cast<int64_t>(out.size()) != dim) {
    return "expected " + std::to_string(dim) + " numbers (model.plugins.order.dim), found " +
           std::to_string(out.size());
  }
  return "";
}

/// Reads the "order" field: checks every vector once when the data set is built (a bad one is
/// an error or a skip naming its manifest line, like a corrupt image), keeps them as floats.
class OrderReader : public mmintent::ModalityReader {
 public:
  explicit OrderReader(int64_t dim) : dim_(dim) {}

  std::vector<std::string> prepare(const std::vector<std::string>& values,
                                   const std::vector<long>&) override {
    std::vector<std::string> errors(values.size());
    rows_.assign(values.size(), {});
    for (size_t i = 0; i < values.size(); ++i) {
      if (values[i].empty()) continue;  // missing (only with allow_missing)
      std::vector<float> v;
      const std::string error = parse_vector(values[i], dim_, v);
      if (!error.empty()) errors[i] = "order: " + error;
      else rows_[i] = std::move(v);
    }
    return errors;
  }
  void retain(const std::vector<char>& keep) override { mmintent::retain_where(rows_, keep); }
  bool present(int64_t i) const override { return !rows_.at(i).empty(); }

  mmintent::ModalityInput collate(const std::vector<int64_t>& indices, const mmintent::AugmentOptions*,
                                  uint64_t) const override {
    const auto B = static_cast<int64_t>(indices.size());
    mmintent::ModalityInput in;
    in.data = torch::zeros({B, dim_});
    in.mask = torch::zeros({B});
    auto* x = in.data.data_ptr<float>();
    auto* m = in.mask.data_ptr<float>();
    for (int64_t b = 0; b < B; ++b) {
      const auto& row = rows_.at(indices[b]);
      if (row.empty()) continue;
      std::copy(row.begin(), row.end(), x + b * dim_);
      m[b] = 1.f;
    }
    return in;
  }

 private:
  int64_t dim_;
  std::vector<std::vector<float>> rows_;
};

/// A two-layer MLP over the order vector.
class OrderEncoderImpl : public mmintent::ModalityEncoderImpl {
 public:
  OrderEncoderImpl(int64_t dim, int64_t hidden) : hidden_(hidden) {
    fc1_ = register_module("fc1", torch::nn::Linear(dim, hidden));
    fc2_ = register_module("fc2", torch::nn::Linear(hidden, hidden));
  }
  torch::Tensor encode(const mmintent::ModalityInput& input) override {
    return torch::relu(fc2_->forward(torch::relu(fc1_->forward(input.data))));
  }
  int64_t output_dim() const override { return hidden_; }

 private:
  int64_t hidden_;
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};

int64_t order_dim(const mmintent::ModalitySettings& s) { return s.integer("dim", 8, 1, 1024); }
int64_t order_hidden(const mmintent::ModalitySettings& s) { return s.integer("hidden", 32, 1, 4096); }

void register_order_modality() {
  mmintent::ModalityPlugin plugin;
  plugin.name = "order";
  plugin.check = [](const mmintent::ModalitySettings& s) {
    s.check_keys({"dim", "hidden"});
    order_dim(s);
    order_hidden(s);
  };
  plugin.reader = [](const mmintent::ReaderContext& c) {
    return std::make_unique<OrderReader>(order_dim(c.settings));
  };
  plugin.encoder = [](const mmintent::EncoderContext& c) {
    return std::make_shared<OrderEncoderImpl>(order_dim(c.settings), order_hidden(c.settings));
  };
  mmintent::register_modality(std::move(plugin));
}

// ---- 2. Data: the demo's records plus an order vector -------------------------------------

constexpr int64_t kDim = 8;

/// Copies DATA_DIR/<split>.jsonl to OUT/<split>.jsonl with absolute image paths and an
/// "order" vector: a fixed random code of the intent plus noise (signal-to-noise about 1).
void write_split(const fs::path& data_dir, const fs::path& out, const std::string& split,
                 std::map<std::string, std::vector<float>>& codes, std::mt19937& rng) {
  mmintent::ManifestReadOptions o;
  const auto m = mmintent::read_manifest((data_dir / (split + ".jsonl")).string(), o);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::ofstream f(out / (split + ".jsonl"));
  for (const auto& r : m.records) {
    auto& code = codes[r.label];
    if (code.empty()) {
      for (int64_t k = 0; k < kDim; ++k) code.push_back(normal(rng));
    }
    std::ostringstream vec;
    vec << "[";
    for (int64_t k = 0; k < kDim; ++k) vec << (k ? ", " : "") << code[k] + 1.0f * normal(rng);
    vec << "]";
    auto quote = [](const std::string& s) {
      std::string q = "\"";
      for (char c : s) {
        if (c == '"' || c == '\\') q += '\\';
        q += c;
      }
      return q + "\"";
    };
    f << "{\"text\": " << quote(r.text) << ", \"image\": " << quote(fs::absolute(r.image).string())
      << ", \"order\": " << vec.str() << ", \"label\": " << quote(r.label) << "}\n";
  }
  if (!f) throw mmintent::Error("cannot write " + (out / (split + ".jsonl")).string());
}

// ---- 3. Training the two models -----------------------------------------------------------

constexpr const char* kConfigYaml = R"(
runtime: {device: cpu, threads: 1, seed: 7}
data:
  train: train.jsonl
  val: val.jsonl
  test: test.jsonl
  image: {width: 28, height: 28, channels: 1, mean: [0.286], std: [0.353]}
  text:
    train: {vocab_size: 120, model_type: unigram}
    max_length: 32
  loader: {batch_size: 16, num_workers: 0}
model:
  modalities: [text, image]
  text_encoder: {type: gru, embedding_dim: 16, hidden_size: 16}
  image_encoder: {channels: [8, 16], out_dim: 16}
  fusion: {type: concat}
  head: {hidden: [32], dropout: 0.1}
train:
  epochs: 3
  optimizer: {type: adamw, lr: 0.005}
  early_stopping: {metric: val.accuracy, mode: max}
eval: {splits: [test], plots: false}
)";

double train(const fs::path& data, const fs::path& run, const std::vector<std::string>& overrides) {
  mmintent::Config config = mmintent::parse_config(kConfigYaml, (data / "config.yaml").string(), overrides);
  config.output.dir = run.string();
  config.output.overwrite = true;
  mmintent::TrainRunOptions options;
  options.print_tables = false;
  const auto result = mmintent::train_from_config(config, options);
  return result.metrics.at("test").accuracy;
}

int run(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s DATA_DIR WORK_DIR [KEY=VALUE ...]\n", argv[0]);
    return 2;
  }
  const fs::path data_dir = fs::absolute(argv[1]);
  const fs::path work = fs::absolute(argv[2]);
  const std::vector<std::string> extra(argv + 3, argv + argc);
  register_order_modality();

  const fs::path data = work / "data";
  fs::create_directories(data);
  std::mt19937 rng(2026);
  std::map<std::string, std::vector<float>> codes;
  for (const char* split : {"train", "val", "test"}) write_split(data_dir, data, split, codes, rng);

  std::vector<std::string> base = extra;
  const double without = train(data, work / "text_image", base);
  std::vector<std::string> with = extra;
  with.push_back("model.modalities=[text, image, order]");
  with.push_back("model.plugins.order.dim=8");
  with.push_back("model.plugins.order.hidden=32");
  const double with_order = train(data, work / "text_image_order", with);
  std::printf("test accuracy, text + image:         %.3f\n", without);
  std::printf("test accuracy, text + image + order: %.3f\n", with_order);

  // ---- 4. Serving with the plug-in: the run directory names "order" in its config; a
  // process that registered the modality loads it like any other run.
  mmintent::PredictorOptions po;
  po.device = "cpu";
  const auto predictor = mmintent::Predictor::load((work / "text_image_order").string(), po);
  mmintent::ManifestReadOptions ro;
  ro.fields.plugins["order"] = "order";
  const auto test = mmintent::read_manifest((data / "test.jsonl").string(), ro);
  const auto& sample = test.records.front();
  mmintent::PredictInput request;
  request.text = sample.text;
  request.image = sample.image;
  request.inputs = sample.inputs;
  const auto prediction = predictor.predict(request, 1);
  std::printf("request: \"%s\" + photo + order %s -> %s (p=%.3f; true intent: %s)\n",
              request.text.c_str(), request.inputs.at("order").c_str(),
              prediction.top[0].intent.c_str(), prediction.top[0].probability, sample.label.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mmintent_custom_modality: %s\n", e.what());
  }
  return 1;
}

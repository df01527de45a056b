// mmintent_example_app: trains a tiny text + image intent classifier from a config built in
// code, then loads the finished run and predicts the intents of one customer request.
//
//   mmintent_example_app DATA_DIR RUN_DIR [KEY=VALUE ...]
//
// DATA_DIR holds train.jsonl, val.jsonl and test.jsonl in the demo layout (make them with
// `mmintent_make_demo --out DATA_DIR --train-per-intent 20 --val-per-intent 5
// --test-per-intent 5`); RUN_DIR receives the run (checkpoints, reports, tokenizer). KEY=VALUE
// arguments override config keys the way the `mmintent` CLI does, e.g. runtime.device=cpu.
//
// It is built against the installed package (see CMakeLists.txt next to this file):
//   find_package(mmintent CONFIG REQUIRED)
//   target_link_libraries(app PRIVATE mmintent::mmintent)

#include <mmintent/app/run.h>                 // train_from_config
#include <mmintent/config/loader.h>           // parse_config, load_config
#include <mmintent/data/manifest.h>           // read_manifest (to pick a request to predict)
#include <mmintent/error.h>                   // mmintent::Error and its subclasses
#include <mmintent/inference/predictor.h>     // Predictor

#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

// The run's config as YAML: exactly what a config file would hold (configs/demo.yaml is the
// full-size version). Keys left out keep their defaults; an unknown key or a wrong type is a
// ConfigError naming the key. Relative paths resolve against the folder of the config's
// "origin" (the second argument of parse_config), so `train: train.jsonl` means
// DATA_DIR/train.jsonl below. The model is deliberately small so the example trains in seconds.
constexpr const char* kConfigYaml = R"(
runtime:
  device: auto        # cuda when available, else cpu
  threads: 1          # a model this small gains nothing from more; 0 = one per core
  seed: 42
data:
  train: train.jsonl
  val: val.jsonl
  test: test.jsonl
  fields: {text: text, image: image, label: label}
  image: {width: 28, height: 28, channels: 1, mean: [0.286], std: [0.353]}
  text:
    train: {vocab_size: 120, model_type: unigram}
    max_length: 32
  loader: {batch_size: 8, num_workers: 0}
model:
  modalities: [text, image]
  text_encoder: {type: lstm, embedding_dim: 32, hidden_size: 32, num_layers: 1}
  image_encoder: {channels: [8, 16], out_dim: 32}
  fusion: {type: concat}
  head: {hidden: [32], dropout: 0.1}
train:
  epochs: 10
  optimizer: {type: adamw, lr: 0.005}
  early_stopping: {metric: val.accuracy, mode: max}
eval:
  splits: [val, test]
  plots: false
)";

int run(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s DATA_DIR RUN_DIR [KEY=VALUE ...]\n", argv[0]);
    return 2;
  }
  const fs::path data_dir = fs::absolute(argv[1]);
  const fs::path run_dir = fs::absolute(argv[2]);
  const std::vector<std::string> overrides(argv + 3, argv + argc);

  // 1. The config. parse_config reads YAML text "as if" it were the file `origin`, applies the
  //    overrides and validates everything (missing manifests are reported here, before any
  //    work). To read a file instead: mmintent::load_config("my_config.yaml", overrides).
  const std::string origin = (data_dir / "example_config.yaml").string();
  mmintent::Config config = mmintent::parse_config(kConfigYaml, origin, overrides);

  // 2. Adjust fields in code. These are plain structs (field names = YAML keys); values set
  //    here are not validated again, so keep them sensible, and they win over the YAML text and
  //    the command-line overrides.
  config.train.epochs = 2;                   // tiny: the example must run in seconds
  config.output.dir = run_dir.string();      // where the run is written
  config.output.overwrite = true;            // allow re-running into the same RUN_DIR

  // 3. Train and evaluate. This writes RUN_DIR (config.yaml, labels.json, tokenizer.model,
  //    best.pt/last.pt, metrics.jsonl, report.json, train.log) and returns the metrics.
  mmintent::TrainRunOptions train_options;
  train_options.print_tables = false;  // the CLI prints the evaluation tables; we print less
  const mmintent::TrainRunResult result = mmintent::train_from_config(config, train_options);
  std::printf("trained %lld epoch(s) into %s (stopped: %s)\n",
              static_cast<long long>(result.fit.epochs_completed), result.run_dir.c_str(),
              result.fit.stop_reason.c_str());
  for (const auto& [split, metrics] : result.metrics) {
    std::printf("  %-4s accuracy %.3f  macro-F1 %.3f  (%lld samples)\n", split.c_str(),
                metrics.accuracy, metrics.macro_f1, static_cast<long long>(metrics.count));
  }

  // 4. Serve the finished run: Predictor::load needs only the run directory, so this part is
  //    what a separate serving process would do.
  mmintent::PredictorOptions predictor_options;
  predictor_options.device = "cpu";
  const mmintent::Predictor predictor = mmintent::Predictor::load(result.run_dir, predictor_options);

  // One request = a customer's message + the path of their photo. We take the first test
  // sample so the true intent is known; image paths come back resolved against DATA_DIR.
  mmintent::ManifestReadOptions read_options;
  const mmintent::Manifest test = mmintent::read_manifest((data_dir / "test.jsonl").string(), read_options);
  if (test.records.empty()) throw mmintent::Error((data_dir / "test.jsonl").string() + ": no records");
  const mmintent::Record& sample = test.records.front();

  mmintent::PredictInput request;
  request.text = sample.text;
  request.image = sample.image;
  const mmintent::Prediction prediction = predictor.predict(request, /*top_k=*/3);
  const std::vector<mmintent::IntentScore>& top = prediction.top;

  std::printf("request: \"%s\" + %s (true intent: %s)\n", request.text.c_str(),
              request.image.c_str(), sample.label.c_str());
  for (size_t i = 0; i < top.size(); ++i) {
    std::printf("  top %zu: %-24s p=%.3f\n", i + 1, top[i].intent.c_str(), top[i].probability);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Every mmintent failure is an exception (mmintent::Error, or ConfigError / DataError /
  // CheckpointError naming the file, key or line); LibTorch throws c10::Error, also a
  // std::exception. An app reports them and exits non-zero.
  try {
    return run(argc, argv);
  } catch (const mmintent::Error& e) {
    std::fprintf(stderr, "mmintent_example_app: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mmintent_example_app: unexpected error: %s\n", e.what());
  }
  return 1;
}

// mmintent predict RUN_DIR (--text T | --image PATH | --manifest FILE --out FILE) [--rewrite]
#include "command.h"

#include "mmintent/core/log.h"
#include "mmintent/inference/predictor.h"

#include <iomanip>
#include <iostream>
#include <memory>

namespace mmintent::cli {
namespace {

void print_prediction(const Prediction& prediction) {
  if (prediction.out_of_scope) std::cout << "out of scope: no supported intent fits this request\n";
  std::cout << "decision: " << to_string(prediction.decision);
  if (prediction.candidates.size() == 2) {
    std::cout << " between " << prediction.candidates[0].intent << " and "
              << prediction.candidates[1].intent;
  }
  std::cout << "\n";
  for (const auto& s : prediction.top) {
    std::cout << std::left << std::setw(32) << s.intent << std::fixed << std::setprecision(4)
              << s.probability << "\n";
  }
}

}  // namespace

Command add_predict(CLI::App& app) {
  struct State {
    std::string run_dir, text, image, manifest, out, device = "cpu";
    int64_t top_k = 3;
    bool rewrite = false;
  };
  auto s = std::make_shared<State>();
  auto* cmd = app.add_subcommand("predict", "Top-k intents for a text and/or image, or a manifest");
  cmd->add_option("run_dir", s->run_dir, "Run directory written by 'train'")->required();
  cmd->add_option("--text", s->text, "The message text");
  cmd->add_option("--image", s->image, "Path of the photo");
  cmd->add_option("--manifest", s->manifest, "Predict every record of this manifest...");
  cmd->add_option("--out", s->out, "...into this JSONL file");
  cmd->add_option("--top-k", s->top_k, "How many intents to list")->check(CLI::PositiveNumber);
  cmd->add_option("--device", s->device, "auto, cpu, cuda or cuda:N");
  cmd->add_flag("--rewrite", s->rewrite,
                "Emit the request for the assistant behind as JSON lines (normalised text, decision, "
                "rendered rewrite template), to stdout for --text, to --out for --manifest");
  return {cmd, [s]() -> int {
            PredictorOptions po;
            po.device = s->device;
            auto predictor = Predictor::load(s->run_dir, po);
            if (!s->manifest.empty()) {
              if (s->out.empty()) return fail(kUsage, "--manifest needs --out FILE");
              const auto r = predictor.predict_manifest(s->manifest, s->out, s->top_k, s->rewrite);
              for (const auto& skipped : r.skipped) log::warn("predict", "skipped " + skipped);
              std::cout << "wrote " << r.predicted
                        << (s->rewrite ? " rewritten requests to " : " predictions to ") << s->out;
              if (!r.skipped.empty()) {
                std::cout << "; " << r.skipped.size()
                          << " record(s) skipped (data.on_bad_sample: skip), each marked there by a "
                             "line with \"skipped\" and listed above";
              }
              std::cout << "\n";
              return kOk;
            }
            if (s->text.empty() && s->image.empty()) {
              return fail(kUsage, "give --text and/or --image, or --manifest");
            }
            PredictInput input;
            input.text = s->text;
            input.image = s->image;
            const auto prediction = predictor.predict(input, s->top_k);
            if (s->rewrite) {
              std::cout << to_json_line(predictor.rewrite(input, prediction), predictor.rewriter()) << "\n";
            } else {
              print_prediction(prediction);
            }
            return kOk;
          }};
}

}  // namespace mmintent::cli

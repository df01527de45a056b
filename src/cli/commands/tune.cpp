// mmintent tune RUN_DIR --feedback LOG --out NEW_RUN_DIR [KEY=VALUE ...] [--overwrite]
#include "command.h"

#include "mmintent/app/tune.h"
#include "mmintent/training/interrupt.h"

#include <memory>

namespace mmintent::cli {

Command add_tune(CLI::App& app) {
  struct State {
    std::string run_dir;
    TuneOptions options;
  };
  auto s = std::make_shared<State>();
  auto* cmd = app.add_subcommand("tune", "Update a trained run from a feedback log into a new run directory");
  cmd->footer("Example:\n  mmintent tune runs/demo --feedback feedback.jsonl --out runs/demo_tuned");
  cmd->add_option("run_dir", s->run_dir, "Run directory written by 'train' (only read)")->required();
  cmd->add_option("--feedback", s->options.feedback,
                  "Feedback log (JSONL: text/image, predicted, reaction, corrected_to)")
      ->required();
  cmd->add_option("--out", s->options.out_dir, "The new run directory")->required();
  cmd->add_option("overrides", s->options.overrides,
                  "Dotted KEY=VALUE overrides of the run's config, e.g. tune.epochs=5 tune.freeze_encoders=true");
  cmd->add_flag("--overwrite", s->options.overwrite, "Allow a non-empty --out directory");
  return {cmd, [s]() -> int {
            install_stop_handlers();
            auto result = tune_from_feedback(s->run_dir, s->options);
            print_run_summary(result.run_dir, result.metrics);
            return kOk;
          }};
}

}  // namespace mmintent::cli

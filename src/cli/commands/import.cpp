// mmintent import clinc150|snips|spoken-snips|spoken|fashion-mnist SRC_DIR OUT_DIR [options]
#include "command.h"

#include "mmintent/data/importers.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <iomanip>
#include <iostream>
#include <memory>

namespace mmintent::cli {
namespace {

void print_import_summary(const ImportSummary& summary, double seconds) {
  std::cout << "imported " << summary.dataset << " into " << summary.out_dir << " in " << std::fixed
            << std::setprecision(2) << seconds << " s\n";
  for (const auto& split : summary.splits) {
    std::cout << "  " << std::left << std::setw(12) << (split.split + ".jsonl") << std::right << std::setw(7)
              << split.records << " records; by " << summary.kind << ":";
    for (const auto& [kind, n] : split.by_kind) std::cout << " " << kind << " " << n;
    std::cout << "\n";
  }
  std::cout << "  labels: " << summary.num_labels << "\n";
  for (const auto& note : summary.notes) std::cout << "  note: " << note << "\n";
  const auto differences = summary.count_differences();
  if (summary.checks.empty()) {
    // Nothing published to compare with (e.g. speaking a user's own manifests).
  } else if (differences.empty()) {
    std::cout << "  matches published counts (";
    for (std::size_t i = 0; i < summary.checks.size(); ++i) {
      std::cout << (i ? "; " : "") << summary.checks[i].what << " " << summary.checks[i].found;
    }
    std::cout << ")\n";
  } else {
    std::cout << "  warning: counts differ from the published ones: ";
    for (std::size_t i = 0; i < differences.size(); ++i) {
      std::cout << (i ? "; " : "") << differences[i].what << ": found " << differences[i].found
                << ", published " << differences[i].published;
    }
    std::cout << "\n";
  }
}

}  // namespace

Command add_import(CLI::App& app) {
  struct State {
    std::string src_dir, out_dir;
    Clinc150ImportOptions clinc;
    std::string oos_mode = "include";
    SnipsImportOptions snips;
    std::string latin1_mode = "decode", surrogate_mode = "join";
    FashionMnistImportOptions fashion;
    SpeechOptions speech;
    std::string snrs = "clean,20,10,5";
  };
  auto s = std::make_shared<State>();
  auto* cmd = app.add_subcommand("import", "Convert a public data set into train/val/test JSONL manifests");
  cmd->require_subcommand(1);
  cmd->footer("Example:\n  mmintent import clinc150 ../shared/data/clinc150 data/generated/clinc150");
  auto* clinc = cmd->add_subcommand("clinc150", "CLINC150: SRC_DIR/data_<variant>.json");
  clinc->add_option("src_dir", s->src_dir, "Folder with the CLINC150 files")->required();
  clinc->add_option("out_dir", s->out_dir, "Where to write train/val/test.jsonl")->required();
  clinc->add_option("--variant", s->clinc.variant, "full, small, imbalanced or oos_plus")
      ->check(CLI::IsMember({"full", "small", "imbalanced", "oos_plus"}));
  clinc->add_option("--oos", s->oos_mode, "include (append out-of-scope samples to each split) or exclude")
      ->check(CLI::IsMember({"include", "exclude"}));
  clinc->add_option("--oos-label", s->clinc.oos_label, "Label of the out-of-scope samples");
  auto* snips = cmd->add_subcommand("snips", "SNIPS: SRC_DIR/train_<Intent>_full.json, validate_<Intent>.json");
  snips->add_option("src_dir", s->src_dir, "Folder with the SNIPS files")->required();
  snips->add_option("out_dir", s->out_dir, "Where to write train/val/test.jsonl")->required();
  snips->add_option("--latin1", s->latin1_mode, "Bytes that are not UTF-8: decode (as Latin-1) or error")
      ->check(CLI::IsMember({"decode", "error"}));
  snips->add_option("--surrogate-pairs", s->surrogate_mode,
                    "With --latin1 decode, a CESU-8 surrogate pair: join (one code point) or latin1")
      ->check(CLI::IsMember({"join", "latin1"}));
  snips->add_option("--val-per-intent", s->snips.val_per_intent,
                    "Train-file utterances per intent held out as val (the validate files are test)");
  snips->add_option("--seed", s->snips.seed, "Seed for choosing the val utterances");
  // The spoken data sets share their speech options.
  auto speech_options = [s](CLI::App* sub) {
    sub->add_option("--snr", s->snrs, "Noise levels drawn per utterance: 'clean' and/or SNRs in dB")
        ->capture_default_str();
    sub->add_option("--val-voices", s->speech.val_voices, "Share of espeak-ng's voice variants speaking only val")
        ->capture_default_str();
    sub->add_option("--test-voices", s->speech.test_voices, "Share speaking only test")->capture_default_str();
    sub->add_option("--limit", s->speech.limit, "At most this many utterances per split (0: all)")
        ->capture_default_str();
    sub->add_option("--seed", s->speech.seed, "Seed for the voices, renditions and noise (and SNIPS's val split)")
        ->capture_default_str();
    sub->add_option("--threads", s->speech.threads, "Threads (0: one per core)")->capture_default_str();
  };
  auto* spoken_snips = cmd->add_subcommand(
      "spoken-snips", "SNIPS spoken by espeak-ng (synthetic speech, split by voice): SRC_DIR as for snips");
  spoken_snips->add_option("src_dir", s->src_dir, "Folder with the SNIPS files")->required();
  spoken_snips->add_option("out_dir", s->out_dir, "Where to write audio/ and train/val/test.jsonl")->required();
  speech_options(spoken_snips);
  spoken_snips->footer("Example:\n  mmintent import spoken-snips ../shared/data/snips data/generated/spoken_snips");
  auto* spoken = cmd->add_subcommand(
      "spoken", "Speak the texts of SRC_DIR/{train,val,test}.jsonl with espeak-ng (synthetic speech, split by voice)");
  spoken->add_option("src_dir", s->src_dir, "Folder with train/val/test.jsonl (records with text and label)")->required();
  spoken->add_option("out_dir", s->out_dir, "Where to write audio/ and the spoken manifests")->required();
  speech_options(spoken);
  spoken->footer("Example:\n  mmintent import spoken data/demo data/demo_speech");
  auto* fashion = cmd->add_subcommand("fashion-mnist", "Fashion-MNIST: the four *-ubyte.gz files");
  fashion->add_option("src_dir", s->src_dir, "Folder with the gzip IDX files")->required();
  fashion->add_option("out_dir", s->out_dir, "Where to write images/ and train/val/test.jsonl")->required();
  fashion->add_option("--val-size", s->fashion.val_size, "Training images held out as val");
  fashion->add_option("--seed", s->fashion.seed, "Seed for choosing the val images");
  return {cmd, [s, clinc, snips, spoken_snips, spoken]() -> int {
            const auto start = std::chrono::steady_clock::now();
            ImportSummary summary;
            if (*clinc) {
              s->clinc.include_oos = s->oos_mode == "include";
              summary = import_clinc150(s->src_dir, s->out_dir, s->clinc);
            } else if (*snips) {
              s->snips.invalid_utf8 = s->latin1_mode == "error" ? SnipsImportOptions::InvalidUtf8::error
                                                                : SnipsImportOptions::InvalidUtf8::decode;
              s->snips.join_surrogate_pairs = s->surrogate_mode == "join";
              summary = import_snips(s->src_dir, s->out_dir, s->snips);
            } else if (*spoken_snips || *spoken) {
              s->speech.snr_db.clear();
              s->speech.clean = false;
              std::stringstream list(s->snrs);
              for (std::string item; std::getline(list, item, ',');) {
                if (item == "clean") {
                  s->speech.clean = true;
                  continue;
                }
                char* end = nullptr;
                const double db = std::strtod(item.c_str(), &end);
                if (item.empty() || *end != '\0' || !std::isfinite(db)) {
                  return fail(kUsage, "--snr: '" + item + "' is neither 'clean' nor a number of dB");
                }
                s->speech.snr_db.push_back(db);
              }
              if (*spoken_snips) {
                SpokenSnipsImportOptions options;
                options.text.seed = s->speech.seed;
                options.speech = s->speech;
                summary = import_spoken_snips(s->src_dir, s->out_dir, options);
              } else {
                summary = import_spoken(s->src_dir, s->out_dir, s->speech);
              }
            } else {
              summary = import_fashion_mnist(s->src_dir, s->out_dir, s->fashion);
            }
            print_import_summary(
                summary, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
            return kOk;
          }};
}

}  // namespace mmintent::cli

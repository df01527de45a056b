// mmintent predict RUN_DIR (--text T | --image PATH | --audio PATH | --manifest FILE|- --out FILE|-) [--rewrite]
#include "command.h"

#include "mmintent/core/log.h"
#include "mmintent/error.h"
#include "mmintent/inference/predictor.h"
#include "mmintent/run/setup.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
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

/// Lines of a file descriptor, read as they come (no stdio buffering to guess about).
class LineReader {
 public:
  explicit LineReader(int fd) : fd_(fd) {}
  /// The next line (without its newline); false at the end of input.
  bool next(std::string& line) {
    for (;;) {
      if (const auto nl = buffer_.find('\n', start_); nl != std::string::npos) {
        line.assign(buffer_, start_, nl - start_);
        start_ = nl + 1;
        return true;
      }
      if (eof_) {
        if (start_ >= buffer_.size()) return false;
        line.assign(buffer_, start_, std::string::npos);  // a last line without a newline
        start_ = buffer_.size();
        return true;
      }
      fill();
    }
  }
  /// True when a whole line can be had without waiting.
  bool ready() {
    if (buffer_.find('\n', start_) != std::string::npos || eof_) return true;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    fill();
    return buffer_.find('\n', start_) != std::string::npos || eof_;
  }

 private:
  /// Appends what one read() gives (blocks until something or the end comes).
  void fill() {
    buffer_.erase(0, start_);
    start_ = 0;
    char chunk[1 << 16];
    for (;;) {
      const ssize_t n = ::read(fd_, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw Error(std::string("cannot read standard input: ") + std::strerror(errno));
      if (n == 0) eof_ = true;
      buffer_.append(chunk, static_cast<std::size_t>(n));
      return;
    }
  }
  int fd_;
  std::string buffer_;
  std::size_t start_ = 0;
  bool eof_ = false;
};

/// `--manifest -`: JSONL records from standard input, predictions to standard output as they
/// come. Lines that are already waiting are predicted together (up to a batch), so a pipe runs
/// at batch speed and an interactive writer gets each answer at once.
int predict_stream(const Predictor& predictor, std::ostream& out, int64_t top_k, bool rewrite) {
  constexpr long kMaxBatch = 64;
  const auto options = manifest_read_options(predictor.config(), /*require_label=*/false);
  LineReader reader(STDIN_FILENO);
  std::string chunk, line;
  long lines = 0, offset = 0, skipped = 0;
  auto answer = [&](Manifest m) {
    if (m.records.empty() && m.skipped.empty()) return;  // blank lines only
    const auto r = predictor.predict_records(std::move(m), out, top_k, rewrite);
    for (const auto& s : r.skipped) log::warn("predict", "skipped " + s);
    skipped += static_cast<long>(r.skipped.size());
    out.flush();
  };
  auto flush = [&] {
    if (lines == 0) return;
    Manifest m;
    try {
      m = parse_jsonl_manifest(chunk, "<stdin>", offset, options);
    } catch (const DataError&) {
      // A bad record (data.on_bad_sample: error): answer the records before it, one by one,
      // then fail on it with its line.
      std::size_t start = 0;
      for (long i = 0; i < lines; ++i) {
        const auto end = chunk.find('\n', start);
        answer(parse_jsonl_manifest(chunk.substr(start, end - start), "<stdin>", offset + i, options));
        start = end + 1;
      }
      throw;  // not reached: the bad line threw above
    }
    answer(std::move(m));
    offset += lines;
    lines = 0;
    chunk.clear();
  };
  while (reader.next(line)) {
    chunk += line;
    chunk += '\n';
    ++lines;
    if (lines >= kMaxBatch || !reader.ready()) flush();
  }
  flush();
  if (!out) throw Error("cannot write predictions to standard output");
  if (skipped > 0) log::warn("predict", std::to_string(skipped) + " record(s) skipped (data.on_bad_sample: skip)");
  return kOk;
}

}  // namespace

Command add_predict(CLI::App& app) {
  struct State {
    std::string run_dir, text, image, audio, manifest, out, device;
    int64_t top_k = 3;
    bool rewrite = false;
    double explore = -1;
  };
  auto s = std::make_shared<State>();
  auto* cmd = app.add_subcommand("predict", "Top-k intents for a text, image and/or audio, or a manifest");
  cmd->footer("Example:\n  mmintent predict runs/demo --text \"can i return these trousers?\" --image photo.png");
  cmd->add_option("run_dir", s->run_dir, "Run directory written by 'train'")->required();
  cmd->add_option("--text", s->text, "The message text");
  cmd->add_option("--image", s->image, "Path of the photo");
  cmd->add_option("--audio", s->audio, "Path of the spoken message (WAV, FLAC or OGG)");
  cmd->add_option("--manifest", s->manifest,
                  "Predict every record of this manifest (- : JSONL from standard input, answered "
                  "on standard output as lines arrive)...");
  cmd->add_option("--out", s->out, "...into this JSONL file (- : standard output)");
  cmd->add_option("--top-k", s->top_k, "How many intents to list")->check(CLI::PositiveNumber);
  cmd->add_option("--device", s->device, "auto, cpu, cuda or cuda:N (default: the run's runtime.device, as for eval)");
  cmd->add_option("--explore", s->explore,
                  "Explore: show a uniformly drawn intent with this probability (decision.explore.epsilon; "
                  "default: the run's); each output line gives the intent shown and its propensity")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_flag("--rewrite", s->rewrite,
                "Emit the request for the assistant behind as JSON lines (normalised text, decision, "
                "rendered rewrite template), to stdout for --text, to --out for --manifest");
  return {cmd, [s]() -> int {
            PredictorOptions po;
            po.device = s->device;
            po.explore_epsilon = s->explore;
            auto predictor = Predictor::load(s->run_dir, po);
            if (s->manifest == "-") {
              if (!s->out.empty() && s->out != "-") {
                return fail(kUsage, "--manifest - writes to standard output: leave out --out (or give --out -)");
              }
              return predict_stream(predictor, std::cout, s->top_k, s->rewrite);
            }
            if (!s->manifest.empty() && s->out == "-") {
              const auto options = manifest_read_options(predictor.config(), /*require_label=*/false);
              const auto r = predictor.predict_records(read_manifest(s->manifest, options), std::cout, s->top_k, s->rewrite);
              for (const auto& skipped : r.skipped) log::warn("predict", "skipped " + skipped);
              std::cout.flush();
              return kOk;
            }
            if (!s->manifest.empty()) {
              if (s->out.empty()) return fail(kUsage, "--manifest needs --out FILE (or --out - for standard output)");
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
            if (s->text.empty() && s->image.empty() && s->audio.empty()) {
              return fail(kUsage, "give --text, --image and/or --audio, or --manifest");
            }
            PredictInput input;
            input.text = s->text;
            input.image = s->image;
            input.audio = s->audio;
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

/// mmintent_make_demo: builds the "shop assistant" demo data set from Debian's Fashion-MNIST.
///
/// Each sample is a customer message plus a product photo; the intent is action x product
/// group (12 intents). The message states the action (return / availability / care) but names
/// the product group only in a share `--mention-rate` of the samples; the photo shows the
/// product group but never the action. So neither modality alone can reach high accuracy:
/// text-only <= p + (1-p)/4, image-only <= 1/3, text+image ~ 1. See data/README.md.
///
/// Output (OUT = --out, default data/demo):
///   OUT/images/{train,val,test}/NNNNN.png   28x28 8-bit grey PNGs
///   OUT/{train,val,test}.jsonl              {"text": ..., "image": "images/train/00012.png",
///                                            "label": "return_clothing"} per line
///   OUT/.complete                           the generation parameters, written last
/// Deterministic for a seed: only std::mt19937_64 (fully specified by the standard) is used,
/// with the distributions implemented here rather than the implementation-defined std ones.
///
/// Exit status: 0 on success (or when the data is already up to date), 1 with a one-line
/// reason on stderr on any failure (a bad command line included).

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "demo.h"

namespace mmintent::make_demo {
namespace {

/// Bump when the templates, fillers or sampling change: an old stamp then no longer matches.
constexpr const char* kGeneratorVersion = "mmintent_make_demo 1";
constexpr const char* kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";

/// A bad command line; main() prints it with a hint to --help and exits 1.
class UsageError : public std::runtime_error {
 public:
  explicit UsageError(const std::string& what) : std::runtime_error(what) {}
};

// ------------------------------------------------------------------------------------------
// Options and command line

struct Options {
  std::string fashion_mnist_dir = kDefaultFashionMnistDir;
  std::string out_dir = "data/demo";
  std::uint64_t seed = 42;
  std::uint64_t train_per_intent = 200;
  std::uint64_t val_per_intent = 50;
  std::uint64_t test_per_intent = 100;
  double mention_rate = 0.2;
  bool force = false;
};

const char* const kUsage =
    "usage: mmintent_make_demo [--fashion-mnist DIR] [--out DIR] [--seed N]\n"
    "                          [--train-per-intent N] [--val-per-intent N]\n"
    "                          [--test-per-intent N] [--mention-rate P] [--force]\n"
    "\n"
    "Builds the shop-assistant demo data set (customer message + product photo, 12 intents)\n"
    "from Debian's Fashion-MNIST (package dataset-fashion-mnist).\n"
    "\n"
    "  --fashion-mnist DIR     folder with the four *-ubyte.gz files\n"
    "                          (default /usr/share/datasets/fashion-mnist)\n"
    "  --out DIR               output folder (default data/demo)\n"
    "  --seed N                random seed, 0..2^64-1 (default 42)\n"
    "  --train-per-intent N    training samples per intent (default 200)\n"
    "  --val-per-intent N      validation samples per intent (default 50)\n"
    "  --test-per-intent N     test samples per intent (default 100)\n"
    "  --mention-rate P        share of messages that name the product group, 0..1 (default 0.2)\n"
    "  --force                 regenerate even when OUT/.complete matches the parameters\n"
    "  -h, --help              print this help\n";

std::uint64_t parse_unsigned(const std::string& flag, const std::string& text, std::uint64_t max) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos) {
    throw UsageError(flag + " expects a non-negative integer, found '" + text + "'");
  }
  errno = 0;
  char* end = nullptr;
  const unsigned long long value = std::strtoull(text.c_str(), &end, 10);
  if (errno == ERANGE || *end != '\0' || value > max) {
    throw UsageError(flag + " expects an integer in 0.." + std::to_string(max) + ", found '" +
                     text + "'");
  }
  return static_cast<std::uint64_t>(value);
}

double parse_probability(const std::string& flag, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || errno == ERANGE || *end != '\0' || !std::isfinite(value) || value < 0.0 ||
      value > 1.0) {
    throw UsageError(flag + " expects a number in [0, 1], found '" + text + "'");
  }
  return value;
}

/// Returns false when --help was given (usage already printed).
bool parse_command_line(int argc, char** argv, Options& options) {
  constexpr std::uint64_t kMaxPerIntent = 1000000;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_inline_value = false;
    if (arg.rfind("--", 0) == 0) {
      const auto eq = arg.find('=');
      if (eq != std::string::npos) {
        value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
        has_inline_value = true;
      }
    }
    auto next_value = [&]() -> std::string {
      if (has_inline_value) return value;
      if (i + 1 >= argc) throw UsageError(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      return false;
    } else if (arg == "--force") {
      if (has_inline_value) throw UsageError("--force takes no value");
      options.force = true;
    } else if (arg == "--fashion-mnist") {
      options.fashion_mnist_dir = next_value();
      if (options.fashion_mnist_dir.empty()) throw UsageError("--fashion-mnist needs a folder");
    } else if (arg == "--out") {
      options.out_dir = next_value();
      if (options.out_dir.empty()) throw UsageError("--out needs a folder");
    } else if (arg == "--seed") {
      options.seed = parse_unsigned(arg, next_value(), UINT64_MAX);
    } else if (arg == "--train-per-intent") {
      options.train_per_intent = parse_unsigned(arg, next_value(), kMaxPerIntent);
    } else if (arg == "--val-per-intent") {
      options.val_per_intent = parse_unsigned(arg, next_value(), kMaxPerIntent);
    } else if (arg == "--test-per-intent") {
      options.test_per_intent = parse_unsigned(arg, next_value(), kMaxPerIntent);
    } else if (arg == "--mention-rate") {
      options.mention_rate = parse_probability(arg, next_value());
    } else {
      throw UsageError("unknown argument '" + std::string(argv[i]) + "'");
    }
  }
  if (options.train_per_intent == 0) throw UsageError("--train-per-intent must be at least 1");
  return true;
}

/// The shortest decimal that reads back as `value` (so the stamp shows 0.2, not 0.2000000001).
std::string format_double(double value) {
  for (int precision = 1; precision <= 17; ++precision) {
    std::ostringstream out;
    out << std::setprecision(precision) << value;
    if (std::strtod(out.str().c_str(), nullptr) == value) return out.str();
  }
  std::ostringstream out;
  out << std::setprecision(17) << value;
  return out.str();
}

std::string stamp_text(const Options& options) {
  std::error_code ec;
  fs::path dataset = fs::absolute(options.fashion_mnist_dir, ec).lexically_normal();
  if (ec) dataset = options.fashion_mnist_dir;
  std::ostringstream out;
  out << "generator=" << kGeneratorVersion << "\n"
      << "fashion_mnist=" << dataset.string() << "\n"
      << "seed=" << options.seed << "\n"
      << "train_per_intent=" << options.train_per_intent << "\n"
      << "val_per_intent=" << options.val_per_intent << "\n"
      << "test_per_intent=" << options.test_per_intent << "\n"
      << "mention_rate=" << format_double(options.mention_rate) << "\n";
  return out.str();
}

bool up_to_date(const fs::path& out_dir, const std::string& stamp) {
  std::ifstream in(out_dir / ".complete", std::ios::binary);
  if (!in) return false;
  std::ostringstream content;
  content << in.rdbuf();
  if (content.str() != stamp) return false;
  std::error_code ec;
  for (const char* split : {"train", "val", "test"}) {
    if (!fs::is_regular_file(out_dir / (std::string(split) + ".jsonl"), ec)) return false;
  }
  return true;
}

int run(const Options& options) {
  const auto start = std::chrono::steady_clock::now();
  const fs::path out_dir = options.out_dir;
  const std::string stamp = stamp_text(options);
  if (!options.force && up_to_date(out_dir, stamp)) {
    std::cout << "demo data up to date in " << out_dir.string() << "\n";
    return 0;
  }
  check_templates();

  const fs::path fm = options.fashion_mnist_dir;
  std::error_code ec;
  if (!fs::is_directory(fm, ec)) {
    throw ToolError("Fashion-MNIST not found: " + fm.string() +
                    " is not a folder (install the Debian package " + kDatasetPackage +
                    ", or pass --fashion-mnist DIR)");
  }
  const Images train_set = read_fashion_mnist(fm / "train-images-idx3-ubyte.gz",
                                              fm / "train-labels-idx1-ubyte.gz");
  const Images test_set = read_fashion_mnist(fm / "t10k-images-idx3-ubyte.gz",
                                             fm / "t10k-labels-idx1-ubyte.gz");

  Rng pool_rng(options.seed, 1);
  const auto train_pools = group_pools(train_set, pool_rng);
  const auto test_pools = group_pools(test_set, pool_rng);

  // Each group is drawn for 3 intents (one per action); images are never reused.
  for (int g = 0; g < kNumGroups; ++g) {
    const std::uint64_t trainval = kNumActions * (options.train_per_intent + options.val_per_intent);
    if (trainval > train_pools[g].size()) {
      throw ToolError("--train-per-intent + --val-per-intent too large: group " +
                      std::string(kGroupNames[g]) + " needs " + std::to_string(trainval) +
                      " distinct images but the Fashion-MNIST training set has " +
                      std::to_string(train_pools[g].size()));
    }
    const std::uint64_t test = kNumActions * options.test_per_intent;
    if (test > test_pools[g].size()) {
      throw ToolError("--test-per-intent too large: group " + std::string(kGroupNames[g]) +
                      " needs " + std::to_string(test) +
                      " distinct images but the Fashion-MNIST test set has " +
                      std::to_string(test_pools[g].size()));
    }
  }

  std::array<std::size_t, kNumGroups> train_offsets{};  // train then val, disjoint
  std::array<std::size_t, kNumGroups> test_offsets{};
  const SplitSpec train_spec{"train", options.train_per_intent, 2};
  const SplitSpec val_spec{"val", options.val_per_intent, 3};
  const SplitSpec test_spec{"test", options.test_per_intent, 4};
  const auto train = make_split(train_spec, options.mention_rate, train_set, train_pools,
                                train_offsets, options.seed);
  const auto val = make_split(val_spec, options.mention_rate, train_set, train_pools,
                              train_offsets, options.seed);
  const auto test = make_split(test_spec, options.mention_rate, test_set, test_pools,
                               test_offsets, options.seed);

  fs::create_directories(out_dir, ec);
  if (ec) throw ToolError(out_dir.string() + ": cannot create: " + ec.message());
  fs::remove(out_dir / ".complete", ec);  // an interrupted run must not look complete
  if (ec) throw ToolError((out_dir / ".complete").string() + ": cannot remove: " + ec.message());
  write_split(out_dir, "train", train, train_set);
  write_split(out_dir, "val", val, train_set);
  write_split(out_dir, "test", test, test_set);
  write_text_file_atomically(out_dir / ".complete", stamp);

  // Summary.
  auto mentioned = [](const std::vector<Sample>& s) {
    return std::count_if(s.begin(), s.end(), [](const Sample& x) { return x.mentioned; });
  };
  std::cout << "wrote demo data to " << out_dir.string() << " (seed " << options.seed
            << ", mention rate " << format_double(options.mention_rate) << ", " << kNumIntents
            << " intents)\n";
  const std::array<std::pair<const char*, const std::vector<Sample>*>, 3> splits = {
      {{"train", &train}, {"val", &val}, {"test", &test}}};
  for (const auto& [name, samples] : splits) {
    const std::uint64_t per = samples->size() / kNumIntents;
    std::cout << "  " << std::left << std::setw(6) << name << std::right << std::setw(6)
              << samples->size() << " samples (" << per << " per intent), " << mentioned(*samples)
              << " name the product, images from Fashion-MNIST "
              << (samples == &test ? "t10k" : "train") << "\n";
  }
  const double m = test.empty() ? options.mention_rate
                                : static_cast<double>(mentioned(test)) / static_cast<double>(test.size());
  const double text_ceiling = m + (1.0 - m) / kNumGroups;
  std::cout << std::fixed << std::setprecision(3);
  std::cout << "accuracy ceilings (balanced intents; share of test messages naming the product m = "
            << m << "):\n"
            << "  text only  <= m + (1-m)/4 = " << text_ceiling
            << "  (the text gives the action, the group only when named)\n"
            << "  image only <= 1/3 = " << 1.0 / 3.0
            << "  (the photo gives the group, never the action)\n"
            << "  text+image ~  1      (limited by Fashion-MNIST confusions between groups)\n";
  if (!test.empty()) {
    const double se = std::sqrt(text_ceiling * (1.0 - text_ceiling) / static_cast<double>(test.size()));
    std::cout << "  standard error of a test accuracy near " << text_ceiling << ": " << se << "\n";
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << std::setprecision(1) << "done in " << seconds << " s\n";
  return 0;
}

}  // namespace
}  // namespace mmintent::make_demo

int main(int argc, char** argv) {
  using namespace mmintent::make_demo;
  Options options;
  try {
    if (!parse_command_line(argc, argv, options)) return 0;
  } catch (const UsageError& e) {
    std::cerr << "mmintent_make_demo: error: " << e.what() << " (see --help)\n";
    return 1;
  }
  try {
    return run(options);
  } catch (const std::exception& e) {
    std::cerr << "mmintent_make_demo: error: " << e.what() << "\n";
    return 1;
  }
}


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

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "data/idx.h"
#include "mmintent/core/seed.h"

namespace fs = std::filesystem;

namespace {

/// Bump when the templates, fillers or sampling change: an old stamp then no longer matches.
constexpr const char* kGeneratorVersion = "mmintent_make_demo 1";
constexpr const char* kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";
constexpr const char* kDatasetPackage = "dataset-fashion-mnist";
constexpr int kImageSide = mmintent::detail::kIdxImageSide;
constexpr int kNumClasses = mmintent::detail::kIdxNumClasses;

/// A failure reported to the user as one line; main() turns it into exit status 1.
class ToolError : public std::runtime_error {
 public:
  explicit ToolError(const std::string& what) : std::runtime_error(what) {}
};

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

// ------------------------------------------------------------------------------------------
// Deterministic randomness

using mmintent::splitmix64;

/// mt19937_64 plus hand-written distributions, so a seed gives the same data on every
/// standard library (std::uniform_int_distribution and friends are implementation-defined).
class Rng {
 public:
  /// One independent stream per (seed, stream id): changing one split's size leaves the
  /// other streams, and so the other splits, unchanged.
  Rng(std::uint64_t seed, std::uint64_t stream) : engine_(splitmix64(seed ^ splitmix64(stream))) {}

  /// Uniform integer in [0, n), n >= 1, unbiased: draws below 2^64 mod n are rejected.
  std::uint64_t below(std::uint64_t n) {
    const std::uint64_t threshold = (0 - n) % n;
    for (;;) {
      const std::uint64_t r = engine_();
      if (r >= threshold) return r % n;
    }
  }
  /// Uniform double in [0, 1) from the top 53 bits.
  double unit() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
  bool chance(double p) { return unit() < p; }

  template <typename T>
  const T& pick(const std::vector<T>& items) {
    return items[static_cast<std::size_t>(below(items.size()))];
  }
  /// Fisher-Yates.
  template <typename T>
  void shuffle(std::vector<T>& items) {
    for (std::size_t i = items.size(); i > 1; --i) {
      std::swap(items[i - 1], items[static_cast<std::size_t>(below(i))]);
    }
  }

 private:
  std::mt19937_64 engine_;
};

// ------------------------------------------------------------------------------------------
// Fashion-MNIST (gzip-compressed IDX files)

using Images = mmintent::detail::IdxImages;

/// Reads an images file and its labels file with the shared IDX reader; a missing file gets
/// the hint where Fashion-MNIST comes from, any other problem the reader's IdxError ("FILE:
/// what is wrong", which main() prints).
Images read_fashion_mnist(const fs::path& images_path, const fs::path& labels_path) {
  for (const fs::path& path : {images_path, labels_path}) {
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      throw ToolError("Fashion-MNIST not found: " + path.string() +
                      " does not exist (install the Debian package " + kDatasetPackage +
                      ", or pass --fashion-mnist DIR)");
    }
  }
  return mmintent::detail::read_idx_images(images_path.string(), labels_path.string());
}

// ------------------------------------------------------------------------------------------
// Intents: action x product group

enum Action { kReturn = 0, kAvailability = 1, kCare = 2 };
constexpr int kNumActions = 3;
constexpr int kNumGroups = 4;
constexpr int kNumIntents = kNumActions * kNumGroups;
const std::array<const char*, kNumActions> kActionNames = {"return", "availability", "care"};
const std::array<const char*, kNumGroups> kGroupNames = {"clothing", "trousers", "footwear",
                                                         "bags"};

/// Fashion-MNIST class -> product group: 0 T-shirt/top, 2 Pullover, 3 Dress, 4 Coat, 6 Shirt
/// are clothing; 1 Trouser; 5 Sandal, 7 Sneaker, 9 Ankle boot are footwear; 8 Bag.
const std::array<int, kNumClasses> kClassGroup = {0, 1, 0, 0, 0, 2, 0, 2, 3, 2};

int action_of(int intent) { return intent / kNumGroups; }
int group_of(int intent) { return intent % kNumGroups; }
std::string intent_name(int intent) {
  return std::string(kActionNames[action_of(intent)]) + "_" + kGroupNames[group_of(intent)];
}

// ------------------------------------------------------------------------------------------
// Message templates
//
// Slots: {obj} the product ("this", "the item in the photo", or, when the group is mentioned,
// "these jeans"); {it} object pronoun (it/them); {they} subject pronoun (it/they); {its}
// (it's/they're); {is} (is/are); {does} (does/do); {doesnt} (doesn't/don't); {reason} a return
// reason; {order} an order reference; {order_opt} " from order #123" or nothing; {when} a
// time phrase; {size}; {colour}. A capitalised slot ({Obj}, {Is}, ...) capitalises its first
// letter. Agreement follows the product phrase. Every template holds {obj} exactly once and
// states its action unambiguously; none depends on the product group.

const std::vector<std::string> kReturnTemplates = {
    "I'd like to return {obj}{order_opt}. {Reason}.",
    "How do I return {obj}?",
    "Can I get a refund for {obj}? {Reason}.",
    "I want to send {obj} back because {reason}.",
    "Please tell me how to send {obj} back{order_opt}.",
    "I bought {obj} {when} and would like a refund.",
    "{Obj} {doesnt} fit, so I'd like to return {it}.",
    "Is it possible to return {obj}? I've barely used {it}.",
    "I need to return {obj} from {order}.",
    "What's your return policy? I'd like to send back {obj}.",
    "{Obj} arrived {when} but {reason}. Can I return {it} for a refund?",
    "refund please for {obj}, {reason}",
    "Could you arrange a return for {obj}{order_opt}?",
    "I'm not happy with {obj} and would like my money back.",
    "Where do I send {obj} back to?",
    "Can you email me a return label for {obj}?",
    "I received {obj} {when} and want to return {it}.",
    "How long do I have to return {obj}? I bought {it} {when}.",
    "Please process a refund for {obj}{order_opt}. {Reason}.",
    "I'd like to send {obj} back and get a refund to my card.",
    "{Reason}, so I'm returning {obj}. How do I get my refund?",
};

const std::vector<std::string> kAvailabilityTemplates = {
    "Do you have {obj} in {size}?",
    "{Is} {obj} available in {colour}?",
    "Will {obj} be back in stock soon?",
    "When will you restock {obj}?",
    "{Does} {obj} come in other colours?",
    "I love {obj}. Do you have {it} in {size}?",
    "{Is} {obj} still in stock in {size}?",
    "{Obj} {is} sold out in {size}. Will you get more?",
    "Which sizes do you have {obj} in?",
    "Any chance {obj} will be restocked in {colour}?",
    "Do you have {obj} in stock? The website says sold out.",
    "I'm looking for {obj} in {size}, do you have any left?",
    "What colours do you have {obj} in?",
    "Can I still order {obj} in {colour}, or is that colour out of stock?",
    "Is there any way to get {obj} in {size}? {Its} showing as unavailable.",
    "Please let me know when {obj} {is} back in stock.",
    "Do you still sell {obj} in {colour}?",
    "Will you get {obj} in more sizes?",
    "Are you restocking {obj} in {colour} any time soon?",
    "{Obj} sold out before I could order. Will there be a restock?",
    "Could you check if {obj} {is} available in {size} or in {colour}?",
};

const std::vector<std::string> kCareTemplates = {
    "How should I wash {obj}?",
    "Can {obj} go in the washing machine?",
    "What's the best way to clean {obj}?",
    "How do I look after {obj} properly?",
    "{Is} {obj} machine washable?",
    "I got a stain on {obj} {when}. How can I clean {it}?",
    "What temperature should I wash {obj} at?",
    "Can I put {obj} in the dryer?",
    "Any care tips for {obj}?",
    "Do I need to dry clean {obj}?",
    "How do I get a stain out of {obj}?",
    "Can I hand wash {obj}, or {does} {they} need special cleaning?",
    "Is there a care guide for {obj}? I don't want to ruin {it}.",
    "What should I use to clean {obj}?",
    "How do I keep {obj} looking new?",
    "{Obj} got dirty {when}. What's the safest way to wash {it}?",
    "Can {obj} be washed at 40 degrees?",
    "How should I clean {obj}? There are no care instructions on the label.",
    "Will {obj} shrink if I wash {it}?",
    "Can I use normal detergent on {obj}?",
    "What's the right way to dry {obj} after washing?",
};

const std::vector<std::string>& templates_for(int action) {
  switch (action) {
    case kReturn: return kReturnTemplates;
    case kAvailability: return kAvailabilityTemplates;
    default: return kCareTemplates;
  }
}

/// Product-agnostic phrases (all singular, so grammar never hints at the group). Availability
/// questions are about an item not bought yet, so they get their own list.
const std::vector<std::string> kOwnedAgnostic = {
    "this", "it", "this item", "the item in the photo", "the one in the picture",
    "what I bought", "my purchase", "the item I ordered", "this product", "this one",
};
const std::vector<std::string> kShopAgnostic = {
    "this", "it", "this item", "the item in the photo", "the one in the picture",
    "this product", "this one", "the item in this photo",
};
/// Determiners for a named product: "@" stands for this/these.
const std::vector<std::string> kOwnedDeterminers = {
    "@ {n}", "the {n} in the photo", "my {n}", "my new {n}", "the {n} I ordered", "the {n} I bought",
};
const std::vector<std::string> kShopDeterminers = {
    "@ {n}", "the {n} in the photo", "the {n} in the picture", "the {n} shown here",
};

struct Noun {
  std::string word;
  bool plural;
};

/// Product nouns per Fashion-MNIST class (so a named product matches its photo).
const std::vector<Noun>& nouns_for_class(int cls) {
  static const std::array<std::vector<Noun>, kNumClasses> kNouns = {{
      {{"t-shirt", false}, {"top", false}, {"tee", false}},                       // 0 T-shirt/top
      {{"trousers", true}, {"jeans", true}, {"pants", true}, {"chinos", true},
       {"pair of trousers", false}, {"pair of jeans", false}},                    // 1 Trouser
      {{"pullover", false}, {"jumper", false}, {"sweater", false}},               // 2 Pullover
      {{"dress", false}, {"summer dress", false}},                                // 3 Dress
      {{"coat", false}, {"jacket", false}},                                       // 4 Coat
      {{"sandals", true}, {"shoes", true}, {"pair of sandals", false}},           // 5 Sandal
      {{"shirt", false}, {"blouse", false}},                                      // 6 Shirt
      {{"sneakers", true}, {"trainers", true}, {"running shoes", true}, {"shoes", true},
       {"pair of sneakers", false}},                                              // 7 Sneaker
      {{"bag", false}, {"handbag", false}, {"backpack", false}, {"tote bag", false},
       {"purse", false}},                                                         // 8 Bag
      {{"boots", true}, {"ankle boots", true}, {"shoes", true}, {"pair of boots", false}},  // 9
  }};
  return kNouns[static_cast<std::size_t>(cls)];
}

const std::vector<std::string> kReasons = {
    "{its} too small", "{its} too big", "{they} {doesnt} fit", "{its} not what I expected",
    "{they} arrived damaged", "the colour looks different from the photos online",
    "{its} the wrong size", "I changed my mind", "the quality is poor",
    "{they} {doesnt} look like the picture",
};
const std::vector<std::string> kWhen = {
    "yesterday", "last week", "a few days ago", "on Monday", "last weekend", "two weeks ago",
    "earlier this month", "on Saturday",
};
const std::vector<std::string> kSizes = {
    "a smaller size", "a larger size", "a bigger size", "the next size up", "the next size down",
    "a different size", "other sizes", "my size",
};
const std::vector<std::string> kColours = {
    "black", "white", "navy", "grey", "red", "beige", "brown", "dark green", "blue",
    "another colour", "a different colour",
};
/// Greetings ending in ", " make the message continue in lower case (except "I").
const std::vector<std::string> kGreetings = {
    "Hi, ", "Hello, ", "Hi there, ", "Hey, ", "Good morning, ", "Good afternoon. ",
    "Dear customer service, ", "Hello team, ", "Hi! ", "Hello. ",
};
const std::vector<std::string> kClosings = {
    " Thanks!", " Thank you.", " Thanks in advance.", " Many thanks.", " Kind regards, {name}",
    " Best, {name}", " Cheers", " Thanks a lot!", " Please help.", " Thank you, {name}",
};
const std::vector<std::string> kNames = {
    "Anna", "Tom", "Maria", "James", "Li", "Sofia", "Omar", "Kate", "Lukas", "Priya",
};

struct ProductPhrase {
  std::string text;
  bool plural = false;
};

std::string order_reference(Rng& rng) {
  const std::string number = std::to_string(100000 + rng.below(900000));
  switch (rng.below(4)) {
    case 0: return "order #" + number;
    case 1: return "order " + number;
    case 2: return "order no. " + number;
    default: return "my order " + number;
  }
}

std::string capitalise(std::string text) {
  if (!text.empty() && text[0] >= 'a' && text[0] <= 'z') text[0] = static_cast<char>(text[0] - 32);
  return text;
}

/// Expands the slots of `pattern`; `product` fixes {obj} and the agreement slots.
std::string expand(const std::string& pattern, const ProductPhrase& product, Rng& rng) {
  std::string out;
  std::size_t pos = 0;
  while (pos < pattern.size()) {
    const auto open = pattern.find('{', pos);
    if (open == std::string::npos) {
      out += pattern.substr(pos);
      break;
    }
    const auto close = pattern.find('}', open);
    if (close == std::string::npos) throw std::logic_error("unclosed slot in: " + pattern);
    out += pattern.substr(pos, open - pos);
    std::string key = pattern.substr(open + 1, close - open - 1);
    const bool capital = !key.empty() && key[0] >= 'A' && key[0] <= 'Z';
    if (capital) key[0] = static_cast<char>(key[0] + 32);
    const bool pl = product.plural;
    std::string value;
    if (key == "obj") value = product.text;
    else if (key == "it") value = pl ? "them" : "it";
    else if (key == "they") value = pl ? "they" : "it";
    else if (key == "its") value = pl ? "they're" : "it's";
    else if (key == "is") value = pl ? "are" : "is";
    else if (key == "does") value = pl ? "do" : "does";
    else if (key == "doesnt") value = pl ? "don't" : "doesn't";
    else if (key == "reason") value = expand(rng.pick(kReasons), product, rng);
    else if (key == "order") value = order_reference(rng);
    else if (key == "order_opt") {
      if (rng.chance(0.3)) {
        value = rng.chance(0.5) ? " from " + order_reference(rng) : " (" + order_reference(rng) + ")";
      }
    } else if (key == "when") value = rng.pick(kWhen);
    else if (key == "size") value = rng.pick(kSizes);
    else if (key == "colour") value = rng.pick(kColours);
    else if (key == "name") value = rng.pick(kNames);
    else throw std::logic_error("unknown slot {" + key + "} in: " + pattern);
    out += capital ? capitalise(value) : value;
    pos = close + 1;
  }
  return out;
}

/// The product phrase for one sample: agnostic unless `mentioned`, then a noun for `cls`.
ProductPhrase product_phrase(int action, bool mentioned, int cls, Rng& rng) {
  const bool shop = action == kAvailability;
  if (!mentioned) return {rng.pick(shop ? kShopAgnostic : kOwnedAgnostic), false};
  const Noun& noun = rng.pick(nouns_for_class(cls));
  std::string text = rng.pick(shop ? kShopDeterminers : kOwnedDeterminers);
  const auto at = text.find('@');
  if (at != std::string::npos) text.replace(at, 1, noun.plural ? "these" : "this");
  const auto n = text.find("{n}");
  text.replace(n, 3, noun.word);
  return {text, noun.plural};
}

/// One customer message for `action`; names the product (class `cls`) iff `mentioned`.
std::string make_message(int action, bool mentioned, int cls, Rng& rng) {
  const ProductPhrase product = product_phrase(action, mentioned, cls, rng);
  std::string body = expand(rng.pick(templates_for(action)), product, rng);
  if (rng.chance(0.12)) body += " My order number is " + std::to_string(100000 + rng.below(900000)) + ".";

  std::string text;
  if (rng.chance(0.45)) {
    const std::string& greeting = rng.pick(kGreetings);
    text = greeting;
    const bool continues = greeting.size() >= 2 && greeting.compare(greeting.size() - 2, 2, ", ") == 0;
    const bool starts_with_i = body.size() >= 2 && body[0] == 'I' && (body[1] == ' ' || body[1] == '\'');
    if (continues && !starts_with_i && body[0] >= 'A' && body[0] <= 'Z') {
      body[0] = static_cast<char>(body[0] + 32);
    }
  }
  text += body;
  if (rng.chance(0.4)) text += expand(rng.pick(kClosings), product, rng);

  // Informal writing: no final punctuation, no apostrophes, all lower case.
  if (rng.chance(0.15)) {
    while (!text.empty() && (text.back() == '.' || text.back() == '!' || text.back() == '?')) {
      text.pop_back();
    }
  }
  if (rng.chance(0.06)) text.erase(std::remove(text.begin(), text.end(), '\''), text.end());
  if (rng.chance(0.12)) {
    for (char& c : text) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    }
  }
  return text;
}

/// Guards the template invariants the ceilings rely on (a programming error if broken).
void check_templates() {
  for (int action = 0; action < kNumActions; ++action) {
    for (const std::string& t : templates_for(action)) {
      std::size_t count = 0;
      for (auto p = t.find("bj}"); p != std::string::npos; p = t.find("bj}", p + 1)) ++count;
      if (count != 1) throw std::logic_error("template needs exactly one {obj}: " + t);
    }
  }
}

// ------------------------------------------------------------------------------------------
// Splits

struct Sample {
  int intent = 0;
  bool mentioned = false;
  std::size_t image = 0;  ///< index into the split's Fashion-MNIST set
  int cls = 0;
  std::string text;
};

struct SplitSpec {
  const char* name;
  std::uint64_t per_intent;
  std::uint64_t stream;  ///< Rng stream for texts, mentions and order
};

/// Indices of each group's images in `set`, shuffled.
std::array<std::vector<std::size_t>, kNumGroups> group_pools(const Images& set, Rng& rng) {
  std::array<std::vector<std::size_t>, kNumGroups> pools;
  for (std::size_t i = 0; i < set.count; ++i) pools[kClassGroup[set.labels[i]]].push_back(i);
  for (auto& pool : pools) rng.shuffle(pool);
  return pools;
}

/// Builds one split: `per_intent` samples per intent, exactly round(rate * per_intent) of each
/// intent naming the product, images taken from `pools` starting at `offsets` (advanced).
std::vector<Sample> make_split(const SplitSpec& spec, double mention_rate, const Images& set,
                               const std::array<std::vector<std::size_t>, kNumGroups>& pools,
                               std::array<std::size_t, kNumGroups>& offsets, std::uint64_t seed) {
  Rng rng(seed, spec.stream);
  const auto n = static_cast<std::size_t>(spec.per_intent);
  const auto mentions = static_cast<std::size_t>(std::llround(mention_rate * static_cast<double>(n)));
  std::vector<Sample> samples;
  samples.reserve(n * kNumIntents);
  for (int intent = 0; intent < kNumIntents; ++intent) {
    std::vector<char> mentioned(n, 0);
    std::fill(mentioned.begin(), mentioned.begin() + static_cast<std::ptrdiff_t>(mentions), 1);
    rng.shuffle(mentioned);
    const int group = group_of(intent);
    for (std::size_t k = 0; k < n; ++k) {
      Sample s;
      s.intent = intent;
      s.mentioned = mentioned[k] != 0;
      s.image = pools[group][offsets[group]++];
      s.cls = set.labels[s.image];
      s.text = make_message(action_of(intent), s.mentioned, s.cls, rng);
      samples.push_back(std::move(s));
    }
  }
  rng.shuffle(samples);
  return samples;
}

// ------------------------------------------------------------------------------------------
// Output

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buffer[8];
          std::snprintf(buffer, sizeof buffer, "\\u%04x", c);
          out += buffer;
        } else {
          out += ch;  // UTF-8 passes through unchanged
        }
    }
  }
  return out + "\"";
}

void write_text_file_atomically(const fs::path& path, const std::string& content) {
  fs::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw ToolError(tmp.string() + ": cannot create: " + std::strerror(errno));
    out << content;
    out.flush();
    if (!out) throw ToolError(tmp.string() + ": write failed: " + std::strerror(errno));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw ToolError("cannot rename " + tmp.string() + " to " + path.string() + ": " + ec.message());
}

bool is_generated_png_name(const std::string& name) {
  if (name.size() <= 4 || name.compare(name.size() - 4, 4, ".png") != 0) return false;
  return std::all_of(name.begin(), name.end() - 4, [](char c) { return c >= '0' && c <= '9'; });
}

/// Removes PNGs an earlier run left in `dir` (only names made of digits + ".png").
void remove_old_images(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_regular_file(ec) && is_generated_png_name(entry.path().filename().string())) {
      fs::remove(entry.path(), ec);
      if (ec) throw ToolError(entry.path().string() + ": cannot remove: " + ec.message());
    }
  }
  if (ec) throw ToolError(dir.string() + ": cannot list: " + ec.message());
}

void write_split(const fs::path& out_dir, const char* name, const std::vector<Sample>& samples,
                 const Images& set) {
  const fs::path image_dir = out_dir / "images" / name;
  std::error_code ec;
  fs::create_directories(image_dir, ec);
  if (ec) throw ToolError(image_dir.string() + ": cannot create: " + ec.message());
  remove_old_images(image_dir);

  std::size_t width = 5;
  while (samples.size() > 1 && std::to_string(samples.size() - 1).size() > width) ++width;
  std::string manifest;
  for (std::size_t i = 0; i < samples.size(); ++i) {
    std::ostringstream file_name;
    file_name << std::setw(static_cast<int>(width)) << std::setfill('0') << i << ".png";
    const fs::path png = image_dir / file_name.str();
    const cv::Mat image(kImageSide, kImageSide, CV_8UC1,
                        const_cast<std::uint8_t*>(set.pixels.data() +
                                                  samples[i].image * kImageSide * kImageSide));
    bool ok = false;
    try {
      ok = cv::imwrite(png.string(), image);
    } catch (const cv::Exception& e) {
      throw ToolError(png.string() + ": cannot write PNG: " + e.what());
    }
    if (!ok) throw ToolError(png.string() + ": cannot write PNG");
    manifest += "{\"text\": " + json_string(samples[i].text) + ", \"image\": " +
                json_string(std::string("images/") + name + "/" + file_name.str()) +
                ", \"label\": " + json_string(intent_name(samples[i].intent)) + "}\n";
  }
  write_text_file_atomically(out_dir / (std::string(name) + ".jsonl"), manifest);
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

int main(int argc, char** argv) {
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

// The customer messages: templates, fillers and product nouns, and how one message is drawn.

#include <algorithm>
#include <array>
#include <stdexcept>
#include <string>
#include <vector>

#include "demo.h"

namespace mmintent::make_demo {
namespace {

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

}  // namespace

std::string intent_name(int intent) {
  return std::string(kActionNames[action_of(intent)]) + "_" + kGroupNames[group_of(intent)];
}

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

void check_templates() {
  for (int action = 0; action < kNumActions; ++action) {
    for (const std::string& t : templates_for(action)) {
      std::size_t count = 0;
      for (auto p = t.find("bj}"); p != std::string::npos; p = t.find("bj}", p + 1)) ++count;
      if (count != 1) throw std::logic_error("template needs exactly one {obj}: " + t);
    }
  }
}

}  // namespace mmintent::make_demo

#include "mmintent/policy/rewrite.h"

#include "mmintent/data/manifest.h"
#include "mmintent/error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <set>

namespace mmintent {
namespace {

/// The code point of the valid UTF-8 sequence of `len` bytes at s[i].
char32_t decode(const std::string& s, size_t i, size_t len) {
  const auto b = [&](size_t k) {
    return static_cast<char32_t>(static_cast<unsigned char>(s[i + k]));
  };
  switch (len) {
    case 1: return b(0);
    case 2: return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    case 3: return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    default:
      return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
}

bool is_space(char32_t c) {
  return c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

bool is_control_or_format(char32_t c) {
  return c < 0x20 || (c >= 0x7F && c <= 0x9F) || c == 0xAD || (c >= 0x200B && c <= 0x200F) ||
         (c >= 0x202A && c <= 0x202E) || (c >= 0x2060 && c <= 0x2064) || c == 0xFEFF;
}

bool is_word_byte(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         c == '\'' || c == '-' || c >= 0x80;
}

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

/// Runs of spaces become one; leading and trailing spaces go.
std::string collapse_spaces(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == ' ' && (out.empty() || out.back() == ' ')) continue;
    out += c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

/// Step 1: controls, format characters and invalid bytes removed, whitespace to spaces.
std::string clean_characters(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t len = utf8_sequence_length(s, i);
    if (len == 0) {  // an invalid byte
      ++i;
      continue;
    }
    const char32_t c = decode(s, i, len);
    if (is_space(c)) {
      out += ' ';
    } else if (!is_control_or_format(c)) {
      out.append(s, i, len);
    }
    i += len;
  }
  return out;
}

bool is_punct_for_space(char c) {
  return c == ',' || c == '.' || c == ';' || c == ':' || c == '!' || c == '?';
}

/// Step 4: repeated punctuation reduced.
std::string reduce_punctuation(const std::string& s) {
  static const std::string kSingles = ".,;:-~*";
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const char c = s[i];
    if (c == '!' || c == '?') {
      size_t j = i;
      bool question = false;
      while (j < s.size() && (s[j] == '!' || s[j] == '?')) question |= s[j++] == '?';
      out += j - i == 1 ? c : (question ? '?' : '!');
      i = j;
    } else if (kSingles.find(c) != std::string::npos) {
      size_t j = i;
      while (j < s.size() && s[j] == c) ++j;
      out += c;
      i = j;
    } else {
      out += c;
      ++i;
    }
  }
  return out;
}

/// Step 5: spacing around punctuation and dangling commas.
std::string tidy(const std::string& collapsed) {
  std::string out;
  out.reserve(collapsed.size());
  for (char c : collapsed) {
    if (is_punct_for_space(c) && !out.empty() && out.back() == ' ') out.pop_back();
    if (is_punct_for_space(c) && c != ',' && !out.empty() && out.back() == ',') out.pop_back();
    out += c;
  }
  out = collapse_spaces(out);
  const auto strip = [](char c) { return c == ' ' || c == ',' || c == ';' || c == ':'; };
  size_t a = 0, b = out.size();
  while (a < b && strip(out[a])) ++a;
  while (b > a && strip(out[b - 1])) --b;
  return out.substr(a, b - a);
}

/// A template cut into literal text and placeholders.
struct Piece {
  bool placeholder = false;
  std::string text;
};

/// Parses `text`; returns false with `problem` set when it is not a valid template.
bool parse_template(const std::string& text, const std::set<std::string>& known,
                    std::vector<Piece>* pieces, std::string* problem) {
  std::string literal;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '{' && i + 1 < text.size() && text[i + 1] == '{') {
      literal += '{';
      ++i;
    } else if (c == '}' && i + 1 < text.size() && text[i + 1] == '}') {
      literal += '}';
      ++i;
    } else if (c == '}') {
      *problem =
          "unmatched '}' at character " + std::to_string(i + 1) + " (write '}}' for a brace)";
      return false;
    } else if (c == '{') {
      const size_t close = text.find('}', i + 1);
      if (close == std::string::npos) {
        *problem =
            "unmatched '{' at character " + std::to_string(i + 1) + " (write '{{' for a brace)";
        return false;
      }
      const std::string name = text.substr(i + 1, close - i - 1);
      if (!known.count(name)) {
        std::string list;
        for (const auto& k : known) list += (list.empty() ? "" : ", ") + ("{" + k + "}");
        *problem = "unknown placeholder '{" + name + "}'; known here: " + list;
        return false;
      }
      if (pieces) {
        if (!literal.empty()) pieces->push_back({false, literal});
        literal.clear();
        pieces->push_back({true, name});
      }
      i = close;
    } else {
      literal += c;
    }
  }
  if (pieces && !literal.empty()) pieces->push_back({false, literal});
  return true;
}

const std::set<std::string>& known_placeholders(TemplateKind kind) {
  static const std::set<std::string> accept{"text", "intent", "display_name", "confidence"};
  static const std::set<std::string> clarify{"text", "first", "second", "first_intent",
                                             "second_intent"};
  static const std::set<std::string> fallback{"text"};
  switch (kind) {
    case TemplateKind::accept: return accept;
    case TemplateKind::clarify: return clarify;
    case TemplateKind::fallback: return fallback;
  }
  return fallback;
}

std::string render(const std::string& text, TemplateKind kind,
                   const std::map<std::string, std::string>& values) {
  std::vector<Piece> pieces;
  std::string problem;
  if (!parse_template(text, known_placeholders(kind), &pieces, &problem)) throw Error(problem);
  std::string out;
  for (const auto& p : pieces) out += p.placeholder ? values.at(p.text) : p.text;
  return out;
}

}  // namespace

std::string template_problem(const std::string& text, TemplateKind kind) {
  std::string problem;
  parse_template(text, known_placeholders(kind), nullptr, &problem);
  return problem;
}

TextNormalizer::TextNormalizer(std::vector<std::string> fillers) {
  for (const auto& f : fillers) {
    std::string norm = collapse_spaces(clean_characters(f));
    for (char& c : norm) c = lower(c);
    if (norm.empty()) throw Error("rewrite.fillers: a filler is empty");
    fillers_.push_back(norm);
  }
  std::stable_sort(fillers_.begin(), fillers_.end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  fillers_.erase(std::unique(fillers_.begin(), fillers_.end()), fillers_.end());
}

std::string TextNormalizer::operator()(const std::string& text) const {
  std::string s = collapse_spaces(clean_characters(text));
  if (!fillers_.empty()) {
    std::string low = s;
    for (char& c : low) c = lower(c);
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
      const bool at_word_start = i == 0 || !is_word_byte(static_cast<unsigned char>(s[i - 1]));
      size_t matched = 0;
      if (at_word_start) {
        for (const auto& f : fillers_) {
          const size_t end = i + f.size();
          if (low.compare(i, f.size(), f) == 0 &&
              (end == s.size() || !is_word_byte(static_cast<unsigned char>(s[end])))) {
            matched = f.size();
            break;
          }
        }
      }
      if (matched == 0) {
        out += s[i++];
        continue;
      }
      i += matched;
      // A comma right after the filler goes with it ("um, ..." / "..., you know, ...").
      size_t j = i;
      while (j < s.size() && s[j] == ' ') ++j;
      if (j < s.size() && s[j] == ',') i = j + 1;
      out += ' ';
    }
    s = collapse_spaces(out);
  }
  return tidy(collapse_spaces(reduce_punctuation(s)));
}

Rewriter::Rewriter(RewriteOptions options, const std::vector<std::string>& intents,
                   const std::string& source)
    : options_(std::move(options)), normalizer_(options_.fillers) {
  const std::set<std::string> known(intents.begin(), intents.end());
  auto check = [&](const std::string& key, const std::string& text, TemplateKind kind) {
    const auto problem = template_problem(text, kind);
    if (!problem.empty()) throw ConfigError(source, key, 0, problem);
  };
  auto check_intent = [&](const std::string& key, const std::string& intent) {
    if (!known.count(intent)) {
      throw ConfigError(source, key, 0,
                        "'" + intent + "' is not an intent of this run (labels.json has " +
                            std::to_string(intents.size()) + " intents)");
    }
  };
  check("rewrite.default_template", options_.default_template, TemplateKind::accept);
  check("rewrite.clarify_template", options_.clarify_template, TemplateKind::clarify);
  check("rewrite.fallback_text", options_.fallback_text, TemplateKind::fallback);
  for (const auto& [intent, text] : options_.templates) {
    check_intent("rewrite.templates." + intent, intent);
    check("rewrite.templates." + intent, text, TemplateKind::accept);
  }
  for (const auto& [intent, name] : options_.display_names) {
    check_intent("rewrite.display_names." + intent, intent);
  }
}

std::string Rewriter::display_name(const std::string& intent) const {
  const auto it = options_.display_names.find(intent);
  return it == options_.display_names.end() ? intent : it->second;
}

RewrittenRequest Rewriter::rewrite(
    const std::string& user_text, Decision decision, const std::string& intent, double confidence,
    const std::vector<std::pair<std::string, double>>& candidates) const {
  RewrittenRequest r;
  r.decision = decision;
  r.text = normalizer_(user_text);
  r.confidence = confidence;
  switch (decision) {
    case Decision::accept: {
      r.intent = intent;
      const auto it = options_.templates.find(intent);
      const std::string& tpl =
          it == options_.templates.end() ? options_.default_template : it->second;
      char conf[32];
      std::snprintf(conf, sizeof conf, "%.2f", confidence);
      r.request = render(tpl, TemplateKind::accept,
                         {{"text", r.text},
                          {"intent", intent},
                          {"display_name", display_name(intent)},
                          {"confidence", conf}});
      break;
    }
    case Decision::clarify: {
      if (candidates.size() < 2) {
        throw Error("rewrite: a clarify decision needs two candidate intents, found " +
                    std::to_string(candidates.size()));
      }
      r.candidates.assign(candidates.begin(), candidates.begin() + 2);
      r.request = render(options_.clarify_template, TemplateKind::clarify,
                         {{"text", r.text},
                          {"first", display_name(candidates[0].first)},
                          {"second", display_name(candidates[1].first)},
                          {"first_intent", candidates[0].first},
                          {"second_intent", candidates[1].first}});
      break;
    }
    case Decision::fallback:
      r.request = render(options_.fallback_text, TemplateKind::fallback, {{"text", r.text}});
      break;
  }
  return r;
}

std::string to_json_line(const RewrittenRequest& r, const Rewriter& rewriter) {
  nlohmann::ordered_json j;
  j["decision"] = to_string(r.decision);
  j["text"] = r.text;
  j["intent"] =
      r.intent.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(r.intent);
  j["confidence"] = r.confidence;
  if (r.decision == Decision::clarify) {
    j["candidates"] = nlohmann::ordered_json::array();
    for (const auto& [intent, p] : r.candidates) {
      j["candidates"].push_back({{"intent", intent},
                                 {"display_name", rewriter.display_name(intent)},
                                 {"probability", p}});
    }
  }
  j["request"] = r.request;
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace mmintent

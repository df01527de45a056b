#pragma once
/// Rewriting a prediction into the request the assistant behind mmintent receives (an LLM or a
/// service): the user's text normalised, and per decision a per-intent template (accept), a
/// question naming the two candidate intents (clarify) or a fallback text. No LibTorch types.

#include "mmintent/policy/decision.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace mmintent {

/// The `rewrite:` config section. Templates are text with placeholders in braces ("{{" and
/// "}}" write literal braces):
/// - `templates` (per intent) and `default_template` (intents without one), for accept:
///   {text} normalised text, {intent} intent name, {display_name}, {confidence} (top
///   probability, two decimals);
/// - `clarify_template`: {text}, {first} and {second} (display names of the two candidates,
///   most probable first), {first_intent}, {second_intent};
/// - `fallback_text`: {text}.
/// Usage: `rewrite: {fillers: [um, "you know"], templates: {balance: "Balance: {text}"}}`.
struct RewriteOptions {
  /// Phrases removed from the text: case-insensitive (ASCII letters), whole words or phrases.
  std::vector<std::string> fillers;
  std::map<std::string, std::string> templates;  ///< intent -> template
  std::string default_template = "{text}";
  std::map<std::string, std::string> display_names;  ///< intent -> name (default: the intent)
  std::string clarify_template = "Did you mean {first} or {second}?";
  std::string fallback_text = "Sorry, I can't help with that. Could you put it another way?";
};

/// The placeholders a template field accepts.
enum class TemplateKind { accept, clarify, fallback };

/// Empty when `text` is a valid template of that kind, else what is wrong with it (an
/// unmatched brace, an unknown placeholder and the known ones).
std::string template_problem(const std::string& text, TemplateKind kind);

/// The text normaliser, in this order:
/// 1. control characters removed: C0 and C1 controls and DEL, zero-width and format characters
///    (U+00AD, U+200B-U+200F, U+202A-U+202E, U+2060-U+2064, U+FEFF) and invalid UTF-8 bytes;
///    whitespace (tab, newline, U+00A0, U+2000-U+200A, U+3000, ...) becomes a space;
/// 2. whitespace collapsed to single spaces and trimmed;
/// 3. fillers removed, longest first: a filler matches case-insensitively (ASCII) where it is
///    neither preceded nor followed by a word character (letter, digit, '_', '\'', '-', any
///    non-ASCII character); spaces inside a filler match one space; a comma right after a
///    removed filler goes with it ("um, where is it" -> "where is it");
/// 4. repeated punctuation reduced: a run of two or more of '!' and '?' becomes "?" when it
///    holds a '?', else "!"; a run of one of . , ; : - ~ * becomes one;
/// 5. spaces before , . ; : ! ? dropped, a comma before other punctuation or at the end
///    dropped, whitespace collapsed again, leading and trailing spaces and , ; : trimmed.
class TextNormalizer {
 public:
  /// Throws mmintent::Error when a filler is empty or only spaces.
  explicit TextNormalizer(std::vector<std::string> fillers = {});
  std::string operator()(const std::string& text) const;

 private:
  std::vector<std::string> fillers_;  ///< lower-cased, collapsed, longest first
};

/// What the assistant behind receives for one request.
struct RewrittenRequest {
  Decision decision = Decision::accept;
  std::string text;       ///< the normalised user text
  std::string intent;     ///< accept: the intent; empty otherwise
  double confidence = 0;  ///< the top probability (calibrated)
  /// clarify: the two candidate intents with probabilities, most probable first.
  std::vector<std::pair<std::string, double>> candidates;
  std::string request;  ///< the rendered template / question / fallback text
};

class Rewriter {
 public:
  /// `intents` are the run's intent names. Throws ConfigError(source, key, 0, ...) naming
  /// `rewrite.templates.<intent>` (or display_names, clarify_template, ...) when a template is
  /// invalid or names an intent the run does not know, and mmintent::Error for a bad filler.
  Rewriter(RewriteOptions options, const std::vector<std::string>& intents,
           const std::string& source = "");

  /// Normalises `user_text` and renders the request for the decision: accept uses the
  /// template of `intent` (or the default), clarify needs two `candidates` (mmintent::Error
  /// otherwise), fallback gives the fallback text.
  RewrittenRequest rewrite(const std::string& user_text, Decision decision,
                           const std::string& intent, double confidence,
                           const std::vector<std::pair<std::string, double>>& candidates) const;

  /// The configured display name of an intent, or the intent itself.
  std::string display_name(const std::string& intent) const;
  const TextNormalizer& normalizer() const { return normalizer_; }

 private:
  RewriteOptions options_;
  TextNormalizer normalizer_;
};

/// One JSON object (no newline): {"decision", "text", "intent" (null unless accept),
/// "confidence", "candidates": [{"intent", "display_name", "probability"}] (clarify only),
/// "request"}; invalid UTF-8 is replaced.
std::string to_json_line(const RewrittenRequest& request, const Rewriter& rewriter);

}  // namespace mmintent

#include "mmintent/policy/rewrite.h"

#include "mmintent/error.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

using namespace mmintent;

namespace {

TEST(RewriteTest, ControlAndFormatCharactersAreRemoved) {
  const TextNormalizer norm;
  EXPECT_EQ(norm("what\x01 is\x7f my\xe2\x80\x8b balance"), "what is my balance");
  EXPECT_EQ(norm("a\tb\nc\r\nd"), "a b c d");                       // whitespace controls -> space
  EXPECT_EQ(norm("caf\xc3\xa9\xc2\x90 open"), "caf\xc3\xa9 open");  // C1 control U+0090
  EXPECT_EQ(norm("\xef\xbb\xbfhello"), "hello");                    // byte-order mark
  EXPECT_EQ(norm("bad\xff byte"), "bad byte");                      // invalid UTF-8
  EXPECT_EQ(norm("no\xc2\xa0"
                 "break"),
            "no break");  // no-break space
}

TEST(RewriteTest, WhitespaceIsCollapsedAndTrimmed) {
  const TextNormalizer norm;
  EXPECT_EQ(norm("   where   is \t  my   card  "), "where is my card");
  EXPECT_EQ(norm(""), "");
  EXPECT_EQ(norm(" \t\n "), "");
}

TEST(RewriteTest, FillersAreRemovedAsWholeWordsIgnoringCase) {
  const TextNormalizer norm({"um", "You Know", "i mean"});
  EXPECT_EQ(norm("Um, I mean, you know, where is my card?"), "where is my card?");
  EXPECT_EQ(norm("UM where is it um?"), "where is it?");
  EXPECT_EQ(norm("I want, um, a refund"), "I want, a refund");
  EXPECT_EQ(norm("I want a refund, um."), "I want a refund.");
  EXPECT_EQ(norm("I want a refund, you   know"), "I want a refund");
  // Inside other words nothing is removed.
  EXPECT_EQ(norm("my umbrella and drum, you knowledge"), "my umbrella and drum, you knowledge");
  EXPECT_EQ(norm("um-hum"), "um-hum");
  // Longest phrase first.
  const TextNormalizer longest({"so", "so yeah"});
  EXPECT_EQ(longest("so yeah, book it"), "book it");
  EXPECT_THROW(TextNormalizer({"  "}), Error);
}

TEST(RewriteTest, RepeatedPunctuationIsReduced) {
  const TextNormalizer norm;
  EXPECT_EQ(norm("help!!!"), "help!");
  EXPECT_EQ(norm("really?!?!"), "really?");
  EXPECT_EQ(norm("wait... what"), "wait. what");
  EXPECT_EQ(norm("a,, b;; c"), "a, b; c");
  EXPECT_EQ(norm("x -- y"), "x - y");
  EXPECT_EQ(norm("one? two!"), "one? two!");  // single marks stay
  EXPECT_EQ(norm("hello , world ."), "hello, world.");
}

RewriteOptions options() {
  RewriteOptions o;
  o.fillers = {"um"};
  o.templates = {{"transfer", "Transfer request ({confidence}): {text}"},
                 {"balance", "{display_name} [{intent}] {{raw}}: {text}"}};
  o.display_names = {{"transfer", "a money transfer"}, {"balance", "your balance"}};
  o.clarify_template = "Do you want {first} or {second}? ({first_intent}/{second_intent})";
  o.fallback_text = "Sorry, I can't help with \"{text}\".";
  return o;
}

const std::vector<std::string> kIntents{"balance", "transfer", "freeze_card", "oos"};

TEST(RewriteTest, AcceptUsesTheIntentTemplateOrTheDefault) {
  const Rewriter r(options(), kIntents);
  auto out = r.rewrite("um  send 20 euros to Bob!!", Decision::accept, "transfer", 0.934, {});
  EXPECT_EQ(out.text, "send 20 euros to Bob!");
  EXPECT_EQ(out.intent, "transfer");
  EXPECT_EQ(out.request, "Transfer request (0.93): send 20 euros to Bob!");
  out = r.rewrite("how much do I have", Decision::accept, "balance", 0.99, {});
  EXPECT_EQ(out.request, "your balance [balance] {raw}: how much do I have");
  // No template: the default ("{text}").
  out = r.rewrite("freeze my card", Decision::accept, "freeze_card", 0.9, {});
  EXPECT_EQ(out.request, "freeze my card");
  EXPECT_EQ(r.display_name("freeze_card"), "freeze_card");
}

TEST(RewriteTest, ClarifyNamesTheTwoCandidates) {
  const Rewriter r(options(), kIntents);
  const auto out = r.rewrite("money", Decision::clarify, "", 0.45,
                             {{"transfer", 0.45}, {"freeze_card", 0.4}, {"balance", 0.1}});
  EXPECT_EQ(out.request, "Do you want a money transfer or freeze_card? (transfer/freeze_card)");
  ASSERT_EQ(out.candidates.size(), 2u);
  EXPECT_EQ(out.candidates[1].first, "freeze_card");
  EXPECT_TRUE(out.intent.empty());
  EXPECT_THROW(r.rewrite("money", Decision::clarify, "", 0.45, {{"transfer", 0.45}}), Error);
  // The default question.
  const Rewriter plain(RewriteOptions{}, kIntents);
  EXPECT_EQ(
      plain.rewrite("x", Decision::clarify, "", 0.5, {{"balance", 0.5}, {"transfer", 0.4}}).request,
      "Did you mean balance or transfer?");
}

TEST(RewriteTest, FallbackGivesTheFallbackText) {
  const Rewriter r(options(), kIntents);
  const auto out = r.rewrite("um what's the weather", Decision::fallback, "", 0.2, {});
  EXPECT_EQ(out.request, "Sorry, I can't help with \"what's the weather\".");
  EXPECT_EQ(out.decision, Decision::fallback);
}

TEST(RewriteTest, BadTemplatesAndUnknownIntentsAreConfigErrors) {
  auto o = options();
  o.templates["transfer"] = "Transfer {amount}";
  try {
    Rewriter r(o, kIntents, "cfg.yaml");
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key(), "rewrite.templates.transfer");
    EXPECT_NE(std::string(e.what()).find("{amount}"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cfg.yaml"), std::string::npos) << e.what();
  }
  o = options();
  o.display_names["refund"] = "a refund";
  try {
    Rewriter r(o, kIntents, "cfg.yaml");
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key(), "rewrite.display_names.refund");
  }
  o = options();
  o.clarify_template = "Which one: {first or {second}?";
  EXPECT_THROW(Rewriter(o, kIntents), ConfigError);
  EXPECT_EQ(template_problem("a {text} b", TemplateKind::fallback), "");
  EXPECT_NE(template_problem("a {intent}", TemplateKind::fallback), "");  // accept-only
  EXPECT_NE(template_problem("a } b", TemplateKind::accept), "");
  EXPECT_EQ(template_problem("{{literal}}", TemplateKind::accept), "");
}

TEST(RewriteTest, JsonLines) {
  const Rewriter r(options(), kIntents);
  auto j = nlohmann::json::parse(to_json_line(
      r.rewrite("money", Decision::clarify, "", 0.45, {{"transfer", 0.45}, {"balance", 0.4}}), r));
  EXPECT_EQ(j["decision"], "clarify");
  EXPECT_TRUE(j["intent"].is_null());
  ASSERT_EQ(j["candidates"].size(), 2u);
  EXPECT_EQ(j["candidates"][0]["display_name"], "a money transfer");
  EXPECT_DOUBLE_EQ(j["candidates"][1]["probability"].get<double>(), 0.4);
  EXPECT_EQ(j["request"], "Do you want a money transfer or your balance? (transfer/balance)");
  j = nlohmann::json::parse(to_json_line(r.rewrite("x", Decision::accept, "balance", 0.9, {}), r));
  EXPECT_EQ(j["intent"], "balance");
  EXPECT_FALSE(j.contains("candidates"));
  EXPECT_DOUBLE_EQ(j["confidence"].get<double>(), 0.9);
  EXPECT_EQ(j["text"], "x");
}

}  // namespace

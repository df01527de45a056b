#include "serve/request.h"

#include "mmintent/core/modality.h"
#include "mmintent/data/audio.h"
#include "mmintent/data/image.h"
#include "mmintent/error.h"

#include <algorithm>
#include <regex>

namespace mmintent::serve {
namespace {

using json = nlohmann::json;

std::string type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a number";
    default: return "an integer";
  }
}

/// The name of the last object key that starts before byte `pos` of `body`.
std::string field_before(const std::string& body, std::size_t pos) {
  static const std::regex key(R"re("([^"\\]{1,64})"\s*:)re");
  std::string found;
  const auto end = body.begin() + static_cast<std::ptrdiff_t>(std::min(pos, body.size()));
  for (std::sregex_iterator it(body.begin(), end, key), last; it != last; ++it) found = (*it)[1];
  return found;
}

/// The plug-in value as a manifest holds it (Record::inputs): a string's text, else compact JSON.
std::string plugin_value(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

/// The bytes of an uploaded file: base64, or a base64 data: URL as a browser's FileReader gives
/// it (`kind`: "image" or "audio", for the message).
std::string file_bytes(std::string text, const std::string& field, const std::string& kind) {
  if (text.rfind("data:", 0) == 0) {
    const auto comma = text.find(',');
    if (comma == std::string::npos || comma < 7 || text.compare(comma - 7, 7, ";base64") != 0) {
      throw RequestError(400, field, "a data: URL must be base64 (data:" + kind + "/...;base64,...)");
    }
    text.erase(0, comma + 1);
  }
  return decode_base64(text, field);
}

PredictRequest parse_one(const json& j, const PredictRules& rules, const std::string& prefix) {
  const Config& c = *rules.config;
  if (!j.is_object()) throw RequestError(400, prefix.empty() ? "" : prefix, "expected a JSON object, found " + type_name(j));
  auto name = [&](const std::string& key) { return prefix.empty() ? key : prefix + "." + key; };
  PredictRequest r;
  r.top_k = rules.default_top_k;
  for (const auto& [key, v] : j.items()) {
    if (key == "text") {
      if (!v.is_string() && !v.is_null()) throw RequestError(400, name(key), "must be a string, found " + type_name(v));
      if (v.is_string()) r.input.text = v.get<std::string>();
    } else if (key == "image") {
      if (v.is_null()) continue;
      if (!v.is_string()) throw RequestError(400, name(key), "must be a base64 string (the image file's bytes), found " + type_name(v));
      if (!c.model.uses("image")) throw RequestError(400, name(key), "this model does not use images");
      std::string bytes = file_bytes(v.get<std::string>(), name(key), "image");
      try {
        r.input.image_pixels = std::make_shared<const DecodedImage>(decode_image(
            std::vector<uint8_t>(bytes.begin(), bytes.end()), c.data.image, name(key)));
      } catch (const DataError& e) {
        std::string message = e.what();
        const std::string lead = name(key) + ": ";
        if (message.rfind(lead, 0) == 0) message.erase(0, lead.size());
        throw RequestError(400, name(key), message);
      }
      r.image_bytes = std::move(bytes);
    } else if (key == "audio") {
      if (v.is_null()) continue;
      if (!v.is_string()) {
        throw RequestError(400, name(key), "must be a base64 string (the audio file's bytes: WAV, FLAC, OGG), found " + type_name(v));
      }
      if (!c.model.uses("audio")) throw RequestError(400, name(key), "this model does not use audio");
      std::string bytes = file_bytes(v.get<std::string>(), name(key), "audio");
      try {
        r.input.audio_samples = std::make_shared<const DecodedAudio>(decode_audio_bytes(bytes, name(key), c.data.audio));
      } catch (const DataError& e) {
        std::string message = e.what();
        const std::string lead = name(key) + ": ";
        if (message.rfind(lead, 0) == 0) message.erase(0, lead.size());
        throw RequestError(400, name(key), message);
      }
      r.audio_bytes = std::move(bytes);
    } else if (key == "top_k") {
      if (!v.is_number_integer() || v.get<int64_t>() < 1) {
        throw RequestError(400, name(key), "must be an integer >= 1, found " + (v.is_number() ? v.dump() : type_name(v)));
      }
      r.top_k = v.get<int64_t>();
    } else if (key == "rewrite") {
      if (!v.is_boolean()) throw RequestError(400, name(key), "must be true or false, found " + type_name(v));
      r.rewrite = v.get<bool>();
    } else if (key == "adapter") {
      if (v.is_null()) continue;
      if (!v.is_string()) throw RequestError(400, name(key), "must be a string (an adapter's name), found " + type_name(v));
      r.adapter = v.get<std::string>();
      if (std::find(rules.adapters.begin(), rules.adapters.end(), r.adapter) == rules.adapters.end()) {
        std::string served;
        for (const auto& a : rules.adapters) served += (served.empty() ? "" : ", ") + a;
        throw RequestError(400, name(key), "no adapter '" + r.adapter + "' is served (" +
                                               (served.empty() ? "none is: serve.adapters is empty" : "served: " + served) + ")");
      }
    } else if (c.model.uses(key) && !is_builtin_modality(key)) {
      if (!v.is_null()) {
        r.input.inputs[key] = plugin_value(v);
        r.plugin_values[key] = v;
      }
    } else {
      std::string known = "text, image, audio, top_k, rewrite, adapter";
      for (const auto& m : c.model.modalities) {
        if (!is_builtin_modality(m)) known += ", " + m;
      }
      throw RequestError(400, name(key), "unknown field (known: " + known + ")");
    }
  }
  const bool has_text = r.input.text.find_first_not_of(" \t\r\n") != std::string::npos;
  if (c.model.uses("text") && !has_text && !c.data.allow_missing_text) {
    throw RequestError(400, name("text"), "this model needs a text (it was trained without allow_missing_text)");
  }
  if (c.model.uses("image") && !r.input.image_pixels && !c.data.allow_missing_image) {
    throw RequestError(400, name("image"), "this model needs an image (it was trained without allow_missing_image)");
  }
  if (c.model.uses("audio") && !r.input.audio_samples && !c.data.allow_missing_audio) {
    throw RequestError(400, name("audio"), "this model needs audio (it was trained without allow_missing_audio)");
  }
  for (const auto& m : c.model.modalities) {
    if (is_builtin_modality(m) || r.input.inputs.count(m)) continue;
    const auto p = c.model.plugins.find(m);
    if (p == c.model.plugins.end() || !p->second.allow_missing()) {
      throw RequestError(400, name(m), "this model needs a value for modality '" + m + "'");
    }
  }
  return r;
}

}  // namespace

json parse_body(const std::string& body) {
  try {
    return json::parse(body);
  } catch (const json::parse_error& e) {
    const std::string what = e.what();
    if (what.find("UTF-8") != std::string::npos) {
      throw RequestError(400, field_before(body, e.byte), "is not valid UTF-8 text");
    }
    std::string message = what;
    if (const auto at = message.find("parse error"); at != std::string::npos) message.erase(0, at);
    throw RequestError(400, "", "malformed JSON: " + message);
  }
}

std::vector<PredictRequest> parse_predict(const std::string& body, const PredictRules& rules, bool& batch) {
  const json j = parse_body(body);
  std::vector<PredictRequest> out;
  batch = j.is_array();
  if (!batch) {
    out.push_back(parse_one(j, rules, ""));
    return out;
  }
  if (j.empty()) throw RequestError(400, "", "the array holds no request");
  if (static_cast<int64_t>(j.size()) > rules.max_inputs) {
    throw RequestError(413, "", "the array holds " + std::to_string(j.size()) + " requests, more than serve.max_inputs = " +
                                    std::to_string(rules.max_inputs));
  }
  for (std::size_t i = 0; i < j.size(); ++i) out.push_back(parse_one(j[i], rules, "[" + std::to_string(i) + "]"));
  return out;
}

FeedbackRequest parse_feedback(const std::string& body, const PredictRules& rules,
                               const std::vector<std::string>& intents) {
  const json j = parse_body(body);
  if (!j.is_object()) throw RequestError(400, "", "expected a JSON object, found " + type_name(j));
  auto known_intent = [&](const std::string& field, const json& v) {
    if (!v.is_string()) throw RequestError(400, field, "must be an intent name (a string), found " + type_name(v));
    const auto name = v.get<std::string>();
    if (std::find(intents.begin(), intents.end(), name) == intents.end()) {
      throw RequestError(400, field, "'" + name + "' is not an intent of this model");
    }
    return name;
  };
  FeedbackRequest f;
  json inputs = json::object();
  for (const auto& [key, v] : j.items()) {
    if (key == "id") {
      if (!v.is_string() || v.get<std::string>().empty()) throw RequestError(400, key, "must be a prediction's id (a string)");
      f.id = v.get<std::string>();
    } else if (key == "reaction") {
      if (!v.is_string()) throw RequestError(400, key, "must be accepted, corrected or rejected, found " + type_name(v));
      f.reaction = v.get<std::string>();
      if (f.reaction != "accepted" && f.reaction != "corrected" && f.reaction != "rejected") {
        throw RequestError(400, key, "'" + f.reaction + "' is not one of accepted, corrected, rejected");
      }
    } else if (key == "corrected_to") {
      f.corrected_to = known_intent(key, v);
    } else if (key == "predicted") {
      f.predicted = known_intent(key, v);
    } else if (key == "text" || key == "image" || key == "audio" || (rules.config->model.uses(key) && !is_builtin_modality(key))) {
      inputs[key] = v;
    } else {
      throw RequestError(400, key, "unknown field (known: id, reaction, corrected_to; without an id: predicted and the inputs)");
    }
  }
  if (f.reaction.empty()) throw RequestError(400, "reaction", "is required: accepted, corrected or rejected");
  if (f.reaction == "corrected" && f.corrected_to.empty()) {
    throw RequestError(400, "corrected_to", "a correction needs the intent it was corrected to");
  }
  if (f.reaction != "corrected" && !f.corrected_to.empty()) {
    throw RequestError(400, "corrected_to", "is only for reaction 'corrected'");
  }
  if (!f.id.empty()) {
    if (!inputs.empty()) {
      throw RequestError(400, inputs.begin().key(), "with an id the prediction's own inputs are logged; leave it out");
    }
    if (!f.predicted.empty()) throw RequestError(400, "predicted", "with an id the prediction's own intent is logged; leave it out");
    return f;
  }
  if (f.predicted.empty()) throw RequestError(400, "predicted", "is required without an id (or give the prediction's id)");
  if (f.corrected_to == f.predicted) throw RequestError(400, "corrected_to", "equals the predicted intent");
  PredictRequest in = parse_one(inputs, rules, "");
  f.text = in.input.text;
  f.image_bytes = std::move(in.image_bytes);
  f.audio_bytes = std::move(in.audio_bytes);
  f.plugin_values = std::move(in.plugin_values);
  return f;
}

std::string decode_base64(const std::string& text, const std::string& field) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  std::string out;
  out.reserve(text.size() / 4 * 3);
  uint32_t acc = 0;
  int bits = 0;
  std::size_t padding = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      ++padding;
      continue;
    }
    const int v = value(c);
    if (v < 0 || padding) {
      throw RequestError(400, field, "is not valid base64: unexpected character at position " + std::to_string(i));
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  if (bits >= 6 || padding > 2) throw RequestError(400, field, "is not valid base64: truncated");
  if (out.empty()) throw RequestError(400, field, "is empty");
  return out;
}

std::string error_body(int status, const std::string& field, const std::string& message) {
  nlohmann::ordered_json e;
  e["status"] = status;
  if (!field.empty()) e["field"] = field;
  e["message"] = message;
  nlohmann::ordered_json j;
  j["error"] = e;
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace mmintent::serve

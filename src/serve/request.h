#pragma once
/// Reading and checking the JSON bodies of the server's requests. Every problem is a
/// RequestError naming the field ("text", "[2].image", ...). Internal.

#include "mmintent/config/config.h"
#include "mmintent/inference/predictor.h"

#include <nlohmann/json.hpp>

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace mmintent::serve {

/// A request the server refuses: HTTP `status`, the `field` at fault ("" for the whole body).
class RequestError : public std::runtime_error {
 public:
  RequestError(int status, std::string field, const std::string& message)
      : std::runtime_error(message), status_(status), field_(std::move(field)) {}
  int status() const { return status_; }
  const std::string& field() const { return field_; }

 private:
  int status_;
  std::string field_;
};

/// One input of POST /v1/predict.
struct PredictRequest {
  PredictInput input;
  int64_t top_k = 3;
  bool rewrite = false;
  std::string adapter;      ///< the served adapter to use (serve.adapters), "" for the run itself
  std::string image_bytes;  ///< the uploaded image file (decoded from base64), "" for none
  std::string audio_bytes;  ///< the uploaded audio file (decoded from base64), "" for none
  /// Plug-in modalities' values as sent (for the feedback log).
  std::map<std::string, nlohmann::json> plugin_values;
};

/// A POST /v1/feedback body: a reaction to a served prediction (by `id`), or a whole record
/// (no id: text, image, predicted as the prediction was).
struct FeedbackRequest {
  std::string id;
  std::string reaction;      ///< accepted | corrected | rejected
  std::string corrected_to;  ///< corrected only
  std::string text;          ///< whole-record form
  std::string image_bytes;   ///< whole-record form, the image file
  std::string audio_bytes;   ///< whole-record form, the audio file
  std::string predicted;     ///< whole-record form
  std::map<std::string, nlohmann::json> plugin_values;  ///< whole-record form
};



/// What a predict body may hold, from the served run's config.
struct PredictRules {
  const Config* config = nullptr;  ///< modalities, allow_missing_*, data.image
  int64_t default_top_k = 3;
  int64_t max_inputs = 64;
  std::vector<std::string> adapters;  ///< the names a request's "adapter" may give
};

/// Parses a JSON body: an object (`batch` false) or an array of objects (`batch` true). Fields:
/// "text" (string), "image" (base64 of a PNG/JPEG/... file, optionally as a data: URL), "audio"
/// (base64 of a WAV/FLAC/OGG file, likewise),
/// "top_k" (integer >= 1), "rewrite" (boolean), "adapter" (one of rules.adapters, or null),
/// and one per plug-in modality by its name.
/// Images and audio are decoded here, with the run's image and audio options. Throws RequestError: 400 for
/// malformed JSON, ill-formed UTF-8, a wrong type, an unknown field, a missing text or image
/// the model needs, bad base64 or an image that cannot be decoded or is above max_pixels.
std::vector<PredictRequest> parse_predict(const std::string& body, const PredictRules& rules, bool& batch);

/// Parses and checks a feedback body: "reaction" one of accepted/corrected/rejected;
/// "corrected_to" a known intent, required for corrected only and different from the
/// prediction (checked here for the whole-record form); with no "id", "predicted" a known
/// intent and the text/image/plug-in values the model needs. Throws RequestError (400).
FeedbackRequest parse_feedback(const std::string& body, const PredictRules& rules,
                               const std::vector<std::string>& intents);

/// Parses a JSON body, mapping nlohmann's errors to RequestError 400 (ill-formed UTF-8 names
/// the field whose string holds it).
nlohmann::json parse_body(const std::string& body);

/// Strict base64 (RFC 4648, padding optional, whitespace ignored); throws RequestError naming
/// `field` and the offending position.
std::string decode_base64(const std::string& text, const std::string& field);

/// {"error": {"status": ..., "field": ..., "message": ...}} ("field" left out when empty).
std::string error_body(int status, const std::string& field, const std::string& message);

}  // namespace mmintent::serve

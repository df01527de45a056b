#include "mmintent/serve/server.h"

#include "mmintent/core/log.h"
#include "mmintent/error.h"
#include "mmintent/run/run_directory.h"
#include "mmintent/run/setup.h"
#include "serve/auth.h"
#include "serve/batcher.h"
#include "serve/feedback_log.h"
#include "serve/metrics.h"
#include "serve/request.h"
#include "serve/web.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <deque>
#include <filesystem>
#include <map>
#include <optional>
#include <random>

namespace mmintent {
namespace {

using ojson = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

/// The endpoint label of a path: known routes as they are, anything else "other" (bounded
/// cardinality whatever clients send).
std::string endpoint_of(const std::string& path) {
  for (const char* known : {"/v1/predict", "/v1/feedback", "/v1/model", "/v1/admin/reload", "/healthz", "/readyz",
                            "/metrics", "/", "/app.js"}) {
    if (path == known) return path;
  }
  return "other";
}

std::string dump(const ojson& j) { return j.dump(-1, ' ', false, ojson::error_handler_t::replace); }

ojson scores(const std::vector<IntentScore>& list, const Rewriter& rewriter) {
  ojson out = ojson::array();
  for (const auto& s : list) {
    out.push_back({{"intent", s.intent}, {"display_name", rewriter.display_name(s.intent)}, {"probability", s.probability}});
  }
  return out;
}

/// The file extension of an image file's bytes (cosmetic: decoders look at the content).
std::string image_extension(const std::string& b) {
  if (b.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0) return ".png";
  if (b.size() > 2 && static_cast<unsigned char>(b[0]) == 0xFF && static_cast<unsigned char>(b[1]) == 0xD8) return ".jpg";
  if (b.compare(0, 2, "BM") == 0) return ".bmp";
  if (b.size() > 12 && b.compare(0, 4, "RIFF") == 0 && b.compare(8, 4, "WEBP") == 0) return ".webp";
  return ".img";
}

/// The file extension of an audio file's bytes (cosmetic, as image_extension's).
std::string audio_extension(const std::string& b) {
  if (b.size() > 12 && b.compare(0, 4, "RIFF") == 0 && b.compare(8, 4, "WAVE") == 0) return ".wav";
  if (b.compare(0, 4, "fLaC") == 0) return ".flac";
  if (b.compare(0, 4, "OggS") == 0) return ".ogg";
  return ".audio";
}

std::string utc_now() {
  char buf[32];
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

/// What the server showed for a prediction, kept for its feedback.
struct ShownPrediction {
  std::string text, image_bytes, audio_bytes, predicted, decision, version;
  std::string adapter;  ///< the serve.adapters entry that predicted it, "" for the run itself
  double probability = 0;  ///< the model's probability of `predicted` (the intent shown)
  double propensity = 0;   ///< the policy's probability of showing it (decision.explore)
  std::map<std::string, nlohmann::json> plugin_values;
  bool answered = false;  ///< feedback was recorded
};

/// Throws 415 unless the request's body is JSON (a request that names no type is taken as JSON).
void require_json(const httplib::Request& req) {
  const auto type = req.get_header_value("Content-Type");
  if (!type.empty() && type.rfind("application/json", 0) != 0) {
    throw serve::RequestError(415, "Content-Type", "must be application/json, found '" + type + "'");
  }
}

/// A loaded run directory: what a request needs of the model.
struct Model {
  std::string run_dir;
  std::shared_ptr<const Predictor> predictor;
  std::string version;  ///< SHA-256 of the weights file (adapter.pt for an adapter run)
  std::map<std::string, std::string> plugin_fields;  ///< modality -> its feedback-log field
};

std::shared_ptr<Model> load_model(const std::string& run_dir, const PredictorOptions& options) {
  auto m = std::make_shared<Model>();
  m->run_dir = run_dir;
  m->predictor = std::make_shared<const Predictor>(Predictor::load(run_dir, options));
  m->version = RunDirectory(run_dir).weights_digest();
  m->plugin_fields = manifest_read_options(m->predictor->config(), false).fields.plugins;
  return m;
}

/// The served run and the adapters over it, replaced whole on reload (a request keeps the
/// ones it started with until it ends).
struct Served {
  std::shared_ptr<const Model> base;
  std::map<std::string, std::shared_ptr<const Model>> adapters;  ///< by serve.adapters name

  /// The model of a request's "adapter" field ("": the run itself); the name was checked.
  const Model& model(const std::string& adapter) const { return adapter.empty() ? *base : *adapters.at(adapter); }
  std::vector<std::string> adapter_names() const {
    std::vector<std::string> names;
    for (const auto& [name, m] : adapters) names.push_back(name);
    return names;
  }
  std::map<std::string, std::string> adapter_dirs() const {
    std::map<std::string, std::string> dirs;
    for (const auto& [name, m] : adapters) dirs[name] = m->run_dir;
    return dirs;
  }
};

/// An adapter that cannot be served: the message names serve.adapters.`name`.
struct AdapterError : CheckpointError {
  AdapterError(std::string name_, const std::string& what) : CheckpointError(what), name(std::move(name_)) {}
  std::string name;
};

/// Loads the adapter run `dir` as serve.adapters.`name` over `base`: refused unless it adapts
/// exactly the served weights and predicts the same intents. Throws AdapterError.
std::shared_ptr<const Model> load_adapter(const std::string& name, const std::string& dir, const Model& base,
                                          const PredictorOptions& options) {
  const std::string key = "serve.adapters." + name;
  if (!ServeConfig::valid_adapter_name(name)) {
    throw AdapterError(name, key + ": an adapter's name is 1 to 64 letters, digits, '_' or '-'");
  }
  const RunDirectory run(dir);
  std::shared_ptr<Model> m;
  try {
    run.require_config();
    if (!run.has_adapter()) {
      throw Error(dir + " is not an adapter run (it has no adapter.json): tune one over " + base.run_dir +
                  " with tune.method=lora, or serve this run on its own");
    }
    const auto manifest = run.load_adapter_manifest();
    if (manifest.base_weights_sha256 != base.version) {
      throw Error("the adapter in " + dir + " adapts weights " + manifest.base_weights_sha256.substr(0, 12) +
                  " (base run " + manifest.base_run + "), not the served model " + base.version.substr(0, 12) +
                  " (" + base.run_dir + "): tune it again over the served run");
    }
    m = load_model(dir, options);  // the base's weights (found by adapter.json) with the adapter merged in
  } catch (const std::exception& e) {
    throw AdapterError(name, key + ": " + e.what());
  }
  if (m->predictor->intents() != base.predictor->intents()) {
    throw AdapterError(name, key + ": the adapter run " + dir + " predicts other intents than the served run " + base.run_dir);
  }
  return m;
}

std::shared_ptr<const Served> load_served(const std::string& run_dir, const std::map<std::string, std::string>& adapters,
                                          const PredictorOptions& options) {
  auto served = std::make_shared<Served>();
  served->base = load_model(run_dir, options);
  for (const auto& [name, dir] : adapters) served->adapters[name] = load_adapter(name, dir, *served->base, options);
  return served;
}

/// When the current request on this worker thread started (set before routing).
thread_local std::optional<Clock::time_point> request_start;

}  // namespace

struct Server::Impl {
  ServeConfig config;
  PredictorOptions predictor_options;
  mutable std::mutex model_mutex;
  std::shared_ptr<const Served> served_;  ///< read through served(), replaced by reload()
  std::mutex reload_mutex;              ///< one reload at a time
  serve::ApiKeys keys;
  serve::ApiKeys admin_keys;
  serve::Metrics metrics;
  std::unique_ptr<serve::MicroBatcher> batcher;
  // Feedback (serve.feedback_log; null when off).
  std::unique_ptr<serve::FeedbackLogWriter> feedback;
  std::string images_dir;     ///< where uploaded images of feedback records go
  std::string images_folder;  ///< the same, relative to the log's folder
  std::string audio_dir;      ///< where uploaded audio of feedback records goes
  std::string audio_folder;   ///< the same, relative to the log's folder
  std::mutex shown_mutex;
  std::map<std::string, ShownPrediction> shown;  ///< by prediction id
  std::deque<std::string> shown_order;  ///< oldest first
  uint64_t id_salt = 0;
  std::atomic<uint64_t> id_counter{0};
  int port = -1;
  /// Last: destroyed first, before anything its handlers use. An httplib::SSLServer with
  /// serve.tls.
  std::unique_ptr<httplib::Server> http;

  std::shared_ptr<const Served> served() const {
    std::lock_guard<std::mutex> lock(model_mutex);
    return served_;
  }

  void publish(std::shared_ptr<const Served> s) {
    metrics.set_only("mmintent_model_info", {{"version", s->base->version}, {"run_dir", s->base->run_dir}}, 1);
    std::vector<std::pair<serve::Labels, double>> adapters;
    for (const auto& [name, m] : s->adapters) {
      adapters.push_back({{{"adapter", name}, {"version", m->version}, {"run_dir", m->run_dir}}, 1});
      metrics.add("mmintent_adapter_predictions_total", {{"adapter", name}}, 0);
    }
    metrics.set_only("mmintent_adapter_info", adapters);
    std::lock_guard<std::mutex> lock(model_mutex);
    served_ = std::move(s);
  }

  /// Loads `run_dir` (empty: the served one again) and `adapters` (null: the served ones,
  /// read again from their folders) beside the served ones and swaps them in; returns {before,
  /// after}. On failure the served ones stay and the error names the run or the adapter.
  std::pair<std::shared_ptr<const Served>, std::shared_ptr<const Served>> reload(
      std::string run_dir, const std::map<std::string, std::string>* adapters) {
    std::lock_guard<std::mutex> one_at_a_time(reload_mutex);
    auto before = served();
    if (run_dir.empty()) run_dir = before->base->run_dir;
    std::shared_ptr<const Served> after;
    const auto still = " (still serving model " + before->base->version.substr(0, 12) + " from " + before->base->run_dir + ")";
    try {
      after = load_served(run_dir, adapters ? *adapters : before->adapter_dirs(), predictor_options);
    } catch (const AdapterError& e) {
      metrics.add("mmintent_reloads_total", {{"result", "failed"}});
      throw AdapterError(e.name, std::string(e.what()) + still);
    } catch (const std::exception& e) {
      metrics.add("mmintent_reloads_total", {{"result", "failed"}});
      throw Error("cannot load run directory " + run_dir + ": " + e.what() + still);
    }
    publish(after);
    metrics.add("mmintent_reloads_total", {{"result", "ok"}});
    std::string with;
    for (const auto& [name, m] : after->adapters) with += (with.empty() ? ", adapters " : ", ") + name;
    log::info("serve", "reloaded: model " + after->base->version.substr(0, 12) + " from " + run_dir + with + " (was " +
                           before->base->version.substr(0, 12) + ")");
    return {before, after};
  }

  serve::PredictRules rules(const Served& s) const {
    return {&s.base->predictor->config(), config.top_k, config.max_inputs, s.adapter_names()};
  }

  std::string next_id() {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%016llx%08llx", static_cast<unsigned long long>(id_salt),
                  static_cast<unsigned long long>(++id_counter & 0xffffffffULL));
    return buf;
  }

  void declare_metrics() {
    metrics.declare("mmintent_requests_total", "counter", "HTTP requests by endpoint and status.");
    metrics.declare_histogram("mmintent_request_seconds", "Time from routing to response, by endpoint.",
                              {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10});
    metrics.declare_histogram("mmintent_batch_size", "Inputs per forward pass.",
                              {1, 2, 4, 8, 16, 32, 64, 128, 256});
    metrics.declare("mmintent_predictions_total", "counter", "Predicted inputs by decision.");
    metrics.declare("mmintent_out_of_scope_total", "counter", "Predicted inputs found out of scope.");
    metrics.declare("mmintent_queue_inputs", "gauge", "Inputs waiting for or in a forward pass.");
    metrics.declare("mmintent_model_info", "gauge", "The served model (version: SHA-256 of its weights).");
    metrics.declare("mmintent_adapter_info", "gauge", "The adapters served over it (version: SHA-256 of adapter.pt).");
    metrics.declare("mmintent_adapter_predictions_total", "counter", "Predicted inputs by adapter (serve.adapters).");
    metrics.declare("mmintent_feedback_total", "counter", "Feedback records written, by reaction.");
    metrics.declare("mmintent_reloads_total", "counter", "Model reloads, by result (ok, failed).");
    for (const char* r : {"ok", "failed"}) metrics.add("mmintent_reloads_total", {{"result", r}}, 0);
    for (const char* r : {"accepted", "corrected", "rejected"}) metrics.add("mmintent_feedback_total", {{"reaction", r}}, 0);
    for (const char* d : {"accept", "clarify", "fallback"}) metrics.add("mmintent_predictions_total", {{"decision", d}}, 0);
    metrics.add("mmintent_out_of_scope_total", {}, 0);
  }

  void reply_error(httplib::Response& res, int status, const std::string& field, const std::string& message) {
    res.status = status;
    res.set_content(serve::error_body(status, field, message), "application/json");
  }

  void handle_predict(const httplib::Request& req, httplib::Response& res) {
    serve::MicroBatcher::Arrival arrival(*batcher);  // the batcher may wait for this request
    const auto served = this->served();  // this request's models, whatever a reload does meanwhile
    bool batch = false;
    auto requests = serve::parse_predict(req.body, rules(*served), batch);
    // One submission per model the inputs name (a forward pass holds one model's inputs).
    std::map<std::string, std::vector<std::size_t>> by_adapter;
    for (std::size_t i = 0; i < requests.size(); ++i) by_adapter[requests[i].adapter].push_back(i);
    std::vector<std::future<std::vector<Prediction>>> pending;
    for (const auto& [adapter, indices] : by_adapter) {
      std::vector<PredictInput> inputs;
      int64_t top_k = 1;
      for (const auto i : indices) {
        inputs.push_back(requests[i].input);
        top_k = std::max(top_k, requests[i].top_k);
      }
      pending.push_back(batcher->submit(served->model(adapter).predictor, std::move(inputs), top_k));
    }
    arrival.end();
    std::vector<Prediction> predictions(requests.size());
    auto group = by_adapter.begin();
    for (auto& p : pending) {
      auto got = p.get();
      for (std::size_t k = 0; k < got.size(); ++k) predictions[group->second[k]] = std::move(got[k]);
      ++group;
    }
    ojson out = ojson::array();
    for (std::size_t i = 0; i < requests.size(); ++i) {
      auto& p = predictions[i];
      const Model& m = served->model(requests[i].adapter);
      const auto& rewriter = m.predictor->rewriter();
      if (static_cast<int64_t>(p.top.size()) > requests[i].top_k) p.top.resize(static_cast<std::size_t>(requests[i].top_k));
      ojson j;
      j["id"] = next_id();
      j["model_version"] = m.version;
      if (!requests[i].adapter.empty()) j["adapter"] = requests[i].adapter;
      j["decision"] = to_string(p.decision);
      std::optional<RewrittenRequest> rw;
      if (requests[i].rewrite) rw = m.predictor->rewrite(requests[i].input, p);
      if (rw) j["text"] = rw->text;
      j["intent"] = p.decision == Decision::accept ? ojson(p.top.at(0).intent) : ojson(nullptr);
      j["confidence"] = p.top.at(0).probability;
      if (p.decision == Decision::clarify) j["candidates"] = scores(p.candidates, rewriter);
      if (rw) j["request"] = rw->request;
      j["out_of_scope"] = p.out_of_scope;
      j["top"] = scores(p.top, rewriter);
      j["shown"] = p.shown.intent;
      j["propensity"] = p.propensity;
      metrics.add("mmintent_predictions_total", {{"decision", to_string(p.decision)}});
      if (p.out_of_scope) metrics.add("mmintent_out_of_scope_total", {});
      if (!requests[i].adapter.empty()) metrics.add("mmintent_adapter_predictions_total", {{"adapter", requests[i].adapter}});
      if (feedback) {
        ShownPrediction s;
        s.text = requests[i].input.text;
        s.image_bytes = requests[i].image_bytes;
        s.audio_bytes = requests[i].audio_bytes;
        s.predicted = p.shown.intent;
        s.probability = p.shown.probability;
        s.propensity = p.propensity;
        s.decision = to_string(p.decision);
        s.version = m.version;
        s.adapter = requests[i].adapter;
        s.plugin_values = requests[i].plugin_values;
        remember(j["id"].get<std::string>(), std::move(s));
      }
      if (config.log_requests) {
        log::info("serve", "predict " + j["id"].get<std::string>() + " text=" + ojson(requests[i].input.text).dump() +
                               " -> " + to_string(p.decision) + " " + p.top.at(0).intent);
      }
      out.push_back(std::move(j));
    }
    res.set_content(dump(batch ? out : out[0]), "application/json");
  }

  void remember(const std::string& id, ShownPrediction s) {
    std::lock_guard<std::mutex> lock(shown_mutex);
    shown.emplace(id, std::move(s));
    shown_order.push_back(id);
    while (static_cast<int64_t>(shown_order.size()) > config.feedback_window) {
      shown.erase(shown_order.front());
      shown_order.pop_front();
    }
  }

  void handle_feedback(const httplib::Request& req, httplib::Response& res) {
    if (!feedback) throw serve::RequestError(404, "", "feedback is off: set serve.feedback_log to a file");
    const auto served = this->served();
    const auto& m = served->base;
    auto f = serve::parse_feedback(req.body, rules(*served), m->predictor->intents());
    ShownPrediction s;
    std::string id = f.id;
    if (!id.empty()) {
      std::lock_guard<std::mutex> lock(shown_mutex);
      const auto it = shown.find(id);
      if (it == shown.end()) {
        throw serve::RequestError(404, "id", "no prediction '" + id + "' is remembered (unknown, or older than the last " +
                                                 std::to_string(config.feedback_window) + ", serve.feedback_window)");
      }
      if (it->second.answered) throw serve::RequestError(409, "id", "feedback for prediction '" + id + "' was recorded already");
      if (f.corrected_to == it->second.predicted) throw serve::RequestError(400, "corrected_to", "equals the predicted intent");
      it->second.answered = true;  // claimed now, released below if the write fails
      s = it->second;
    } else {
      id = next_id();
      s.text = f.text;
      s.image_bytes = std::move(f.image_bytes);
      s.audio_bytes = std::move(f.audio_bytes);
      s.predicted = f.predicted;
      s.plugin_values = std::move(f.plugin_values);
    }
    try {
      ojson line;
      line["id"] = id;
      line["time"] = utc_now();
      if (!s.version.empty()) line["model_version"] = s.version;
      if (!s.adapter.empty()) line["adapter"] = s.adapter;
      if (!s.text.empty()) line["text"] = s.text;
      if (!s.image_bytes.empty()) {
        const std::string name = id + image_extension(s.image_bytes);
        serve::write_file_durably(images_dir + "/" + name, s.image_bytes);
        line["image"] = images_folder + "/" + name;
      }
      if (!s.audio_bytes.empty()) {
        const std::string name = id + audio_extension(s.audio_bytes);
        std::error_code ec;
        std::filesystem::create_directories(audio_dir, ec);
        if (ec) throw Error("cannot create " + audio_dir + ": " + ec.message());
        serve::write_file_durably(audio_dir + "/" + name, s.audio_bytes);
        line["audio"] = audio_folder + "/" + name;
      }
      for (const auto& [modality, value] : s.plugin_values) {
        // A prediction from a model before a reload may carry a modality the current one lacks.
        if (const auto field = m->plugin_fields.find(modality); field != m->plugin_fields.end()) {
          line[field->second] = value;
        }
      }
      line["predicted"] = s.predicted;
      if (!f.id.empty()) {
        line["probability"] = s.probability;
        line["propensity"] = s.propensity;
        line["decision"] = s.decision;
      }
      line["reaction"] = f.reaction;
      if (!f.corrected_to.empty()) line["corrected_to"] = f.corrected_to;
      feedback->append(dump(line));  // returns once the line is on disk
    } catch (...) {
      if (!f.id.empty()) {
        std::lock_guard<std::mutex> lock(shown_mutex);
        if (const auto it = shown.find(id); it != shown.end()) it->second.answered = false;
      }
      throw;
    }
    metrics.add("mmintent_feedback_total", {{"reaction", f.reaction}});
    ojson out;
    out["id"] = id;
    out["recorded"] = true;
    res.set_content(dump(out), "application/json");
  }

  void handle_reload(const httplib::Request& req, httplib::Response& res) {
    std::string run_dir;
    std::optional<std::map<std::string, std::string>> adapters;
    if (!req.body.empty()) {
      const auto body = serve::parse_body(req.body);
      if (!body.is_object()) {
        throw serve::RequestError(400, "", "must be a JSON object {\"run_dir\": PATH, \"adapters\": {NAME: PATH}} (or empty)");
      }
      for (const auto& [key, value] : body.items()) {
        if (key == "run_dir") {
          if (!value.is_string() || value.get<std::string>().empty()) {
            throw serve::RequestError(400, "run_dir", "must be a non-empty string (a path on the server)");
          }
          run_dir = value.get<std::string>();
        } else if (key == "adapters") {
          if (!value.is_object()) throw serve::RequestError(400, "adapters", "must be an object {NAME: PATH} ({} for none)");
          adapters.emplace();
          for (const auto& [name, dir] : value.items()) {
            if (!ServeConfig::valid_adapter_name(name)) {
              throw serve::RequestError(400, "adapters." + name, "an adapter's name is 1 to 64 letters, digits, '_' or '-'");
            }
            if (!dir.is_string() || dir.get<std::string>().empty()) {
              throw serve::RequestError(400, "adapters." + name, "must be a non-empty string (a path on the server)");
            }
            (*adapters)[name] = dir.get<std::string>();
          }
        } else {
          throw serve::RequestError(400, key, "unknown field (known: run_dir, adapters)");
        }
      }
    }
    const auto start = Clock::now();
    std::pair<std::shared_ptr<const Served>, std::shared_ptr<const Served>> swapped;
    try {
      swapped = reload(run_dir, adapters ? &*adapters : nullptr);
    } catch (const AdapterError& e) {
      throw serve::RequestError(422, "adapters." + e.name, e.what());
    } catch (const Error& e) {
      throw serve::RequestError(422, "run_dir", e.what());
    }
    ojson out;
    out["model_version"] = swapped.second->base->version;
    out["run_dir"] = swapped.second->base->run_dir;
    out["previous_model_version"] = swapped.first->base->version;
    out["adapters"] = ojson::object();
    for (const auto& [name, m] : swapped.second->adapters) {
      out["adapters"][name] = {{"model_version", m->version}, {"run_dir", m->run_dir}};
    }
    out["seconds"] = std::chrono::duration<double>(Clock::now() - start).count();
    res.set_content(dump(out), "application/json");
  }

  /// Runs a handler, mapping its exceptions to JSON errors.
  template <class F>
  void guarded(httplib::Response& res, F&& f) {
    try {
      f();
    } catch (const serve::RequestError& e) {
      reply_error(res, e.status(), e.field(), e.what());
    } catch (const serve::QueueFull& e) {
      res.set_header("Retry-After", "1");
      reply_error(res, 503, "", std::string("overloaded: ") + e.what());
    } catch (const std::exception& e) {
      log::warn("serve", std::string("internal error: ") + e.what());
      reply_error(res, 500, "", "internal error (see the server's log)");
    }
  }

  void routes() {
    http->set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      request_start = Clock::now();
      using R = httplib::Server::HandlerResponse;
      // Health checks and the page's static files need no key (the page asks for one).
      if (req.path == "/healthz" || req.path == "/readyz" || req.path == "/" || req.path == "/app.js") return R::Unhandled;
      const auto authorization = req.get_header_value("Authorization");
      if (req.path.rfind("/v1/admin/", 0) == 0) {
        // API keys never grant admin; without admin keys, admin is open only on a server that
        // asks for no keys at all.
        if (admin_keys.empty() && keys.empty()) return R::Unhandled;
        if (admin_keys.empty()) {
          reply_error(res, 403, "", "the admin endpoints are off: set serve.admin_keys_file (or send the server SIGHUP to reload)");
          return R::Handled;
        }
        if (admin_keys.accepts(authorization)) return R::Unhandled;
        res.set_header("WWW-Authenticate", "Bearer");
        reply_error(res, 401, "Authorization", "a valid admin key is required: send 'Authorization: Bearer ADMIN_KEY'");
        return R::Handled;
      }
      if (keys.empty() || keys.accepts(authorization)) return R::Unhandled;
      res.set_header("WWW-Authenticate", "Bearer");
      reply_error(res, 401, "Authorization", "a valid API key is required: send 'Authorization: Bearer KEY'");
      return R::Handled;
    });
    http->Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("{\"status\":\"ok\"}", "application/json");
    });
    http->Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
      const auto s = served();
      ojson j;
      j["status"] = s ? "ready" : "loading";
      j["model_version"] = s ? ojson(s->base->version) : ojson(nullptr);
      res.status = s ? 200 : 503;
      res.set_content(dump(j), "application/json");
    });
    // The web page: static, no data in it; what it shows comes from the API with the key.
    const auto page = [](std::string_view content, const char* type) {
      return [content, type](const httplib::Request&, httplib::Response& res) {
        res.set_header("Content-Security-Policy",
                       "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src blob:; "
                       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
        res.set_header("X-Content-Type-Options", "nosniff");
        res.set_header("Referrer-Policy", "no-referrer");
        res.set_header("Cache-Control", "no-cache");
        res.set_content(content.data(), content.size(), type);
      };
    };
    http->Get("/", page(serve::web::kIndexHtml, "text/html; charset=utf-8"));
    http->Get("/app.js", page(serve::web::kAppJs, "text/javascript; charset=utf-8"));
    http->Get("/v1/model", [this](const httplib::Request&, httplib::Response& res) {
      const auto s = served();
      const auto& m = s->base;
      ojson j;
      j["model_version"] = m->version;
      j["intents"] = ojson::array();
      for (const auto& intent : m->predictor->intents()) {
        j["intents"].push_back({{"intent", intent}, {"display_name", m->predictor->rewriter().display_name(intent)}});
      }
      j["inputs"] = ojson::array();
      for (const auto& modality : m->predictor->config().model.modalities) j["inputs"].push_back(modality);
      j["adapters"] = ojson::array();
      for (const auto& [name, a] : s->adapters) j["adapters"].push_back({{"name", name}, {"model_version", a->version}});
      j["feedback"] = feedback != nullptr;
      res.set_content(dump(j), "application/json");
    });
    http->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      metrics.set("mmintent_queue_inputs", {}, static_cast<double>(batcher->queued()));
      res.set_content(metrics.render(), "text/plain; version=0.0.4; charset=utf-8");
    });
    http->Post("/v1/predict", [this](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] {
        require_json(req);
        handle_predict(req, res);
      });
    });
    http->Post("/v1/feedback", [this](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] {
        require_json(req);
        handle_feedback(req, res);
      });
    });
    http->Post("/v1/admin/reload", [this](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] { handle_reload(req, res); });
    });
    http->set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // already JSON
      switch (res.status) {
        case 404: reply_error(res, 404, "", "no such endpoint: " + req.method + " " + req.path); break;
        case 405: reply_error(res, 405, "", "method not allowed: " + req.method + " " + req.path); break;
        case 413:
          reply_error(res, 413, "", "the request body is larger than serve.max_body_bytes = " + std::to_string(config.max_body_bytes));
          break;
        default: reply_error(res, res.status, "", "the request failed (HTTP " + std::to_string(res.status) + ")"); break;
      }
      return httplib::Server::HandlerResponse::Handled;
    }));
    http->set_exception_handler([this](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      log::warn("serve", "internal error: " + what);
      reply_error(res, 500, "", "internal error (see the server's log)");
    });
    http->set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      const auto endpoint = endpoint_of(req.path);
      metrics.add("mmintent_requests_total", {{"endpoint", endpoint}, {"status", std::to_string(res.status)}});
      if (request_start) {
        const double seconds = std::chrono::duration<double>(Clock::now() - *request_start).count();
        metrics.observe("mmintent_request_seconds", {{"endpoint", endpoint}}, seconds);
        request_start.reset();
      }
      if (res.status >= 500) log::warn("serve", req.method + " " + req.path + " " + std::to_string(res.status));
    });
  }
};

Server::Server(const std::string& run_dir, const ServeConfig& config, const PredictorOptions& predictor)
    : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.config = config;
  m.predictor_options = predictor;
  if (!config.api_keys_file.empty()) {
    m.keys = serve::ApiKeys::load(config.api_keys_file);
  } else if (!is_loopback(config.host) && !config.allow_unauthenticated) {
    throw Error("serve.host: binding " + config.host +
                " without API keys would let anyone on the network call the model; set "
                "serve.api_keys_file, bind a loopback address (127.0.0.1), or set "
                "serve.allow_unauthenticated: true");
  }
  if (!config.admin_keys_file.empty()) {
    m.admin_keys = serve::ApiKeys::load(config.admin_keys_file, "serve.admin_keys_file");
    if (m.admin_keys.overlaps(m.keys)) {
      throw Error("serve.admin_keys_file: a key in " + config.admin_keys_file + " is also in serve.api_keys_file " +
                  config.api_keys_file + "; an admin key must be a key of its own");
    }
  }
  std::random_device rd;
  m.id_salt = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  m.declare_metrics();
  m.publish(load_served(run_dir, config.adapters, predictor));
  if (!config.feedback_log.empty()) {
    namespace fs = std::filesystem;
    const fs::path log(config.feedback_log);
    std::error_code ec;
    if (!log.parent_path().empty() && !fs::is_directory(log.parent_path(), ec)) {
      throw Error("serve.feedback_log: the folder " + log.parent_path().string() + " does not exist");
    }
    m.images_folder = log.stem().string() + "_images";
    m.images_dir = (log.parent_path() / m.images_folder).string();
    fs::create_directories(m.images_dir, ec);
    if (ec) throw Error("serve.feedback_log: cannot create " + m.images_dir + ": " + ec.message());
    m.audio_folder = log.stem().string() + "_audio";
    m.audio_dir = (log.parent_path() / m.audio_folder).string();  // made at the first upload
    m.feedback = std::make_unique<serve::FeedbackLogWriter>(config.feedback_log);
  }
  if (!config.tls.cert.empty()) {
    auto tls = std::make_unique<httplib::SSLServer>(config.tls.cert.c_str(), config.tls.key.c_str());
    if (!tls->is_valid()) {
      throw Error("serve.tls: cannot use the certificate " + config.tls.cert + " with the key " + config.tls.key +
                  " (not PEM, not a pair, or unreadable)");
    }
    m.http = std::move(tls);
  } else {
    m.http = std::make_unique<httplib::Server>();
  }
  // Forward passes run one at a time on the batcher's thread (with max_batch 1: one request
  // per pass): passes on several threads at once would each start LibTorch's thread team and
  // oversubscribe the cores (measured on 2 cores: 8 connections gave 3 requests/s).
  serve::BatcherOptions bo;
  bo.max_batch = config.max_batch;
  bo.max_wait = std::chrono::microseconds(static_cast<int64_t>(config.max_wait_ms * 1000));
  bo.max_queue = config.max_queue;
  auto* metrics = &m.metrics;
  m.batcher = std::make_unique<serve::MicroBatcher>(
      bo, [metrics](int64_t n) { metrics->observe("mmintent_batch_size", {}, static_cast<double>(n)); });
  const auto threads = static_cast<std::size_t>(config.threads);
  m.http->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  m.http->set_payload_max_length(static_cast<std::size_t>(config.max_body_bytes));
  // Without TCP_NODELAY a small response waits for the client's delayed ACK (Nagle): measured
  // 50 ms per request at one connection instead of a few.
  m.http->set_tcp_nodelay(true);
  const auto timeout = [](double s) { return std::chrono::microseconds(static_cast<int64_t>(s * 1e6)); };
  m.http->set_read_timeout(timeout(config.read_timeout_s));
  m.http->set_write_timeout(timeout(config.write_timeout_s));
  m.routes();
}

Server::~Server() {
  stop();
}

int Server::bind() {
  auto& m = *impl_;
  if (m.config.port == 0) {
    m.port = m.http->bind_to_any_port(m.config.host);
    if (m.port < 0) throw Error("serve: cannot bind " + m.config.host + " (any port)");
  } else {
    if (!m.http->bind_to_port(m.config.host, static_cast<int>(m.config.port))) {
      throw Error("serve: cannot bind " + m.config.host + ":" + std::to_string(m.config.port) +
                  " (in use, or not an address of this machine)");
    }
    m.port = static_cast<int>(m.config.port);
  }
  if (m.keys.empty()) {
    log::warn("serve", "no serve.api_keys_file: every client is accepted" +
                           std::string(is_loopback(m.config.host) ? " (loopback only)" : ""));
  }
  return m.port;
}

void Server::run() {
  if (impl_->port < 0) bind();
  impl_->http->listen_after_bind();
}

void Server::stop() {
  if (impl_ && impl_->http->is_running()) impl_->http->stop();
}

std::string Server::model_version() const { return impl_->served()->base->version; }

std::string Server::reload(const std::string& run_dir) { return impl_->reload(run_dir, nullptr).second->base->version; }

std::string Server::reload(const std::string& run_dir, const std::map<std::string, std::string>& adapters) {
  return impl_->reload(run_dir, &adapters).second->base->version;
}

std::map<std::string, std::string> Server::adapter_versions() const {
  std::map<std::string, std::string> versions;
  for (const auto& [name, m] : impl_->served()->adapters) versions[name] = m->version;
  return versions;
}

bool Server::tls() const { return !impl_->config.tls.cert.empty(); }

}  // namespace mmintent

#pragma once
/// `mmintent serve`: a trained run directory behind an HTTP API (cpp-httplib), for a product
/// to call. Endpoints (docs/SERVING.md):
///   POST /v1/predict  one request {"text", "image" (base64), "top_k", "rewrite"} or an array
///                     of them; concurrent requests share forward passes (micro-batching)
///   GET  /healthz     the process is up;  GET /readyz  the model is loaded
///   GET  /metrics     Prometheus text format
///   POST /v1/feedback a reaction to a prediction, appended to serve.feedback_log (durable)
///   POST /v1/admin/reload  {"run_dir", "adapters"} or empty: swap in another run (admin key)
/// serve.adapters holds low-rank adapter runs over the served run; a request's "adapter" field
/// picks one (none: the run itself).
/// Every endpoint but the health checks needs "Authorization: Bearer KEY" when
/// serve.api_keys_file is set. Errors are JSON {"error": {"status", "field", "message"}}.

#include "mmintent/config/config.h"
#include "mmintent/inference/predictor.h"

#include <map>
#include <memory>
#include <string>

namespace mmintent {

class Server {
 public:
  /// Loads the run directory (Predictor::load) and the API keys; `config` is the `serve:`
  /// section to use (the run's, with overrides). Checks the bind rules: without keys, only a
  /// loopback host unless allow_unauthenticated. Throws Error/ConfigError naming what is wrong.
  Server(const std::string& run_dir, const ServeConfig& config, const PredictorOptions& predictor = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Binds config.host:config.port (port 0: a free one) and returns the port. Throws Error
  /// when the address cannot be bound.
  int bind();
  /// Serves until stop(): blocks. Requests in flight when stop() is called are finished.
  void run();
  /// Stops accepting and makes run() return; safe from any thread.
  void stop();
  /// The served model's version: the SHA-256 (hex) of its weights file.
  std::string model_version() const;
  /// Loads `run_dir` (empty: the served run directory again, e.g. after its folder or link was
  /// replaced) and swaps it in: requests in flight finish on the model they started with, new
  /// ones get the new one, none fails. Returns the new version. Throws Error naming the run
  /// when it cannot be loaded; the served model then stays. Safe from any thread.
  std::string reload(const std::string& run_dir = "");
  /// As reload(run_dir), with `adapters` (name -> adapter run directory) served over it instead
  /// of the ones served now; all are loaded and checked before any is swapped in.
  std::string reload(const std::string& run_dir, const std::map<std::string, std::string>& adapters);
  /// The served adapters' versions (SHA-256 of each adapter.pt), by name.
  std::map<std::string, std::string> adapter_versions() const;
  /// True when serving HTTPS (serve.tls).
  bool tls() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mmintent

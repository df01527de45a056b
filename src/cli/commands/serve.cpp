// mmintent serve RUN_DIR [--host H] [--port N] [--adapter NAME=DIR ...] [KEY=VALUE ...]
#include "command.h"

#include "mmintent/core/log.h"
#include "mmintent/run/run_directory.h"
#include "mmintent/serve/server.h"
#include "mmintent/training/device.h"

#include <csignal>
#include <iostream>
#include <memory>
#include <optional>
#include <thread>

namespace mmintent::cli {

Command add_serve(CLI::App& app) {
  struct State {
    std::string run_dir, host, device;
    std::optional<int64_t> port;
    std::vector<std::string> overrides, adapters;
  };
  auto s = std::make_shared<State>();
  auto* cmd = app.add_subcommand("serve", "Serve a trained run over HTTP (POST /v1/predict, /v1/feedback, /v1/admin/reload; GET /healthz, /readyz, /metrics); SIGHUP reloads the run");
  cmd->footer("Example:\n  mmintent serve runs/demo --port 8080 serve.max_batch=16");
  cmd->add_option("run_dir", s->run_dir, "Run directory written by 'train' or 'tune'")->required();
  cmd->add_option("--host", s->host, "Address to bind (serve.host; default 127.0.0.1)");
  cmd->add_option("--port", s->port, "Port (serve.port; default 8080, 0 = any free port)")->check(CLI::Range(0, 65535));
  cmd->add_option("--adapter", s->adapters,
                  "NAME=DIR: serve the adapter run DIR (tune.method=lora over this run) to requests with "
                  "\"adapter\": \"NAME\" (serve.adapters.NAME; repeatable)");
  cmd->add_option("--device", s->device, "auto, cpu, cuda or cuda:N (default: the run's runtime.device, as for eval)");
  cmd->add_option("overrides", s->overrides,
                  "Dotted KEY=VALUE overrides of the run's config, e.g. serve.max_batch=32 serve.api_keys_file=keys.txt");
  return {cmd, [s]() -> int {
            auto overrides = s->overrides;
            if (!s->host.empty()) overrides.push_back("serve.host=" + s->host);
            if (s->port) overrides.push_back("serve.port=" + std::to_string(*s->port));
            for (const auto& a : s->adapters) {
              const auto eq = a.find('=');
              if (eq == std::string::npos || eq == 0 || eq + 1 == a.size()) {
                return fail(kUsage, "--adapter '" + a + "': expected NAME=DIR, e.g. --adapter support=runs/support_lora");
              }
              if (!ServeConfig::valid_adapter_name(a.substr(0, eq))) {
                return fail(kUsage, "--adapter '" + a + "': an adapter's name is 1 to 64 letters, digits, '_' or '-'");
              }
              // Quoted, so that any path reads as a string.
              std::string dir;
              for (const char ch : a.substr(eq + 1)) dir += (ch == '"' || ch == '\\') ? std::string("\\") + ch : std::string(1, ch);
              overrides.push_back("serve.adapters." + a.substr(0, eq) + "=\"" + dir + "\"");
            }
            const RunDirectory run(s->run_dir);
            run.require_finished();
            const Config config = run.load_config(overrides);
            // SIGINT/SIGTERM/SIGHUP reach one thread, which stops the server or reloads the
            // run; every other thread, including the server's, inherits the blocked mask.
            sigset_t signals;
            sigemptyset(&signals);
            sigaddset(&signals, SIGINT);
            sigaddset(&signals, SIGTERM);
            sigaddset(&signals, SIGHUP);
            pthread_sigmask(SIG_BLOCK, &signals, nullptr);
            PredictorOptions po;
            po.device = s->device;
            po.explore_epsilon = config.decision.explore.epsilon;  // the run's, or an override's
            configure_threads(static_cast<int>(config.runtime.threads));  // 0 = one per core
            Server server(s->run_dir, config.serve, po);
            const int port = server.bind();
            std::thread waiter([&server, signals] {
              for (;;) {
                int sig = 0;
                sigwait(&signals, &sig);
                if (sig == SIGHUP) {
                  // Reload the same path (e.g. a link moved to the output of `mmintent tune`).
                  try {
                    server.reload();
                  } catch (const std::exception& e) {
                    log::warn("serve", std::string("SIGHUP: ") + e.what());
                  }
                  continue;
                }
                log::info("serve", std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
                                       ": finishing the requests in flight");
                server.stop();
                return;
              }
            });
            std::string with;
            for (const auto& [name, version] : server.adapter_versions()) {
              with += (with.empty() ? ", adapters " : ", ") + name + " " + version.substr(0, 12);
            }
            std::cout << "serving " << s->run_dir << " (model " << server.model_version().substr(0, 12) << with << ") on " << (server.tls() ? "https" : "http") << "://"
                      << (config.serve.host.find(':') != std::string::npos ? "[" + config.serve.host + "]" : config.serve.host)
                      << ":" << port << std::endl;
            server.run();
            // The waiter returns only on a signal: send it one if run() ended otherwise.
            pthread_kill(waiter.native_handle(), SIGTERM);
            waiter.join();
            std::cout << "stopped" << std::endl;
            return kOk;
          }};
}

}  // namespace mmintent::cli

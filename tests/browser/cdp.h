#pragma once
/// A small client of Chrome's DevTools protocol (CDP) for browser tests: a headless Chromium
/// started with --remote-debugging-port, one page target, commands over a WebSocket (RFC 6455,
/// plain TCP on loopback). Enough to load a page, type, attach a file, click and read the DOM.

#include <nlohmann/json.hpp>

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

namespace mmintent::test {

/// A WebSocket client connection (text messages only).
class WebSocket {
 public:
  /// Connects to ws://host:port/path and completes the opening handshake; throws
  /// std::runtime_error saying what failed.
  WebSocket(const std::string& host, int port, const std::string& path);
  ~WebSocket();
  WebSocket(const WebSocket&) = delete;
  WebSocket& operator=(const WebSocket&) = delete;

  void send(const std::string& text);
  /// The next text message; throws on timeout or when the peer closes.
  std::string receive(double timeout_seconds);

 private:
  void read_some(double timeout_seconds);
  std::string take(std::size_t n, double timeout_seconds);
  int fd_ = -1;
  std::string buffer_;
};

/// A headless Chromium with a remote-debugging port and a profile of its own, killed (and its
/// profile removed) on destruction.
class Chromium {
 public:
  /// The browser to run: $MMINTENT_CHROMIUM, else chromium, chromium-browser or google-chrome
  /// on PATH; "" when there is none.
  static std::string find();
  /// Starts `exe` and waits (at most `timeout_seconds`) for its DevTools endpoint; throws
  /// std::runtime_error with the browser's last output when it does not come up.
  Chromium(const std::string& exe, const std::filesystem::path& work_dir, double timeout_seconds = 60);
  ~Chromium();
  Chromium(const Chromium&) = delete;
  Chromium& operator=(const Chromium&) = delete;

  int port() const { return port_; }
  /// The WebSocket path of the first page target (ws://127.0.0.1:port/devtools/page/...).
  std::string page_path() const;

 private:
  pid_t pid_ = -1;
  int port_ = -1;
  std::filesystem::path profile_, log_;
};

/// Commands to one page target.
class Cdp {
 public:
  Cdp(int port, const std::string& path);
  /// Sends a command and returns its "result"; throws std::runtime_error with the error.
  nlohmann::json call(const std::string& method, const nlohmann::json& params = nlohmann::json::object(),
                      double timeout_seconds = 30);
  /// The value of a JavaScript expression in the page (promises awaited); throws when it
  /// throws.
  nlohmann::json evaluate(const std::string& expression);
  /// Evaluates `expression` until it is true (at most `timeout_seconds`); false on timeout.
  bool wait_for(const std::string& expression, double timeout_seconds = 30);
  /// Exceptions thrown in the page and console errors seen so far (Runtime events).
  const std::vector<std::string>& page_errors() const { return page_errors_; }

 private:
  void note_event(const nlohmann::json& message);
  WebSocket socket_;
  int next_id_ = 0;
  std::vector<std::string> page_errors_;
};

}  // namespace mmintent::test

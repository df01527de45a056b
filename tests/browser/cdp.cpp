#include "browser/cdp.h"

#include <httplib.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace mmintent::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

Clock::time_point after(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

double seconds_left(Clock::time_point deadline) {
  return std::chrono::duration<double>(deadline - Clock::now()).count();
}

std::string tail_of(const fs::path& file, std::size_t bytes = 2000) {
  std::ifstream in(file);
  std::stringstream s;
  s << in.rdbuf();
  const auto text = s.str();
  return text.size() > bytes ? text.substr(text.size() - bytes) : text;
}

}  // namespace

// ---- WebSocket -------------------------------------------------------------------------

WebSocket::WebSocket(const std::string& host, int port, const std::string& path) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd_ < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) throw std::runtime_error("not an IPv4 address: " + host);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd_);
    fd_ = -1;
    throw std::runtime_error("cannot connect to " + host + ":" + std::to_string(port) + ": " + why);
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // No Origin header: Chromium then accepts the connection without --remote-allow-origins.
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: " + host + ":" + std::to_string(port) +
                              "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Key: bW1pbnRlbnQtdGVzdC1rZXk=\r\nSec-WebSocket-Version: 13\r\n\r\n";
  if (::send(fd_, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    throw std::runtime_error("cannot send the WebSocket handshake");
  }
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  std::size_t end;
  while ((end = buffer_.find("\r\n\r\n")) == std::string::npos) read_some(seconds_left(deadline));
  const std::string head = buffer_.substr(0, end);
  buffer_.erase(0, end + 4);
  if (head.find(" 101 ") == std::string::npos) throw std::runtime_error("WebSocket handshake refused: " + head);
}

WebSocket::~WebSocket() {
  if (fd_ >= 0) ::close(fd_);
}

void WebSocket::read_some(double timeout_seconds) {
  if (timeout_seconds <= 0) throw std::runtime_error("timed out waiting for the browser");
  pollfd p{fd_, POLLIN, 0};
  const int ready = ::poll(&p, 1, static_cast<int>(timeout_seconds * 1000) + 1);
  if (ready == 0) throw std::runtime_error("timed out waiting for the browser");
  if (ready < 0) throw std::runtime_error(std::string("poll: ") + std::strerror(errno));
  char chunk[1 << 16];
  const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
  if (n <= 0) throw std::runtime_error("the browser closed the connection");
  buffer_.append(chunk, static_cast<std::size_t>(n));
}

std::string WebSocket::take(std::size_t n, double timeout_seconds) {
  const auto deadline = after(timeout_seconds);
  while (buffer_.size() < n) read_some(seconds_left(deadline));
  std::string out = buffer_.substr(0, n);
  buffer_.erase(0, n);
  return out;
}

void WebSocket::send(const std::string& text) {
  std::string frame;
  frame += static_cast<char>(0x81);  // FIN, text
  const std::size_t n = text.size();
  if (n < 126) {
    frame += static_cast<char>(0x80 | n);  // masked (a client must mask)
  } else if (n <= 0xFFFF) {
    frame += static_cast<char>(0x80 | 126);
    frame += static_cast<char>(n >> 8);
    frame += static_cast<char>(n & 0xFF);
  } else {
    frame += static_cast<char>(0x80 | 127);
    for (int shift = 56; shift >= 0; shift -= 8) frame += static_cast<char>((static_cast<uint64_t>(n) >> shift) & 0xFF);
  }
  const unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
  frame.append(reinterpret_cast<const char*>(mask), 4);
  for (std::size_t i = 0; i < n; ++i) frame += static_cast<char>(text[i] ^ mask[i % 4]);
  std::size_t sent = 0;
  while (sent < frame.size()) {
    const ssize_t k = ::send(fd_, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL);
    if (k <= 0) throw std::runtime_error("cannot send to the browser");
    sent += static_cast<std::size_t>(k);
  }
}

std::string WebSocket::receive(double timeout_seconds) {
  const auto deadline = after(timeout_seconds);
  std::string message;
  for (;;) {
    const std::string head = take(2, seconds_left(deadline));
    const bool fin = (head[0] & 0x80) != 0;
    const int opcode = head[0] & 0x0F;
    uint64_t length = static_cast<unsigned char>(head[1]) & 0x7F;
    if (length == 126) {
      const auto ext = take(2, seconds_left(deadline));
      length = (uint64_t(static_cast<unsigned char>(ext[0])) << 8) | static_cast<unsigned char>(ext[1]);
    } else if (length == 127) {
      const auto ext = take(8, seconds_left(deadline));
      length = 0;
      for (char c : ext) length = (length << 8) | static_cast<unsigned char>(c);
    }
    std::string mask;
    if (static_cast<unsigned char>(head[1]) & 0x80) mask = take(4, seconds_left(deadline));
    std::string payload = take(static_cast<std::size_t>(length), seconds_left(deadline));
    if (!mask.empty()) {
      for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(payload[i] ^ mask[i % 4]);
    }
    if (opcode == 0x8) throw std::runtime_error("the browser closed the WebSocket");
    if (opcode == 0x9 || opcode == 0xA) continue;  // ping, pong: nothing to answer for a test
    message += payload;
    if (fin) return message;
  }
}

// ---- Chromium --------------------------------------------------------------------------

std::string Chromium::find() {
  if (const char* exe = std::getenv("MMINTENT_CHROMIUM"); exe && *exe) return exe;
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    for (const char* name : {"chromium", "chromium-browser", "google-chrome"}) {
      const auto candidate = fs::path(dir) / name;
      if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
    }
  }
  return "";
}

Chromium::Chromium(const std::string& exe, const fs::path& work_dir, double timeout_seconds) {
  profile_ = work_dir / "chromium_profile";
  log_ = work_dir / "chromium.log";
  fs::remove_all(profile_);
  fs::create_directories(profile_);
  std::vector<std::string> args = {exe,
                                   "--headless=new",
                                   "--disable-gpu",
                                   "--disable-dev-shm-usage",
                                   "--no-first-run",
                                   "--no-default-browser-check",
                                   "--disable-extensions",
                                   "--disable-background-networking",
                                   "--disable-component-update",
                                   "--disable-sync",
                                   "--user-data-dir=" + profile_.string(),
                                   "--remote-debugging-address=127.0.0.1",
                                   "--remote-debugging-port=0",  // it writes the port it took
                                   "about:blank"};
  if (::geteuid() == 0) args.insert(args.begin() + 1, "--no-sandbox");  // Chromium's sandbox refuses root
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log = log_.string();
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid_ == 0) {
    ::setpgid(0, 0);  // its own group: the renderer and helper processes go with it
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::setpgid(pid_, pid_);
  const auto deadline = after(timeout_seconds);
  const auto port_file = profile_ / "DevToolsActivePort";
  while (Clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("Chromium exited at start (status " + std::to_string(status) + "): " + tail_of(log_));
    }
    std::ifstream in(port_file);
    int port = 0;
    if (in >> port && port > 0) {
      port_ = port;
      httplib::Client client("127.0.0.1", port_);
      if (auto r = client.Get("/json/version"); r && r->status == 200) return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ::kill(-pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
  throw std::runtime_error("Chromium did not open its DevTools port within " + std::to_string(timeout_seconds) +
                           " s: " + tail_of(log_));
}

Chromium::~Chromium() {
  if (pid_ > 0) {
    const pid_t group = pid_;
    ::kill(-group, SIGTERM);
    bool reaped = false;
    for (int i = 0; i < 50 && !reaped; ++i) {
      reaped = ::waitpid(pid_, nullptr, WNOHANG) == pid_;
      if (!reaped) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ::kill(-group, SIGKILL);  // the browser if it is still up, and helpers left in its group
    if (!reaped) ::waitpid(pid_, nullptr, 0);
  }
  std::error_code ec;
  fs::remove_all(profile_, ec);
}

std::string Chromium::page_path() const {
  httplib::Client client("127.0.0.1", port_);
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < deadline) {
    if (auto r = client.Get("/json/list"); r && r->status == 200) {
      for (const auto& target : nlohmann::json::parse(r->body)) {
        if (target.value("type", "") != "page") continue;
        const std::string url = target.value("webSocketDebuggerUrl", "");
        const auto slash = url.find('/', std::string("ws://").size());
        if (slash != std::string::npos) return url.substr(slash);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  throw std::runtime_error("Chromium lists no page target");
}

// ---- Cdp -------------------------------------------------------------------------------

Cdp::Cdp(int port, const std::string& path) : socket_("127.0.0.1", port, path) {}

void Cdp::note_event(const nlohmann::json& message) {
  const std::string method = message.value("method", "");
  if (method == "Runtime.exceptionThrown") {
    page_errors_.push_back("exception: " + message["params"]["exceptionDetails"].dump());
  } else if (method == "Runtime.consoleAPICalled" && message["params"].value("type", "") == "error") {
    page_errors_.push_back("console.error: " + message["params"]["args"].dump());
  }
}

nlohmann::json Cdp::call(const std::string& method, const nlohmann::json& params, double timeout_seconds) {
  const int id = ++next_id_;
  socket_.send(nlohmann::json{{"id", id}, {"method", method}, {"params", params}}.dump());
  const auto deadline = after(timeout_seconds);
  for (;;) {
    const auto message = nlohmann::json::parse(socket_.receive(seconds_left(deadline)));
    if (!message.contains("id")) {
      note_event(message);
      continue;
    }
    if (message["id"] != id) continue;
    if (message.contains("error")) throw std::runtime_error(method + ": " + message["error"].dump());
    return message.value("result", nlohmann::json::object());
  }
}

nlohmann::json Cdp::evaluate(const std::string& expression) {
  const auto r = call("Runtime.evaluate", {{"expression", expression}, {"returnByValue", true}, {"awaitPromise", true}});
  if (r.contains("exceptionDetails")) {
    throw std::runtime_error("page script failed: " + expression + ": " + r["exceptionDetails"].dump());
  }
  return r["result"].value("value", nlohmann::json());
}

bool Cdp::wait_for(const std::string& expression, double timeout_seconds) {
  const auto deadline = after(timeout_seconds);
  while (Clock::now() < deadline) {
    // (a page still loading may not have the elements yet: that is "not yet", not a failure)
    const auto v = evaluate("(() => { try { return Boolean(" + expression + "); } catch (e) { return false; } })()");
    if (v.is_boolean() && v.get<bool>()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

}  // namespace mmintent::test

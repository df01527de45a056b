#include "support/cli.h"

#include "support/support.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace mmintent::test {
namespace fs = std::filesystem;

int free_tcp_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  const bool ok = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  if (fd >= 0) ::close(fd);
  if (!ok) throw std::runtime_error(std::string("no free TCP port: ") + std::strerror(errno));
  return ntohs(addr.sin_port);
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string CliResult::error_line() const {
  std::istringstream in(err);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("mmintent: error:", 0) == 0) return line;
  }
  return "";
}

std::string CliResult::dump() const {
  return "exit " + std::to_string(code) + "\n--- stdout\n" + out + "\n--- stderr\n" + err;
}

CliProcess::CliProcess(const std::string& exe, const std::vector<std::string>& args,
                       const fs::path& cwd, const std::vector<std::string>& env,
                       const fs::path& log_dir) {
  static std::atomic<int> counter{0};
  fs::create_directories(log_dir);
  const std::string n = std::to_string(::getpid()) + "_" + std::to_string(counter++);
  out_path_ = log_dir / (n + ".out");
  err_path_ = log_dir / (n + ".err");
  // Everything the child needs is built before fork: between fork and exec only
  // async-signal-safe calls are allowed (the parent runs LibTorch's threads).
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) {
    const std::string entry(*e);
    const auto name = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const auto& x : env) replaced = replaced || x.substr(0, x.find('=')) == name;
    if (!replaced) env_strings.push_back(entry);
  }
  for (const auto& x : env) env_strings.push_back(x);
  std::vector<char*> envp, argv;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> arg_strings{exe};
  arg_strings.insert(arg_strings.end(), args.begin(), args.end());
  for (auto& s : arg_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  const std::string dir = cwd.string(), out = out_path_.string(), err = err_path_.string();

  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid_ == 0) {
    const int in_fd = ::open("/dev/null", O_RDONLY);
    const int out_fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err_fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in_fd < 0 || out_fd < 0 || err_fd < 0 || ::chdir(dir.c_str()) != 0) ::_exit(126);
    ::dup2(in_fd, 0);
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
}

CliProcess::~CliProcess() {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
}

void CliProcess::kill(int signal) const {
  if (pid_ > 0 && !reaped_) ::kill(pid_, signal);
}

CliResult CliProcess::wait(double timeout_seconds) {
  CliResult r;
  if (reaped_) throw std::logic_error("CliProcess::wait called twice");
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000));
  int status = 0;
  for (;;) {
    const pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) break;
    if (done < 0) throw std::runtime_error(std::string("waitpid: ") + std::strerror(errno));
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  reaped_ = true;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
  r.out = read_file(out_path_.string());
  r.err = read_file(err_path_.string());
  return r;
}

CliResult run_cli(const std::string& exe, const std::vector<std::string>& args, const fs::path& cwd,
                  const std::vector<std::string>& env, const fs::path& log_dir) {
  CliProcess p(exe, args, cwd, env, log_dir.empty() ? cwd / "cli_logs" : log_dir);
  return p.wait();
}

}  // namespace mmintent::test

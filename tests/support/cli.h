#pragma once
/// Running the `mmintent` executable from tests: one call at a time (run_cli), or several
/// processes at once (CliProcess: the ranks of a multi-process run), each with its own
/// working directory, extra environment variables and captured stdout and stderr.

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

namespace mmintent::test {

/// A loopback TCP port that was free a moment ago (bound to port 0, then released): for the
/// rendezvous of multi-process runs in tests.
int free_tcp_port();

/// `s` quoted for a POSIX shell.
std::string shell_quote(const std::string& s);

struct CliResult {
  int code = -1;  ///< exit status; 128 + N when killed by signal N
  std::string out, err;
  /// The "mmintent: error: ..." line of stderr, or "" when there is none.
  std::string error_line() const;
  std::string dump() const;
};

/// A started process; its stdout and stderr go to files under `log_dir`.
class CliProcess {
 public:
  /// Starts `exe args...` in `cwd` with the environment plus `env` ("NAME=value" entries,
  /// which replace variables of the same name).
  CliProcess(const std::string& exe, const std::vector<std::string>& args,
             const std::filesystem::path& cwd, const std::vector<std::string>& env,
             const std::filesystem::path& log_dir);
  ~CliProcess();  ///< kills (SIGKILL) and reaps a process that is still running
  CliProcess(const CliProcess&) = delete;
  CliProcess& operator=(const CliProcess&) = delete;

  pid_t pid() const { return pid_; }
  /// Sends `signal` to the process.
  void kill(int signal) const;
  /// Waits for the process to end (at most `timeout_seconds`, then SIGKILL) and collects it.
  CliResult wait(double timeout_seconds = 600);

 private:
  pid_t pid_ = -1;
  std::filesystem::path out_path_, err_path_;
  bool reaped_ = false;
};

/// Runs `exe args...` to completion (see CliProcess).
CliResult run_cli(const std::string& exe, const std::vector<std::string>& args,
                  const std::filesystem::path& cwd, const std::vector<std::string>& env = {},
                  const std::filesystem::path& log_dir = {});

}  // namespace mmintent::test

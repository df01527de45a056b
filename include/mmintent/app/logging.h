#pragma once
/// Routes mmintent's log lines to spdlog: the console, and optionally a file in the run dir.

#include <string>

namespace mmintent {

/// The console's level for the rest of the process: "debug", "info" (the default), "warn" or
/// "error" (the CLI's --log-level, MMINTENT_LOG_LEVEL). Throws Error naming the accepted values.
void set_console_log_level(const std::string& level);

/// Lines at `level` and above go to the console ("": the level set_console_log_level chose);
/// with `file` (a run's log), lines at info and above (debug too when the console shows debug)
/// also go there, whatever the console shows. Safe to call again (e.g. to add a file). `tag`
/// (e.g. "rank 1" in a multi-process run) goes in front of every line.
void setup_logging(const std::string& level = "", const std::string& file = "",
                   const std::string& tag = "");

}  // namespace mmintent

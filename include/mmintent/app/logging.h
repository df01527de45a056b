#pragma once
/// Routes mmintent's log lines to spdlog: the console, and optionally a file in the run dir.

#include <string>

namespace mmintent {

/// level: "debug", "info", "warn" or "error". Safe to call again (e.g. to add a file).
/// `tag` (e.g. "rank 1" in a multi-process run) goes in front of every line.
void setup_logging(const std::string& level = "info", const std::string& file = "",
                   const std::string& tag = "");

}  // namespace mmintent

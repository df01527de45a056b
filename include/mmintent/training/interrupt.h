#pragma once
/// Graceful stop on SIGINT/SIGTERM: the trainer finishes the current batch, keeps the
/// checkpoints of the last completed epoch (last.pt, best.pt) untouched, and throws
/// Interrupted; `--resume auto` then continues exactly from the end of that epoch.

#include "mmintent/error.h"

namespace mmintent {

/// Thrown by the trainer when a stop was requested.
class Interrupted : public Error {
 public:
  explicit Interrupted(const std::string& what) : Error(what) {}
};

/// Installs handlers for SIGINT and SIGTERM that request a stop; a second signal of either
/// kind terminates the process at once (the default action).
void install_stop_handlers();
/// Asks running trainers to stop after their current batch (async-signal-safe).
void request_stop();
bool stop_requested();
void clear_stop_request();

}  // namespace mmintent

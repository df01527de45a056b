#include "mmintent/training/interrupt.h"

#include <atomic>
#include <csignal>

namespace mmintent {
namespace {

std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free, "the stop flag must be signal-safe");

extern "C" void on_stop_signal(int signal) {
  g_stop.store(true);
  std::signal(signal == SIGINT ? SIGTERM : SIGINT, SIG_DFL);
  std::signal(signal, SIG_DFL);  // a second signal ends the process
}

}  // namespace

void install_stop_handlers() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

void request_stop() { g_stop.store(true); }
bool stop_requested() { return g_stop.load(); }
void clear_stop_request() { g_stop.store(false); }

}  // namespace mmintent

#include "mmintent/training/early_stopping.h"

#include "mmintent/error.h"

#include <cmath>

namespace mmintent {

EarlyStopping::EarlyStopping(EarlyStoppingOptions options) : options_(std::move(options)) {
  if (options_.mode != "min" && options_.mode != "max") {
    throw Error("early_stopping.mode must be min or max, got '" + options_.mode + "'");
  }
  if (options_.patience < 1) throw Error("early_stopping.patience must be >= 1");
  if (options_.min_delta < 0 || options_.min_epochs < 0) {
    throw Error("early_stopping: min_delta and min_epochs must be >= 0");
  }
}

bool EarlyStopping::update(int64_t epoch, double value) {
  ++state_.evaluations;
  bool improved = false;
  if (!std::isfinite(value)) {
    improved = false;
  } else if (!state_.has_best) {
    improved = true;
  } else if (options_.mode == "max") {
    improved = value > state_.best_value + options_.min_delta;
  } else {
    improved = value < state_.best_value - options_.min_delta;
  }
  if (improved) {
    state_.has_best = true;
    state_.best_value = value;
    state_.best_epoch = epoch;
    state_.stalls = 0;
  } else {
    ++state_.stalls;
  }
  return improved;
}

bool EarlyStopping::should_stop(int64_t epoch) const {
  if (!options_.enabled) return false;
  if (epoch + 1 < options_.min_epochs) return false;
  return state_.stalls >= options_.patience;
}

}  // namespace mmintent

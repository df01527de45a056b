#pragma once
/// Helpers shared by the libFuzzer targets: a private scratch folder, writing the input to a
/// file there (the readers under test take paths), and the rule for exceptions.
///
/// Outcome rules of every target: returning normally or throwing one of mmintent's own error
/// types (mmintent::Error and its subclasses) is expected; any other exception escaping the
/// library, a crash, a sanitizer report, a hang or a leak is a finding. A broken invariant of a
/// successful result is a finding too (reported through fail()).

#include <stdlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <typeinfo>

#include "mmintent/error.h"

namespace mmintent::fuzz {

/// A scratch folder for this process, made on first use and removed at exit.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/mmintent-fuzz-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      std::perror("mmintent fuzz: mkdtemp");
      std::abort();
    }
    static const std::string made = pattern;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(made, ec);
    });
    return std::filesystem::path(pattern);
  }();
  return dir;
}

/// Writes `size` bytes at `data` to scratch_dir()/name and returns the full path.
inline std::string write_scratch(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = (scratch_dir() / name).string();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) {
    std::fprintf(stderr, "mmintent fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
  return path;
}

/// Reports a broken invariant and aborts (libFuzzer saves the input as a crash).
[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "mmintent fuzz: invariant broken: %s\n", what.c_str());
  std::abort();
}

/// Runs `body`; mmintent::Error (and subclasses) is an expected outcome, any other exception
/// is reported with its type and aborts.
template <class Body>
void run_guarded(Body&& body) {
  try {
    body();
  } catch (const mmintent::Error&) {
    // Expected: the library rejected the input with one of its own errors.
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mmintent fuzz: unexpected exception %s: %s\n", typeid(e).name(),
                 e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "mmintent fuzz: unexpected exception of a non-std type\n");
    std::abort();
  }
}

}  // namespace mmintent::fuzz

// Errors: one exception type and one checking macro.
// NMPERM_CHECK(cond, "fmt {}", args...) throws nmperm::Error whose message names the
// failed condition, the place, and whatever shapes/dtypes/devices the caller formats in.
#pragma once
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <stdexcept>
#include <string>

namespace nmperm {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void throw_error(const char* file, int line, const std::string& msg);

// Something the user should know that does not stop the work (stderr, one line).
inline void warn(const std::string& msg) { fmt::print(stderr, "warning: {}\n", msg); }

}  // namespace nmperm

#define NMPERM_CHECK(cond, ...)                                                    \
  do {                                                                             \
    if (!(cond)) ::nmperm::throw_error(__FILE__, __LINE__, fmt::format(__VA_ARGS__)); \
  } while (0)

#define NMPERM_FAIL(...) ::nmperm::throw_error(__FILE__, __LINE__, fmt::format(__VA_ARGS__))

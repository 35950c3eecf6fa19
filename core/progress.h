// Progress of long work on stderr: one line rewritten in place on a terminal (at most
// twice a second); when stderr is a file or pipe, the lines marked to keep and, so that a
// log of long work is never silent for long, one line a minute at most.
#pragma once
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <unistd.h>

#include <fmt/format.h>

namespace nmperm {

// "mm:ss" or "h:mm:ss"; "--:--" when unknown.
inline std::string fmt_time(double s) {
  if (!std::isfinite(s) || s < 0) return "--:--";
  int64_t t = int64_t(s + 0.5);
  return t >= 3600 ? fmt::format("{}:{:02d}:{:02d}", t / 3600, t / 60 % 60, t % 60)
                   : fmt::format("{:02d}:{:02d}", t / 60, t % 60);
}

class Progress {
 public:
  explicit Progress(bool enabled = true) : enabled_(enabled), tty_(isatty(fileno(stderr))) {}
  double elapsed() const { return std::chrono::duration<double>(clock::now() - t0_).count(); }
  // Estimated time left after `done` of `total` units of equal cost.
  std::string eta(double done, double total) const {
    return done > 0 ? fmt_time(elapsed() / done * (total - done)) : fmt_time(NAN);
  }
  void show(const std::string& line, bool keep = false) {
    if (!enabled_) return;
    auto now = clock::now();
    if (!keep && std::chrono::duration<double>(now - last_).count() < (tty_ ? 0.5 : 60.0)) return;
    last_ = now;
    if (tty_) std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), keep ? "\n" : "");
    else std::fprintf(stderr, "%s\n", line.c_str());
  }

 private:
  using clock = std::chrono::steady_clock;
  bool enabled_, tty_;
  clock::time_point t0_ = clock::now(), last_ = t0_;
};

}  // namespace nmperm

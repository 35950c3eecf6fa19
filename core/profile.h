// A per-op-family profile of host time: where a training step or an evaluation spends it.
// Off by default (one relaxed atomic load per scope); `profile::Enabled on;` turns it on
// for a region, `profile::totals()` reads the accumulated seconds per family.
//
// Time is exclusive: a scope opened inside another (an allocation inside a matmul
// launcher) pauses the outer one, so the families add up to the time spent inside any
// scope. A `profile::Region` attributes everything inside it to one family (the optimizer
// step's norms and scales count as optimizer). Scopes time the calling thread on the host;
// CUDA launches return before their kernels finish, so a device profile needs a
// synchronising caller (bench_train refuses --profile on CUDA).
#pragma once
#include <array>
#include <cstdint>

namespace nmperm::profile {

enum class Family : uint8_t {
  Matmul,
  Attention,
  Norm,
  Softmax,
  Elementwise,
  Reduce,
  Loss,
  Index,
  Copy,
  Optimizer,
  Allocation,
  Sinkhorn,
  Other,
  Count_
};
constexpr int kFamilies = int(Family::Count_);
const char* family_name(Family f);
// The family of a kernel launcher by its op name ("matmul", "layer_norm_backward", "gelu"...).
Family family_of(const char* op);

bool enabled();
void set_enabled(bool on);
void reset();
std::array<double, kFamilies> totals();  // seconds per family since the last reset

// Times one launcher call (or one allocation) into its family while profiling is on.
class Scope {
 public:
  explicit Scope(Family f) {
    if (enabled()) open(f);
  }
  explicit Scope(const char* op) {
    if (enabled()) open(family_of(op));
  }
  ~Scope() {
    if (active_) close();
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 protected:
  void open(Family f);
  void close();
  bool active_ = false;
  bool prev_locked_ = false;
  int8_t prev_ = -1;
};

// Everything inside counts as `f`, whatever launchers it calls.
class Region : public Scope {
 public:
  explicit Region(Family f);
};

// Turns profiling on for its lifetime (restoring the previous state).
class Enabled {
 public:
  explicit Enabled(bool on = true) : prev_(enabled()) { set_enabled(on); }
  ~Enabled() { set_enabled(prev_); }

 private:
  bool prev_;
};

}  // namespace nmperm::profile

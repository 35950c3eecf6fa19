#include "core/profile.h"

#include <atomic>
#include <chrono>
#include <cstring>

namespace nmperm::profile {

namespace {

std::atomic<bool> g_enabled{false};
std::array<std::atomic<int64_t>, kFamilies> g_ns{};

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The innermost open scope of this thread, when it started (or resumed) counting, and
// whether a Region holds the attribution.
thread_local int8_t t_current = -1;
thread_local int64_t t_since = 0;
thread_local bool t_locked = false;

void charge(int64_t now) {
  if (t_current >= 0) g_ns[size_t(t_current)].fetch_add(now - t_since, std::memory_order_relaxed);
  t_since = now;
}

bool starts(const char* s, const char* prefix) { return std::strncmp(s, prefix, std::strlen(prefix)) == 0; }

}  // namespace

const char* family_name(Family f) {
  static constexpr const char* names[kFamilies] = {"matmul", "attention", "norms",     "softmax",
                                                   "elementwise", "reductions", "loss", "index/embedding",
                                                   "copies", "optimizer", "allocation", "sinkhorn", "other"};
  return names[int(f)];
}

Family family_of(const char* op) {
  if (starts(op, "matmul")) return Family::Matmul;
  if (starts(op, "attention")) return Family::Attention;
  if (starts(op, "layer_norm") || starts(op, "rms_norm")) return Family::Norm;
  if (starts(op, "softmax") || starts(op, "log_softmax")) return Family::Softmax;
  if (starts(op, "cross_entropy")) return Family::Loss;
  if (starts(op, "reduce")) return Family::Reduce;
  if (starts(op, "index_") || starts(op, "gather") || starts(op, "scatter") || starts(op, "topk")) return Family::Index;
  if (starts(op, "copy")) return Family::Copy;
  if (starts(op, "adamw") || starts(op, "sum_squares")) return Family::Optimizer;
  if (starts(op, "sinkhorn")) return Family::Sinkhorn;
  return Family::Elementwise;  // unary and binary ops, where, scale_, rope
}

bool enabled() { return g_enabled.load(std::memory_order_relaxed); }
void set_enabled(bool on) { g_enabled.store(on, std::memory_order_relaxed); }

void reset() {
  for (auto& n : g_ns) n.store(0, std::memory_order_relaxed);
}

std::array<double, kFamilies> totals() {
  std::array<double, kFamilies> s{};
  for (int i = 0; i < kFamilies; ++i) s[size_t(i)] = double(g_ns[size_t(i)].load(std::memory_order_relaxed)) * 1e-9;
  return s;
}

void Scope::open(Family f) {
  active_ = true;
  prev_ = t_current;
  prev_locked_ = t_locked;
  if (t_locked) return;  // inside a Region: its family keeps the time
  charge(now_ns());
  t_current = int8_t(f);
}

void Scope::close() {
  if (!prev_locked_) charge(now_ns());
  t_current = prev_;
  t_locked = prev_locked_;
}

Region::Region(Family f) : Scope(Family::Other) {
  if (!active_) return;
  if (!prev_locked_) t_current = int8_t(f);
  t_locked = true;
}

}  // namespace nmperm::profile

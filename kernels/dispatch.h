// Backend selection for kernel launchers: the one place that decides which backend runs
// an op. Launchers in kernels/<op>.h take tensors on one device; today every op has a
// CPU kernel, and a tensor on another device gets a clear error naming the op.
#pragma once
#include "core/tensor.h"

namespace nmperm::kernels {

// Sets flush-to-zero / denormals-are-zero on every OpenMP thread once: denormals slow
// float loops on x86 by an order of magnitude and never matter for this work.
void cpu_init();

inline void require_cpu_one(const char* op, const Tensor& t) {
  NMPERM_CHECK(!t.defined() || t.device() == Device::CPU, "{}: no kernel for device {} in this build (tensor {})", op,
               t.device(), describe(t));
}
template <class... Ts> void require_cpu(const char* op, const Ts&... ts) {
  cpu_init();
  (require_cpu_one(op, ts), ...);
}

// Number of OpenMP threads the CPU kernels use.
int num_threads();
void set_num_threads(int n);  // also sets OpenBLAS's thread count

}  // namespace nmperm::kernels

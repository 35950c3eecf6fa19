// Backend selection for kernel launchers: the one place that decides which backend runs
// an op. Launchers in kernels/<op>.h take tensors on one device; today every op has a
// CPU kernel, and a tensor on another device gets a clear error naming the op.
#pragma once
#include <string>

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

// OpenBLAS picks its kernels when it loads, from the CPU model; on CPUs it does not know
// (new models, some virtual machines) it falls back to SSE3 "Prescott" kernels, 4-9x
// slower than the AVX-512 ones the CPU can run. Programs call this first thing in main:
// when that happened, it sets OPENBLAS_CORETYPE to the best kernel set the CPU supports
// and re-executes the program (same arguments). Setting OPENBLAS_CORETYPE or
// NMPERM_KEEP_BLAS_CORE yourself turns this off.
void select_blas_kernels(char** argv);
std::string blas_core();  // the kernel set OpenBLAS is using

}  // namespace nmperm::kernels

// The CPU runtime: its threads and its BLAS. (Which backend runs a launcher is decided in
// one place, kernels/dispatch.cpp.)
#pragma once
#include <string>

#include "core/tensor.h"

namespace nmperm::kernels {

// Sets flush-to-zero / denormals-are-zero on every OpenMP thread once: denormals slow
// float loops on x86 by an order of magnitude and never matter for this work.
void cpu_init();

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
// Which library runs which products on the CPU, for benchmark headers, e.g.
// "oneDNN 2.6.3 (f32, bf16), OpenBLAS SkylakeX (f64, attention heads)".
std::string matmul_libraries();

}  // namespace nmperm::kernels

// CPU runtime settings: OpenMP threads, denormal flags, and OpenBLAS's kernel choice.
#include <omp.h>
#include <unistd.h>
#include <xmmintrin.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/runtime.h"

extern "C" {
void openblas_set_num_threads(int);
char* openblas_get_corename(void);
}

namespace nmperm::kernels {

void cpu_init() {
  static bool done = false;
  if (done) return;
#pragma omp parallel
  { _mm_setcsr(_mm_getcsr() | 0x8040); }
  done = true;
}

int num_threads() { return omp_get_max_threads(); }

void set_num_threads(int n) {
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
  // New pool threads need the denormal flags too.
#pragma omp parallel
  { _mm_setcsr(_mm_getcsr() | 0x8040); }
}

std::string blas_core() { return openblas_get_corename(); }

void select_blas_kernels(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") || std::getenv("NMPERM_KEEP_BLAS_CORE")) return;
  const char* want = __builtin_cpu_supports("avx512f") ? "SkylakeX" : __builtin_cpu_supports("avx2") ? "Haswell" : nullptr;
  std::string have = blas_core();
  // Only upgrade from a core older than the CPU (unrecognised CPUs fall back to Prescott).
  static const char* old_cores[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Sandybridge", "Atom"};
  bool is_old = false;
  for (const char* c : old_cores) is_old = is_old || have == c;
  if (!want || !is_old || have == want) return;
  setenv("OPENBLAS_CORETYPE", want, 1);
  execv("/proc/self/exe", argv);  // only returns on failure: then run with what we have
  unsetenv("OPENBLAS_CORETYPE");
}

}  // namespace nmperm::kernels

// Thin CBLAS helpers shared by the CPU kernels: a typed row-major gemm and a scope that
// runs OpenBLAS single-threaded while our own OpenMP loop hands out independent gemms.
#pragma once
#include <cblas.h>

#include <type_traits>

namespace nmperm::kernels {

template <class T>
inline void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                 int64_t ldb, T beta, T* C, int64_t ldc) {
  auto TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, TA, TB, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
  else
    cblas_dgemm(CblasRowMajor, TA, TB, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

// An OpenMP build of OpenBLAS already runs single-threaded inside our parallel regions
// (and its set_num_threads would resize our own pool), so only the pthreads build needs it.
struct BlasSingleThread {
  int saved = 0;
  bool active = openblas_get_parallel() == 1;  // 0 sequential, 1 pthreads, 2 OpenMP
  BlasSingleThread() {
    if (active) {
      saved = openblas_get_num_threads();
      openblas_set_num_threads(1);
    }
  }
  ~BlasSingleThread() {
    if (active) openblas_set_num_threads(saved);
  }
};

}  // namespace nmperm::kernels

// CPU matmul: one sgemm/dgemm call when the batch folds into M, otherwise a loop of
// gemm calls. Small per-batch products run one gemm per OpenMP thread with OpenBLAS set
// to a single thread; large ones let OpenBLAS thread each call.
#include "kernels/matmul.h"

#include <algorithm>

#include "kernels/cpu/blas.h"
#include "kernels/cuda/launchers.h"
#include "kernels/dispatch.h"

namespace nmperm::kernels {

void check_matmul(const Tensor& a, const Tensor& b, const Tensor& c) {
  NMPERM_CHECK(a.ndim() == 3 && b.ndim() == 3 && c.ndim() == 3, "matmul kernel wants 3-d views, got {} {} {}",
               a.shape(), b.shape(), c.shape());
  int64_t batch = c.shape(0), M = c.shape(1), N = c.shape(2), K = a.shape(2);
  NMPERM_CHECK(a.shape(0) == batch && b.shape(0) == batch && a.shape(1) == M && b.shape(1) == K && b.shape(2) == N,
               "matmul: shapes {} @ {} -> {} do not match", a.shape(), b.shape(), c.shape());
  NMPERM_CHECK(a.dtype() == b.dtype() && a.dtype() == c.dtype(), "matmul: dtypes differ: {} {} {}", describe(a),
               describe(b), describe(c));
  NMPERM_CHECK(c.stride(2) == 1 && c.stride(1) >= N, "matmul: output must be row-major");
}

MatView matmul_operand(const Tensor& t, const char* which) {
  int64_t r = t.shape(1), c = t.shape(2), sr = t.stride(1), sc = t.stride(2);
  if (sc == 1 && (sr >= std::max<int64_t>(c, 1) || r == 1)) return {false, std::max<int64_t>({sr, c, 1}), t.stride(0)};
  if (sr == 1 && (sc >= std::max<int64_t>(r, 1) || c == 1)) return {true, std::max<int64_t>({sc, r, 1}), t.stride(0)};
  NMPERM_FAIL("matmul: operand {} with strides {} is neither row- nor column-major", which, t.strides());
}

void matmul(const Tensor& a, const Tensor& b, Tensor& c, double alpha, double beta) {
  NMPERM_ROUTE_CUDA(c, matmul(a, b, c, alpha, beta));
  require_cpu("matmul", a, b, c);
  check_matmul(a, b, c);
  int64_t batch = c.shape(0), M = c.shape(1), N = c.shape(2), K = a.shape(2);
  if (batch == 0 || M == 0 || N == 0) return;
  MatView va = matmul_operand(a, "A"), vb = matmul_operand(b, "B");
  dispatch_float(a.dtype(), [&]<class T>() {
    const T* A = static_cast<const T*>(a.storage()->data) + a.offset();
    const T* B = static_cast<const T*>(b.storage()->data) + b.offset();
    T* C = c.data<T>();
    int64_t ldc = c.stride(1), cbs = c.stride(0);
    if (K == 0) {  // empty inner dimension: C = beta * C
      for (int64_t i = 0; i < batch; ++i)
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) C[i * cbs + m * ldc + n] = beta == 0 ? T(0) : T(beta) * C[i * cbs + m * ldc + n];
      return;
    }
    // Fold the batch into M when A is row-major and packed across batches and B is shared.
    if (batch > 1 && vb.bstride == 0 && !va.trans && va.bstride == M * va.ld && va.ld == K && cbs == M * ldc &&
        ldc == N) {
      gemm<T>(false, vb.trans, batch * M, N, K, T(alpha), A, va.ld, B, vb.ld, T(beta), C, ldc);
      return;
    }
    if (batch == 1 || 2.0 * double(M) * double(N) * double(K) > 4e6) {
      for (int64_t i = 0; i < batch; ++i)
        gemm<T>(va.trans, vb.trans, M, N, K, T(alpha), A + i * va.bstride, va.ld, B + i * vb.bstride, vb.ld, T(beta),
                C + i * cbs, ldc);
      return;
    }
    BlasSingleThread single;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < batch; ++i)
      gemm<T>(va.trans, vb.trans, M, N, K, T(alpha), A + i * va.bstride, va.ld, B + i * vb.bstride, vb.ld, T(beta),
              C + i * cbs, ldc);
  });
}

}  // namespace nmperm::kernels

// Batched matrix multiply: C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b] (+ bias).
// A is (batch, M, K) and B is (batch, K, N) as *logical* shapes; each may be stored
// row-major (last stride 1) or column-major (second-to-last stride 1, i.e. a transposed
// view), and its batch stride may be 0 (broadcast). No copies for transposed views.
// bias (N), with beta = 0: added to every row (oneDNN adds it as it writes C; other
// paths write it into C first and accumulate).
#pragma once
#include "core/tensor.h"

namespace nmperm::kernels {

void matmul(const Tensor& a, const Tensor& b, Tensor& c, double alpha = 1.0, double beta = 0.0,
            const Tensor& bias = Tensor());

// How a 3-d operand is laid out, for BLAS: row-major or column-major (a transposed view),
// its leading dimension and batch stride (0 = broadcast). Throws for other layouts.
struct MatView {
  bool trans;       // stored column-major => pass "transposed" to a row-major gemm
  int64_t ld;       // leading dimension of the storage
  int64_t bstride;  // batch stride (0 = broadcast)
};
MatView matmul_operand(const Tensor& t, const char* which);
// The checks both backends make: 3-d views, matching shapes and dtypes, row-major output,
// a bias (N) of C's dtype only with beta = 0.
void check_matmul(const Tensor& a, const Tensor& b, const Tensor& c, const Tensor& bias, double beta);
// C[b, m, :] = bias for every row: the bias of a backend that cannot add it in the product.
void bias_into_rows(const Tensor& bias, Tensor& c);

}  // namespace nmperm::kernels

// Batched matrix multiply through CBLAS: C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b].
// A is (batch, M, K) and B is (batch, K, N) as *logical* shapes; each may be stored
// row-major (last stride 1) or column-major (second-to-last stride 1, i.e. a transposed
// view), and its batch stride may be 0 (broadcast). No copies for transposed views.
#pragma once
#include "core/tensor.h"

namespace nmperm::kernels {

void matmul(const Tensor& a, const Tensor& b, Tensor& c, double alpha = 1.0, double beta = 0.0);

// How a 3-d operand is laid out, for BLAS: row-major or column-major (a transposed view),
// its leading dimension and batch stride (0 = broadcast). Throws for other layouts.
struct MatView {
  bool trans;       // stored column-major => pass "transposed" to a row-major gemm
  int64_t ld;       // leading dimension of the storage
  int64_t bstride;  // batch stride (0 = broadcast)
};
MatView matmul_operand(const Tensor& t, const char* which);
// The checks both backends make: 3-d views, matching shapes and dtypes, row-major output.
void check_matmul(const Tensor& a, const Tensor& b, const Tensor& c);

}  // namespace nmperm::kernels

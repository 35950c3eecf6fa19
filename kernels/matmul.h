// Batched matrix multiply through CBLAS: C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b].
// A is (batch, M, K) and B is (batch, K, N) as *logical* shapes; each may be stored
// row-major (last stride 1) or column-major (second-to-last stride 1, i.e. a transposed
// view), and its batch stride may be 0 (broadcast). No copies for transposed views.
#pragma once
#include "core/tensor.h"

namespace nmperm::kernels {

void matmul(const Tensor& a, const Tensor& b, Tensor& c, double alpha = 1.0, double beta = 0.0);

}  // namespace nmperm::kernels

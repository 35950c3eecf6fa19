// Log-domain Sinkhorn normalisation of a batch of square blocks, fused:
//   X = L;  repeat iters times: X -= logsumexp over each row; X -= logsumexp over each column
//   P = exp(X)
// Forward writes P and the per-iteration row and column normalisers (G, iters, n) each;
// backward runs the iterations in reverse from those normalisers (X at any stage is L
// minus the normalisers subtracted so far), so no (n, n) intermediate is stored.
#pragma once
#include "core/tensor.h"

namespace nmperm::kernels {

void sinkhorn(const Tensor& logits, int64_t iters, Tensor& p, Tensor& row_norm, Tensor& col_norm);
void sinkhorn_backward(const Tensor& logits, const Tensor& row_norm, const Tensor& col_norm, const Tensor& dp,
                       Tensor& dlogits);

}  // namespace nmperm::kernels

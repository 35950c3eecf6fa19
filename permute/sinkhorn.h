// Differentiable Sinkhorn: a soft permutation from a batch of square score blocks.
//   P = Sinkhorn(logits) with logits = -C / epsilon for a cost C; log-domain iterations
//   alternate row and column normalisation, so P approaches a doubly stochastic matrix
//   (the entropy-regularised optimal assignment) as iterations grow.
// sinkhorn() is one fused autograd op; sinkhorn_unrolled() composes the same iterations
// from logsumexp/sub/exp and is the readable reference the tests compare it with.
#pragma once
#include "autograd/ops.h"

namespace nmperm {

Tensor sinkhorn(const Tensor& logits, int64_t iters);           // (G, n, n) or (n, n)
Tensor sinkhorn_unrolled(const Tensor& logits, int64_t iters);  // same result, composed ops

struct SinkhornError {
  double row = 0, col = 0;  // max |sum - 1| over rows and over columns
};
SinkhornError sinkhorn_error(const Tensor& p);

}  // namespace nmperm

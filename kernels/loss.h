// Cross-entropy fused with log-softmax on logits (N, V) and integer targets (N):
//   loss_n = (1 - ls) * (lse_n - x[n, y_n]) + ls * (lse_n - mean_v x[n, v])
// rows with target == ignore_index give 0 and are excluded from the mean by the op layer.
// Backward: dx = g_n * (softmax(x_n) - (1 - ls) * onehot(y_n) - ls / V).
#pragma once
#include "core/tensor.h"

namespace nmperm::kernels {

void cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index, double label_smoothing,
                   Tensor& loss_rows, Tensor& lse);
// grad_rows (N): the upstream gradient for each row's loss (already divided by the count).
void cross_entropy_backward(const Tensor& logits, const Tensor& target, const Tensor& lse, const Tensor& grad_rows,
                            int64_t ignore_index, double label_smoothing, Tensor& dlogits);

}  // namespace nmperm::kernels

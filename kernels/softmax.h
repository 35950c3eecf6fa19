// Softmax and log-softmax over the last dim of a contiguous (R, K) tensor, and their
// backward from the saved output: softmax dx = y * (dy - sum(dy * y)),
// log-softmax dx = dy - exp(y) * sum(dy).
#pragma once
#include "core/tensor.h"

namespace nmperm::kernels {

void softmax_rows(const Tensor& x, Tensor& y, bool log);
void softmax_rows_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool log);

}  // namespace nmperm::kernels

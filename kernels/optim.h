// Optimizer kernels.
//   adamw: decoupled weight decay (Loshchilov & Hutter), bias-corrected moments, in place:
//     p -= lr * wd * p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//     p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
//   sum_squares: sum of g^2 in double (for global-norm clipping).
#pragma once
#include "core/tensor.h"

namespace nmperm::kernels {

struct AdamWParams {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
};
void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p, int64_t step);
double sum_squares(const Tensor& t);

}  // namespace nmperm::kernels

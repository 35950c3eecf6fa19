// Optimizer kernels.
//   adamw: decoupled weight decay (Loshchilov & Hutter), bias-corrected moments, in place:
//     p -= lr * wd * p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//     p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
//   with g the gradient times the slot's grad_scale, rounded to the parameter's dtype: the
//   bits of scaling the gradient in place first (global-norm clipping) without that pass.
//   fused over many parameters in one pass (one kernel launch on the GPU): the moments
//   of all of them live in one flat buffer m, v and parameter i owns the elements
//   [offset_i, offset_i + numel_i) of it.
//   sum_squares: sum of g^2 over many tensors in double (global-norm clipping), in a
//   fixed chunk order so the result does not depend on the thread count.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace nmperm::kernels {

struct AdamWParams {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
};
struct AdamWSlot {
  Tensor param, grad;       // contiguous param; grad of its shape (any layout)
  int64_t offset = 0;       // first element of its moments in the flat m and v
  double weight_decay = 0;  // this parameter's decay (p.weight_decay is not used here)
  double grad_scale = 1;    // the gradient is multiplied by this as it is read (clipping)
};
void adamw(const std::vector<AdamWSlot>& slots, Tensor& m, Tensor& v, const AdamWParams& p, int64_t step);
// One parameter with its own moments (m, v of its numel).
void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p, int64_t step);
double sum_squares(const std::vector<Tensor>& ts);
double sum_squares(const Tensor& t);

// The fused kernels' unit of work: at most `size` elements of one tensor (both backends
// chunk the same way, so their sums of squares add up in the same order).
struct OptimChunk {
  int64_t tensor, begin, size;
};
std::vector<OptimChunk> optim_chunks(const std::vector<Tensor>& ts);

}  // namespace nmperm::kernels

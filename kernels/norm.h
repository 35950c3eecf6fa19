// Fused layer_norm and rms_norm over the last dim of a contiguous (R, C) tensor.
// Forward saves per-row statistics (mean and rstd, or rstd) for the backward.
//   layer_norm: y = (x - mean) * rstd * w + b,   rstd = 1 / sqrt(var + eps)
//   rms_norm:   y = x * rstd * w,                rstd = 1 / sqrt(mean(x^2) + eps)
// w and b may be undefined (no affine part). Backward accumulates dw/db over rows.
#pragma once
#include "core/tensor.h"

namespace nmperm::kernels {

void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, Tensor& y, Tensor& mean, Tensor& rstd);
void layer_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd, const Tensor& dy,
                         Tensor& dx, Tensor& dw, Tensor& db);
void rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd);
void rms_norm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dw);

}  // namespace nmperm::kernels

// Top-k along the last dim of a contiguous (R, K) tensor: values (R, k) and i64 indices
// (R, k), sorted (largest first, or smallest first when largest = false); ties keep the
// lower index first, so results are deterministic.
#pragma once
#include "core/tensor.h"

namespace nmperm::kernels {

void topk(const Tensor& x, int64_t k, bool largest, Tensor& values, Tensor& indices);

}  // namespace nmperm::kernels

// Row reductions: x is (R, K) contiguous, out is (R). The op layer moves the reduced dims
// last, so one kernel serves every combination of dims.
#pragma once
#include "core/tensor.h"

namespace nmperm::kernels {

enum class ReduceOp { Sum, Mean, Max, Min, LogSumExp, Var, ArgMax, ArgMin };
// Var divides by (K - correction). ArgMax/ArgMin write i64 indices (first on ties).
void reduce_rows(ReduceOp op, const Tensor& x, Tensor& out, int64_t correction = 1);
// Column sums of a contiguous (K, N) tensor into out (N) (Sum or Mean): reducing leading
// dims (bias gradients, broadcast gradients) without transposing the data first.
void reduce_cols(ReduceOp op, const Tensor& x, Tensor& out);

}  // namespace nmperm::kernels

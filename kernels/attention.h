// Scaled dot-product attention, memory-efficient form (no (T, S) tensor is kept):
//   q (B, H, T, D), k and v (B, Hkv, S, D) with H % Hkv == 0 (grouped-query heads:
//   query head h reads kv head h / (H / Hkv)), out (B, H, T, D).
// Forward saves the row log-sum-exp lse (B, H, T); backward recomputes the probabilities
// from it, as flash attention does. causal masks key s > query t + (S - T).
#pragma once
#include "core/tensor.h"

namespace nmperm::kernels {

void attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse, double scale, bool causal);
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv, double scale, bool causal);

}  // namespace nmperm::kernels

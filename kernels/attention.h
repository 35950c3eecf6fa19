// Scaled dot-product attention, memory-efficient form (no (T, S) tensor is kept):
//   q (B, H, T, D), k and v (B, Hkv, S, D) with H % Hkv == 0 (grouped-query heads:
//   query head h reads kv head h / (H / Hkv)), out (B, H, T, D).
// On the CPU q, k, v, out and dout may be views whose rows and heads are strided, as long
// as each row of D is contiguous (kernels/heads.h): the transpose of a (B, T, H, D) tensor,
// as a linear layer's output split into heads, is read and written in place. lse, dq, dk
// and dv are packed, and the CUDA kernels take every tensor packed.
// Forward saves the row log-sum-exp lse (B, H, T); backward recomputes the probabilities
// from it, as flash attention does. causal masks key s > query t + (S - T).
#pragma once
#include "core/tensor.h"
#include "kernels/heads.h"

namespace nmperm::kernels {

// The sizes of one attention call, checked once for both backends.
struct AttentionDims {
  int64_t B, H, Hkv, T, S, D, group, shift;  // causal: key s visible to query t iff s <= t + shift
};
inline AttentionDims attention_dims(const Tensor& q, const Tensor& k, const Tensor& v) {
  NMPERM_CHECK(q.ndim() == 4 && k.ndim() == 4 && v.ndim() == 4, "attention: q, k, v must be (B, H, T, D), got {} {} {}",
               q.shape(), k.shape(), v.shape());
  AttentionDims d{q.shape(0), q.shape(1), k.shape(1), q.shape(2), k.shape(2), q.shape(3), 1, 0};
  NMPERM_CHECK(k.shape() == v.shape() && k.shape(0) == d.B && k.shape(3) == d.D,
               "attention: k {} and v {} must be (B, Hkv, S, D) matching q {}", k.shape(), v.shape(), q.shape());
  NMPERM_CHECK(d.Hkv > 0 && d.H % d.Hkv == 0, "attention: {} query heads are not a multiple of {} kv heads", d.H, d.Hkv);
  d.group = d.H / d.Hkv;
  d.shift = d.S - d.T;
  return d;
}

void attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse, double scale, bool causal);
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv, double scale, bool causal);

}  // namespace nmperm::kernels

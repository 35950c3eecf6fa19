// Heads as (B, H, T, D) views: a linear layer's output (B, T, H * D) split into heads is
// the transpose of a (B, T, H, D) tensor, whose rows of D are contiguous while its heads
// and rows are strided. The CPU's attention and RoPE kernels read such views in place (and
// attention writes its output into one) instead of packing a copy first; the CUDA kernels
// take packed tensors.
#pragma once
#include "core/tensor.h"

namespace nmperm::kernels {

// Element strides of a (B, H, T, D) view between batches, heads and rows.
struct HeadRows {
  int64_t b, h, t;
};

// Whether x's rows of D are contiguous and do not overlap, so kernels can read it in place.
inline bool has_head_rows(const Tensor& x) {
  return x.ndim() == 4 && (x.shape(3) <= 1 || x.stride(3) == 1) && (x.shape(2) <= 1 || x.stride(2) >= x.shape(3));
}

// Whether the attention and RoPE kernels of x's device take x as it is.
inline bool reads_in_place(const Tensor& x) { return x.device() == Device::CPU && has_head_rows(x); }

// x itself where its device's kernels read it in place, else a packed copy.
inline Tensor as_head_input(const Tensor& x) { return reads_in_place(x) ? x : x.contiguous(); }

inline HeadRows head_rows(const Tensor& x, const char* what) {
  NMPERM_CHECK(has_head_rows(x), "{} {} needs contiguous rows of D", what, describe(x));
  return {x.stride(0), x.stride(1), x.shape(2) <= 1 ? x.shape(3) : x.stride(2)};
}

}  // namespace nmperm::kernels

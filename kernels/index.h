// Indexing kernels on (outer, D, inner) views of contiguous tensors (the op layer
// collapses the dims before and after `dim`):
//   index_select: out[o, i, n] = x[o, idx[i], n]
//   gather:       out[o, i, n] = x[o, idx[o, i, n], n]
//   scatter_add:  out[o, idx[o, i, n], n] += src[o, i, n]
//   index_add:    out[o, idx[i], n] += src[o, i, n]     (index_select's backward; also
//                                                       embedding's backward with outer = 1)
// Indices are i32 or i64 and are range-checked. The adds are deterministic: each output
// row is owned by one thread.
#pragma once
#include "core/tensor.h"

namespace nmperm::kernels {

// A shape seen as (outer, D, inner) around `dim`.
struct IndexDims {
  int64_t outer, d, inner;
};
inline IndexDims split_at(const Shape& s, int64_t dim) {
  IndexDims r{1, s[size_t(dim)], 1};
  for (int64_t i = 0; i < dim; ++i) r.outer *= s[size_t(i)];
  for (size_t i = size_t(dim) + 1; i < s.size(); ++i) r.inner *= s[i];
  return r;
}

void index_select(const Tensor& x, int64_t dim, const Tensor& idx, Tensor& out);
void index_add(Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src);
void gather(const Tensor& x, int64_t dim, const Tensor& idx, Tensor& out);
void scatter_add(Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src);

}  // namespace nmperm::kernels

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

void index_select(const Tensor& x, int64_t dim, const Tensor& idx, Tensor& out);
void index_add(Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src);
void gather(const Tensor& x, int64_t dim, const Tensor& idx, Tensor& out);
void scatter_add(Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src);

}  // namespace nmperm::kernels

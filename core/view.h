// Raw view arithmetic: new shape/stride/offset over the same storage, no copy, no
// autograd. autograd/shape.cpp wraps each of these in a differentiable op.
#pragma once
#include "core/tensor.h"

namespace nmperm::view {

// Reshape; -1 infers one dim. A view when the strides allow, otherwise a packed copy.
Tensor reshape(const Tensor& t, Shape shape);
Tensor transpose(const Tensor& t, int64_t a, int64_t b);
Tensor permute(const Tensor& t, const std::vector<int64_t>& dims);
Tensor narrow(const Tensor& t, int64_t dim, int64_t start, int64_t length);
Tensor expand(const Tensor& t, const Shape& shape);  // NumPy broadcasting to `shape`
Tensor unsqueeze(const Tensor& t, int64_t dim);
Tensor squeeze(const Tensor& t, int64_t dim);
Shape infer_shape(const Shape& shape, int64_t numel);  // resolves one -1

}  // namespace nmperm::view

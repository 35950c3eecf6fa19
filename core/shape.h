// Shapes and strides (in elements), and the shape arithmetic every op shares:
// numel, contiguous strides, dim wrapping, NumPy broadcasting.
#pragma once
#include <cstdint>
#include <vector>

#include "core/error.h"

namespace nmperm {

using Shape = std::vector<int64_t>;

int64_t numel(const Shape& s);
Shape contiguous_strides(const Shape& s);
// Wraps a possibly negative dim into [0, ndim); names the op in the error.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op = "op");
// NumPy broadcasting of two shapes; throws naming both shapes when they do not fit.
Shape broadcast_shapes(const Shape& a, const Shape& b);

}  // namespace nmperm

// Elementwise kernels: unary math, broadcasting binary ops, where, and the fused
// backward of each unary op. Outputs are contiguous; inputs may be any strided view
// (broadcast inputs arrive with zero strides).
#pragma once
#include "core/tensor.h"

namespace nmperm::kernels {

enum class UnaryOp { Neg, Exp, Log, Sqrt, Rsqrt, Tanh, Sigmoid, Relu, GeluErf, GeluTanh, Silu, Abs, Pow, Square };
enum class BinaryOp { Add, Sub, Mul, Div, Maximum, Minimum, Eq, Ne, Lt, Le, Gt, Ge };
const char* unary_name(UnaryOp op);
const char* binary_name(BinaryOp op);

// out = op(x); `scalar` is the exponent of Pow.
void unary(UnaryOp op, const Tensor& x, Tensor& out, double scalar = 0);
// dx = dy * op'(x) (y = op(x) is passed so sigmoid/tanh/exp can reuse it).
void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, double scalar = 0);
// out = a op b; a and b already broadcast (expanded) to out's shape. Comparisons give 0/1.
void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out);
// out = cond != 0 ? a : b, all expanded to out's shape.
void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out);
// t *= s in place (contiguous).
void scale_(Tensor& t, double s);

}  // namespace nmperm::kernels

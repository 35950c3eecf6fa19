// Elementwise kernels: unary math, broadcasting binary ops, where, and the fused
// backward of each unary op. Outputs are contiguous; inputs may be any strided view
// (broadcast inputs arrive with zero strides).
#pragma once
#include "core/tensor.h"

namespace nmperm::kernels {

// Every unary op, once: X(Enum, "name"). The enum, the names and the count come from this
// list; each op's forward and derivative live in kernels/elementwise_fn.h as a struct
// of the same name, which both backends run. Adding an op: docs/adding-an-op.md.
#define NMPERM_UNARY_OPS(X)                                                                                   \
  X(Neg, "neg") X(Exp, "exp") X(Log, "log") X(Sqrt, "sqrt") X(Rsqrt, "rsqrt") X(Tanh, "tanh")               \
  X(Sigmoid, "sigmoid") X(Relu, "relu") X(GeluErf, "gelu") X(GeluTanh, "gelu_tanh") X(Silu, "silu")         \
  X(Abs, "abs") X(Pow, "pow") X(Square, "square") X(Softplus, "softplus")
// Every binary op, once; their arithmetic is binary_fn in kernels/elementwise_fn.h. Comparisons give 0/1.
#define NMPERM_BINARY_OPS(X)                                                                                  \
  X(Add, "add") X(Sub, "sub") X(Mul, "mul") X(Div, "div") X(Maximum, "maximum") X(Minimum, "minimum")       \
  X(Eq, "eq") X(Ne, "ne") X(Lt, "lt") X(Le, "le") X(Gt, "gt") X(Ge, "ge")

#define NMPERM_ENUM_ENTRY(op, name) op,
#define NMPERM_NAME_ENTRY(op, name) name,
enum class UnaryOp { NMPERM_UNARY_OPS(NMPERM_ENUM_ENTRY) };
enum class BinaryOp { NMPERM_BINARY_OPS(NMPERM_ENUM_ENTRY) };
inline constexpr const char* kUnaryNames[] = {NMPERM_UNARY_OPS(NMPERM_NAME_ENTRY)};
inline constexpr const char* kBinaryNames[] = {NMPERM_BINARY_OPS(NMPERM_NAME_ENTRY)};
#undef NMPERM_ENUM_ENTRY
#undef NMPERM_NAME_ENTRY
inline constexpr int kUnaryOpCount = int(sizeof kUnaryNames / sizeof kUnaryNames[0]);
inline constexpr int kBinaryOpCount = int(sizeof kBinaryNames / sizeof kBinaryNames[0]);
inline constexpr const char* unary_name(UnaryOp op) { return kUnaryNames[int(op)]; }
inline constexpr const char* binary_name(BinaryOp op) { return kBinaryNames[int(op)]; }

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
// out = silu(gate) * up, the gated MLP of Llama-family models, in one pass; and its
// backward, dgate = dy * up * silu'(gate), dup = dy * silu(gate). All contiguous, one
// shape. The same formulas as silu and mul, so the same bits as the two ops in turn.
void swiglu(const Tensor& gate, const Tensor& up, Tensor& out);
void swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dy, Tensor& dgate, Tensor& dup);

}  // namespace nmperm::kernels

// The arithmetic of every elementwise op (the lists in kernels/elementwise.h), written once
// and shared by the CPU kernels and the CUDA kernels (compiled for both host and device there).
//
// Unary ops: one small struct per op, named as in the list, with
//   fwd<M>(x, p)        = op(x)                 (p: the exponent of Pow, unused elsewhere)
//   grad<M>(x, y, g, p) = g * op'(x), given y = op(x), so exp/sigmoid/tanh/sqrt reuse it
//   lanes               = true when the formula uses only +, -, *, /, comparisons, exp and
//                         erf: the CPU then runs it on 8 f32 lanes at a time (16 with AVX-512)
//   positive_only       = true when the op is defined for x > 0 only (tests draw inputs there)
// V is the value type (float, double, or the CPU's f32x8 / f32x16 lanes), T its scalar type. The
// math functions come from the backend as M::exp, M::erf, M::log, M::log1p, M::sqrt,
// M::tanh and M::pow, so the CPU uses its vectorised exp/erf and the GPU its own, from
// the same formula.
#pragma once
#include "core/error.h"
#include "kernels/elementwise.h"

#ifdef __CUDACC__
#define NMPERM_HOST_DEVICE __host__ __device__
#else
#define NMPERM_HOST_DEVICE
#endif

namespace nmperm::kernels::unary_fn {

// Constants of the GELU forms.
template <class T> struct Gelu {
  static constexpr T kSqrt2Inv = T(0.70710678118654752440), kSqrt2OverPi = T(0.79788456080286535588),
                     kInvSqrt2Pi = T(0.39894228040143267794);
};

struct Neg {
  static constexpr bool lanes = true;
  static constexpr bool positive_only = false;
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V fwd(V x, T) { return -x; }
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V grad(V, V, V g, T) { return -g; }
};

struct Exp {
  static constexpr bool lanes = true;
  static constexpr bool positive_only = false;
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V fwd(V x, T) { return M::exp(x); }
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V grad(V, V y, V g, T) { return g * y; }
};

struct Log {
  static constexpr bool lanes = false;
  static constexpr bool positive_only = true;
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V fwd(V x, T) { return M::log(x); }
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V grad(V x, V, V g, T) { return g / x; }
};

struct Sqrt {
  static constexpr bool lanes = false;
  static constexpr bool positive_only = true;
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V fwd(V x, T) { return M::sqrt(x); }
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V grad(V, V y, V g, T) { return g * T(0.5) / y; }
};

struct Rsqrt {
  static constexpr bool lanes = false;
  static constexpr bool positive_only = true;
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V fwd(V x, T) { return T(1) / M::sqrt(x); }
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V grad(V, V y, V g, T) {
    return g * T(-0.5) * y * y * y;
  }
};

struct Tanh {
  static constexpr bool lanes = false;
  static constexpr bool positive_only = false;
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V fwd(V x, T) { return M::tanh(x); }
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V grad(V, V y, V g, T) {
    return g * (T(1) - y * y);
  }
};

struct Sigmoid {
  static constexpr bool lanes = true;
  static constexpr bool positive_only = false;
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V fwd(V x, T) {
    return T(1) / (T(1) + M::exp(-x));
  }
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V grad(V, V y, V g, T) {
    return g * y * (T(1) - y);
  }
};

struct Relu {
  static constexpr bool lanes = true;
  static constexpr bool positive_only = false;
  // `V{} + T(0)`: a zero of the value type (a scalar, or 8 lanes).
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V fwd(V x, T) {
    return x > T(0) ? x : V{} + T(0);
  }
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V grad(V x, V, V g, T) {
    return x > T(0) ? g : V{} + T(0);
  }
};

// GELU with the exact erf form (transformers' "gelu").
struct GeluErf {
  static constexpr bool lanes = true;
  static constexpr bool positive_only = false;
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V fwd(V x, T) {
    using K = Gelu<T>;
    return T(0.5) * x * (T(1) + M::erf(x * K::kSqrt2Inv));
  }
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V grad(V x, V, V g, T) {
    using K = Gelu<T>;
    return g * (T(0.5) * (T(1) + M::erf(x * K::kSqrt2Inv)) + x * K::kInvSqrt2Pi * M::exp(T(-0.5) * x * x));
  }
};

// GELU with the tanh approximation ("gelu_new", "gelu_pytorch_tanh").
struct GeluTanh {
  static constexpr bool lanes = false;
  static constexpr bool positive_only = false;
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V fwd(V x, T) {
    using K = Gelu<T>;
    return T(0.5) * x * (T(1) + M::tanh(K::kSqrt2OverPi * (x + T(0.044715) * x * x * x)));
  }
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V grad(V x, V, V g, T) {
    using K = Gelu<T>;
    V t = M::tanh(K::kSqrt2OverPi * (x + T(0.044715) * x * x * x));
    V du = K::kSqrt2OverPi * (T(1) + T(3 * 0.044715) * x * x);
    return g * (T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du);
  }
};

struct Silu {
  static constexpr bool lanes = true;
  static constexpr bool positive_only = false;
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V fwd(V x, T) { return x / (T(1) + M::exp(-x)); }
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V grad(V x, V, V g, T) {
    V sg = T(1) / (T(1) + M::exp(-x));
    return g * sg * (T(1) + x * (T(1) - sg));
  }
};

struct Abs {
  static constexpr bool lanes = true;
  static constexpr bool positive_only = false;
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V fwd(V x, T) { return x < T(0) ? -x : x; }
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V grad(V x, V, V g, T) {
    return x > T(0) ? g : (x < T(0) ? -g : V{} + T(0));
  }
};

struct Pow {
  static constexpr bool lanes = false;
  static constexpr bool positive_only = true;
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V fwd(V x, T p) { return M::pow(x, p); }
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V grad(V x, V, V g, T p) {
    return p == T(0) ? V{} + T(0) : g * p * M::pow(x, p - T(1));
  }
};

// softplus(x) = log(1 + e^x); above 20 it is x itself to f32 and f64 rounding alike
// (PyTorch's threshold), where e^x would overflow first.
struct Softplus {
  static constexpr bool lanes = false;  // log1p has no 8-lane form here
  static constexpr bool positive_only = false;
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V fwd(V x, T) {
    return x > T(20) ? x : M::log1p(M::exp(x));
  }
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V grad(V x, V, V g, T) {
    return g / (T(1) + M::exp(-x));  // the sigmoid of x
  }
};

struct Square {
  static constexpr bool lanes = true;
  static constexpr bool positive_only = false;
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V fwd(V x, T) { return x * x; }
  template <class M, class V, class T> NMPERM_HOST_DEVICE static V grad(V x, V, V g, T) { return g * T(2) * x; }
};

}  // namespace nmperm::kernels::unary_fn

namespace nmperm::kernels {

// Binary ops: one formula per op.
template <class T> NMPERM_HOST_DEVICE inline T binary_fn(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
    case BinaryOp::Maximum: return a > b ? a : b;  // NaN-propagation aside, PyTorch-compatible for finite
    case BinaryOp::Minimum: return a < b ? a : b;
    case BinaryOp::Eq: return T(a == b);
    case BinaryOp::Ne: return T(a != b);
    case BinaryOp::Lt: return T(a < b);
    case BinaryOp::Le: return T(a <= b);
    case BinaryOp::Gt: return T(a > b);
    case BinaryOp::Ge: return T(a >= b);
  }
  return a;
}

// Calls f(unary_fn::OP{}) for the runtime op: each backend's launcher turns the op into
// its struct here, so an op in the list without a struct does not compile.
template <class F> decltype(auto) with_unary_fn(UnaryOp op, F&& f) {
  switch (op) {
#define NMPERM_CASE(OP, name) \
  case UnaryOp::OP: return f(unary_fn::OP{});
    NMPERM_UNARY_OPS(NMPERM_CASE)
#undef NMPERM_CASE
  }
  NMPERM_FAIL("unary op {} is not in the list", int(op));
}

// Calls f.template operator()<OP>() for the runtime binary op, so a kernel's loop is
// compiled for one op (a switch per element keeps a CPU loop scalar).
template <class F> decltype(auto) with_binary_op(BinaryOp op, F&& f) {
  switch (op) {
#define NMPERM_CASE(OP, name) \
  case BinaryOp::OP: return f.template operator()<BinaryOp::OP>();
    NMPERM_BINARY_OPS(NMPERM_CASE)
#undef NMPERM_CASE
  }
  NMPERM_FAIL("binary op {} is not in the list", int(op));
}

// Whether op is defined for x > 0 only.
inline bool unary_positive_only(UnaryOp op) {
  return with_unary_fn(op, [](auto fn) { return decltype(fn)::positive_only; });
}

}  // namespace nmperm::kernels

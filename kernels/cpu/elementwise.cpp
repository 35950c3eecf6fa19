// CPU elementwise kernels. Contiguous inputs take a flat loop the compiler vectorizes;
// broadcast or strided inputs walk the output with an index whose last dim is the inner loop.
#include "kernels/elementwise.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "kernels/cpu/vmath.h"
#include "kernels/binary_fn.h"
#include "kernels/cuda/launchers.h"
#include "kernels/dispatch.h"

namespace nmperm::kernels {

const char* unary_name(UnaryOp op) {
  static const char* names[] = {"neg", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid",
                                "relu", "gelu", "gelu_tanh", "silu", "abs", "pow", "square"};
  return names[int(op)];
}
const char* binary_name(BinaryOp op) {
  static const char* names[] = {"add", "sub", "mul", "div", "maximum", "minimum",
                                "eq", "ne", "lt", "le", "gt", "ge"};
  return names[int(op)];
}

namespace {

constexpr int64_t kParallelGrain = 32768;

// Math on V = T (double or float) or f32x8: exp and erf for float use the vectorized
// forms from vmath.h (also for scalar tails, so every element gets the same formula).
template <class V> inline V exp_any(V x) {
  if constexpr (std::is_same_v<V, double>) return std::exp(x);
  else return exp_v(x);
}
template <class V> inline V erf_any(V x) {
  if constexpr (std::is_same_v<V, double>) return std::erf(x);
  else return erf_v(x);
}

// Ops whose float form runs 8 lanes at a time; the rest call libm per element.
constexpr bool lane_op(UnaryOp op) {
  return op != UnaryOp::Log && op != UnaryOp::Tanh && op != UnaryOp::GeluTanh && op != UnaryOp::Pow &&
         op != UnaryOp::Sqrt && op != UnaryOp::Rsqrt;
}

template <UnaryOp OP, class V, class T> inline V unary_fn(V x, T p) {
  constexpr T kSqrt2Inv = T(0.70710678118654752440), kSqrt2OverPi = T(0.79788456080286535588);
  if constexpr (OP == UnaryOp::Neg) return -x;
  else if constexpr (OP == UnaryOp::Exp) return exp_any(x);
  else if constexpr (OP == UnaryOp::Log) return std::log(x);
  else if constexpr (OP == UnaryOp::Sqrt) return std::sqrt(x);
  else if constexpr (OP == UnaryOp::Rsqrt) return T(1) / std::sqrt(x);
  else if constexpr (OP == UnaryOp::Tanh) return std::tanh(x);
  else if constexpr (OP == UnaryOp::Sigmoid) return T(1) / (T(1) + exp_any(-x));
  else if constexpr (OP == UnaryOp::Relu) return x > T(0) ? x : V{} + T(0);
  else if constexpr (OP == UnaryOp::GeluErf) return T(0.5) * x * (T(1) + erf_any(x * kSqrt2Inv));
  else if constexpr (OP == UnaryOp::GeluTanh)
    return T(0.5) * x * (T(1) + std::tanh(kSqrt2OverPi * (x + T(0.044715) * x * x * x)));
  else if constexpr (OP == UnaryOp::Silu) return x / (T(1) + exp_any(-x));
  else if constexpr (OP == UnaryOp::Abs) return x < T(0) ? -x : x;
  else if constexpr (OP == UnaryOp::Pow) return std::pow(x, p);
  else return x * x;  // Square
}

// Derivative times upstream gradient g; y = op(x).
template <UnaryOp OP, class V, class T> inline V unary_grad(V x, V y, V g, T p) {
  constexpr T kSqrt2Inv = T(0.70710678118654752440), kSqrt2OverPi = T(0.79788456080286535588),
              kInvSqrt2Pi = T(0.39894228040143267794);
  if constexpr (OP == UnaryOp::Neg) return -g;
  else if constexpr (OP == UnaryOp::Exp) return g * y;
  else if constexpr (OP == UnaryOp::Log) return g / x;
  else if constexpr (OP == UnaryOp::Sqrt) return g * T(0.5) / y;
  else if constexpr (OP == UnaryOp::Rsqrt) return g * T(-0.5) * y * y * y;
  else if constexpr (OP == UnaryOp::Tanh) return g * (T(1) - y * y);
  else if constexpr (OP == UnaryOp::Sigmoid) return g * y * (T(1) - y);
  else if constexpr (OP == UnaryOp::Relu) return x > T(0) ? g : V{} + T(0);
  else if constexpr (OP == UnaryOp::GeluErf)
    return g * (T(0.5) * (T(1) + erf_any(x * kSqrt2Inv)) + x * kInvSqrt2Pi * exp_any(T(-0.5) * x * x));
  else if constexpr (OP == UnaryOp::GeluTanh) {
    V t = std::tanh(kSqrt2OverPi * (x + T(0.044715) * x * x * x));
    V du = kSqrt2OverPi * (T(1) + T(3 * 0.044715) * x * x);
    return g * (T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du);
  } else if constexpr (OP == UnaryOp::Silu) {
    V sg = T(1) / (T(1) + exp_any(-x));
    return g * sg * (T(1) + x * (T(1) - sg));
  } else if constexpr (OP == UnaryOp::Abs) return x > T(0) ? g : (x < T(0) ? -g : V{} + T(0));
  else if constexpr (OP == UnaryOp::Pow) return p == T(0) ? V{} + T(0) : g * p * std::pow(x, p - T(1));
  else return g * T(2) * x;  // Square
}

// Runs f(i) over [0, n) in parallel chunks of whole 8-lane blocks.
template <class F> void parallel_blocks(int64_t n, F&& f) {
  int64_t blocks = (n + 7) / 8;
#pragma omp parallel for if (n > kParallelGrain) schedule(static)
  for (int64_t b = 0; b < blocks; ++b) f(b * 8, std::min<int64_t>(8, n - b * 8));
}

template <UnaryOp OP, class T> void unary_loop(const T* x, T* y, int64_t n, T p) {
  parallel_blocks(n, [&](int64_t i, int64_t len) {
    if constexpr (std::is_same_v<T, float> && lane_op(OP)) {
      if (len == 8) {
        f32x8 v;
        std::memcpy(&v, x + i, sizeof v);
        f32x8 r = unary_fn<OP, f32x8, float>(v, p);
        std::memcpy(y + i, &r, sizeof r);
        return;
      }
    }
    for (int64_t k = i; k < i + len; ++k) y[k] = unary_fn<OP, T, T>(x[k], p);
  });
}

template <UnaryOp OP, class T> void unary_grad_loop(const T* x, const T* y, const T* g, T* dx, int64_t n, T p) {
  parallel_blocks(n, [&](int64_t i, int64_t len) {
    if constexpr (std::is_same_v<T, float> && lane_op(OP)) {
      if (len == 8) {
        f32x8 vx, vy, vg;
        std::memcpy(&vx, x + i, sizeof vx);
        std::memcpy(&vy, y + i, sizeof vy);
        std::memcpy(&vg, g + i, sizeof vg);
        f32x8 r = unary_grad<OP, f32x8, float>(vx, vy, vg, p);
        std::memcpy(dx + i, &r, sizeof r);
        return;
      }
    }
    for (int64_t k = i; k < i + len; ++k) dx[k] = unary_grad<OP, T, T>(x[k], y[k], g[k], p);
  });
}

// Calls f.template operator()<OP>() with the runtime op as a compile-time constant.
template <class F> void with_op(UnaryOp op, F&& f) {
  switch (op) {
#define NMPERM_OP(X) case UnaryOp::X: return f.template operator()<UnaryOp::X>();
    NMPERM_OP(Neg) NMPERM_OP(Exp) NMPERM_OP(Log) NMPERM_OP(Sqrt) NMPERM_OP(Rsqrt) NMPERM_OP(Tanh)
    NMPERM_OP(Sigmoid) NMPERM_OP(Relu) NMPERM_OP(GeluErf) NMPERM_OP(GeluTanh) NMPERM_OP(Silu) NMPERM_OP(Abs)
    NMPERM_OP(Pow) NMPERM_OP(Square)
#undef NMPERM_OP
  }
}

// Runs f(out_index, offsets...) over all elements of `shape`, parallel over the outer
// index, with the inputs' strides. Each thread restarts its index from its first row.
template <size_t N, class F>
void strided_loop(const Shape& shape, const std::array<const Shape*, N>& strides, const std::array<int64_t, N>& base,
                  F&& f) {
  int64_t n = numel(shape);
  if (n == 0) return;
  int64_t nd = int64_t(shape.size());
  int64_t inner = nd ? shape[nd - 1] : 1, rows = n / std::max<int64_t>(inner, 1);
#pragma omp parallel for if (n > kParallelGrain) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    std::array<int64_t, N> off = base;
    int64_t rem = r;
    for (int64_t d = nd - 2; d >= 0; --d) {
      int64_t i = rem % shape[d];
      rem /= shape[d];
      for (size_t k = 0; k < N; ++k) off[k] += i * (*strides[k])[d];
    }
    std::array<int64_t, N> inner_stride;
    for (size_t k = 0; k < N; ++k) inner_stride[k] = nd ? (*strides[k])[nd - 1] : 0;
    f(r * inner, inner, off, inner_stride);
  }
}

}  // namespace

void unary(UnaryOp op, const Tensor& x, Tensor& out, double scalar) {
  NMPERM_ROUTE_CUDA(x, unary(op, x, out, scalar));
  require_cpu(unary_name(op), x, out);
  NMPERM_CHECK(x.shape() == out.shape() && out.is_contiguous(), "{}: bad output for input {}", unary_name(op),
               describe(x));
  dispatch_float(x.dtype(), [&]<class T>() {
    Tensor xc = x.contiguous();
    with_op(op, [&]<UnaryOp OP>() { unary_loop<OP, T>(xc.data<T>(), out.data<T>(), x.numel(), T(scalar)); });
  });
}

void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, double scalar) {
  NMPERM_ROUTE_CUDA(x, unary_backward(op, x, y, dy, dx, scalar));
  require_cpu(unary_name(op), x, y, dy, dx);
  dispatch_float(x.dtype(), [&]<class T>() {
    Tensor xc = x.contiguous(), yc = y.contiguous(), gc = dy.contiguous();
    with_op(op, [&]<UnaryOp OP>() {
      unary_grad_loop<OP, T>(xc.data<T>(), yc.data<T>(), gc.data<T>(), dx.data<T>(), x.numel(), T(scalar));
    });
  });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  NMPERM_ROUTE_CUDA(out, binary(op, a, b, out));
  require_cpu(binary_name(op), a, b, out);
  NMPERM_CHECK(a.dtype() == b.dtype(), "{}: dtypes differ: {} and {}", binary_name(op), describe(a), describe(b));
  NMPERM_CHECK(a.shape() == out.shape() && b.shape() == out.shape() && out.is_contiguous(),
               "{}: inputs must be expanded to the output shape", binary_name(op));
  dispatch_float(a.dtype(), [&]<class T>() {
    T* o = out.data<T>();
    const T* ap = static_cast<const T*>(a.storage()->data);
    const T* bp = static_cast<const T*>(b.storage()->data);
    int64_t n = out.numel();
    if (a.is_contiguous() && b.is_contiguous()) {
      ap += a.offset();
      bp += b.offset();
#pragma omp parallel for if (n > kParallelGrain) schedule(static)
      for (int64_t i = 0; i < n; ++i) o[i] = binary_fn<T>(op, ap[i], bp[i]);
      return;
    }
    strided_loop<2>(out.shape(), {&a.strides(), &b.strides()}, {a.offset(), b.offset()},
                    [&](int64_t start, int64_t len, const std::array<int64_t, 2>& off, const std::array<int64_t, 2>& st) {
                      const T* pa = ap + off[0];
                      const T* pb = bp + off[1];
                      T* po = o + start;
                      if (st[0] == 1 && st[1] == 0) {
                        T bv = *pb;
                        for (int64_t i = 0; i < len; ++i) po[i] = binary_fn<T>(op, pa[i], bv);
                      } else if (st[0] == 0 && st[1] == 1) {
                        T av = *pa;
                        for (int64_t i = 0; i < len; ++i) po[i] = binary_fn<T>(op, av, pb[i]);
                      } else if (st[0] == 1 && st[1] == 1) {
                        for (int64_t i = 0; i < len; ++i) po[i] = binary_fn<T>(op, pa[i], pb[i]);
                      } else {
                        for (int64_t i = 0; i < len; ++i) po[i] = binary_fn<T>(op, pa[i * st[0]], pb[i * st[1]]);
                      }
                    });
  });
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
  NMPERM_ROUTE_CUDA(out, where(cond, a, b, out));
  require_cpu("where", cond, a, b, out);
  NMPERM_CHECK(a.dtype() == b.dtype(), "where: dtypes differ: {} and {}", describe(a), describe(b));
  dispatch_float(a.dtype(), [&]<class T>() {
    dispatch_all(cond.dtype(), [&]<class C>() {
      T* o = out.data<T>();
      const C* cp = static_cast<const C*>(cond.storage()->data);
      const T* ap = static_cast<const T*>(a.storage()->data);
      const T* bp = static_cast<const T*>(b.storage()->data);
      strided_loop<3>(out.shape(), {&cond.strides(), &a.strides(), &b.strides()},
                      {cond.offset(), a.offset(), b.offset()},
                      [&](int64_t start, int64_t len, const std::array<int64_t, 3>& off,
                          const std::array<int64_t, 3>& st) {
                        for (int64_t i = 0; i < len; ++i)
                          o[start + i] = cp[off[0] + i * st[0]] != C(0) ? ap[off[1] + i * st[1]] : bp[off[2] + i * st[2]];
                      });
    });
  });
}

void scale_(Tensor& t, double s) {
  NMPERM_ROUTE_CUDA(t, scale_(t, s));
  require_cpu("scale_", t);
  NMPERM_CHECK(t.is_contiguous(), "scale_: needs a contiguous tensor");
  dispatch_float(t.dtype(), [&]<class T>() {
    T* p = t.data<T>();
    T ss = T(s);
    int64_t n = t.numel();
#pragma omp parallel for if (n > kParallelGrain) schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] *= ss;
  });
}

}  // namespace nmperm::kernels

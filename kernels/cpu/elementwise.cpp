// CPU elementwise kernels. Contiguous inputs take a flat loop the compiler vectorizes;
// broadcast or strided inputs walk the output with an index whose last dim is the inner loop.
#include "kernels/elementwise.h"
#include "kernels/cpu/launchers.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include <omp.h>

#include "kernels/cpu/vmath.h"
#include "kernels/elementwise_fn.h"

namespace nmperm::kernels::cpu {

namespace {

constexpr int64_t kParallelGrain = 32768;

// The math functions of the unary formulas (kernels/elementwise_fn.h) on the CPU: exp and
// erf for float use the vectorized forms from vmath.h, for 8 lanes and for scalar tails
// alike (so every element gets the same formula); the rest call libm.
struct CpuMath {
  static double exp(double x) { return std::exp(x); }
  template <class V> static V exp(V x) { return exp_v(x); }
  static double erf(double x) { return std::erf(x); }
  template <class V> static V erf(V x) { return erf_v(x); }
  template <class T> static T log(T x) { return std::log(x); }
  template <class T> static T log1p(T x) { return std::log1p(x); }
  template <class T> static T sqrt(T x) { return std::sqrt(x); }
  template <class T> static T tanh(T x) { return std::tanh(x); }
  template <class T> static T pow(T x, T p) { return std::pow(x, p); }
};

// Runs f(i, len) over [0, n) in parallel chunks of whole blocks of `width` elements.
template <class F> void parallel_blocks(int64_t n, int64_t width, F&& f) {
  int64_t blocks = (n + width - 1) / width;
#pragma omp parallel for if (n > kParallelGrain) schedule(static)
  for (int64_t b = 0; b < blocks; ++b) f(b * width, std::min<int64_t>(width, n - b * width));
}

// Runs an elementwise formula over [0, n): with kLanes (float formulas that have a vector
// form), vec16(i) on blocks of 16 where the CPU has AVX-512, vec8(i) on blocks of 8, and
// one(i) on each element left. Every element gets the same formula whichever runs it, so
// the results do not depend on the width.
template <bool kLanes, class Vec16, class Vec8, class One>
void lane_blocks(int64_t n, Vec16&& vec16, Vec8&& vec8, One&& one) {
  const bool wide = kLanes && wide_lanes();
  parallel_blocks(n, wide ? 16 : 8, [&](int64_t i, int64_t len) {
    if constexpr (kLanes) {
      if (wide && len == 16) return vec16(i);
      for (; len >= 8; i += 8, len -= 8) vec8(i);
    }
    for (int64_t k = i; k < i + len; ++k) one(k);
  });
}

template <class V, class T> V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class V, class T> void store(T* p, V v) { std::memcpy(p, &v, sizeof v); }

// One op on one value (V = T) or a vector of them at x; the 16-lane forms are compiled for
// AVX-512 and called only where the CPU has it.
template <class Op, class V, class T> void fwd_at(const T* x, T* y, T p) {
  store(y, Op::template fwd<CpuMath, V, T>(load<V>(x), p));
}
template <class Op, class V, class T> void grad_at(const T* x, const T* y, const T* g, T* dx, T p) {
  store(dx, Op::template grad<CpuMath, V, T>(load<V>(x), load<V>(y), load<V>(g), p));
}
template <class Op> NMPERM_AVX512 void fwd_16(const float* x, float* y, float p) { fwd_at<Op, f32x16>(x, y, p); }
template <class Op> NMPERM_AVX512 void grad_16(const float* x, const float* y, const float* g, float* dx, float p) {
  grad_at<Op, f32x16>(x, y, g, dx, p);
}

template <class Op, class T> void unary_loop(const T* x, T* y, int64_t n, T p) {
  lane_blocks<std::is_same_v<T, float> && Op::lanes>(
      n, [&](auto i) { fwd_16<Op>(x + i, y + i, p); }, [&](auto i) { fwd_at<Op, f32x8>(x + i, y + i, p); },
      [&](int64_t i) { fwd_at<Op, T>(x + i, y + i, p); });
}

template <class Op, class T> void unary_grad_loop(const T* x, const T* y, const T* g, T* dx, int64_t n, T p) {
  lane_blocks<std::is_same_v<T, float> && Op::lanes>(
      n, [&](auto i) { grad_16<Op>(x + i, y + i, g + i, dx + i, p); },
      [&](auto i) { grad_at<Op, f32x8>(x + i, y + i, g + i, dx + i, p); },
      [&](int64_t i) { grad_at<Op, T>(x + i, y + i, g + i, dx + i, p); });
}

// swiglu: silu's formula, then the product, as the two ops compute them.
template <class V, class T> void swiglu_at(const T* g, const T* u, T* y) {
  store(y, unary_fn::Silu::fwd<CpuMath, V, T>(load<V>(g), T(0)) * load<V>(u));
}
template <class V, class T> void swiglu_grad_at(const T* g, const T* u, const T* dy, T* dg, T* du) {
  V gv = load<V>(g), s = unary_fn::Silu::fwd<CpuMath, V, T>(gv, T(0)), d = load<V>(dy);
  store(du, d * s);
  store(dg, unary_fn::Silu::grad<CpuMath, V, T>(gv, s, d * load<V>(u), T(0)));
}
NMPERM_AVX512 void swiglu_16(const float* g, const float* u, float* y) { swiglu_at<f32x16>(g, u, y); }
NMPERM_AVX512 void swiglu_grad_16(const float* g, const float* u, const float* dy, float* dg, float* du) {
  swiglu_grad_at<f32x16>(g, u, dy, dg, du);
}

// Runs f(out_index, len, offsets, inner strides) for every row (last dimension) of
// `shape`, with each input's offsets from its strides. Rows are split into one contiguous
// chunk per thread; a thread works out the index of its first row once and then steps it
// like an odometer (no division per row: the head splits of attention copy rows of 32).
template <size_t N, class F>
void strided_loop(const Shape& shape, const std::array<const Shape*, N>& strides, const std::array<int64_t, N>& base,
                  F&& f) {
  int64_t n = numel(shape);
  if (n == 0) return;
  int64_t nd = int64_t(shape.size());
  int64_t inner = nd ? shape[nd - 1] : 1, rows = n / std::max<int64_t>(inner, 1);
  std::array<int64_t, N> inner_stride;
  for (size_t k = 0; k < N; ++k) inner_stride[k] = nd ? (*strides[k])[nd - 1] : 0;
#pragma omp parallel if (n > kParallelGrain)
  {
    int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    int64_t r0 = rows * t / threads, r1 = rows * (t + 1) / threads;
    std::vector<int64_t> idx(size_t(std::max<int64_t>(nd - 1, 0)));
    std::array<int64_t, N> off = base;
    int64_t rem = r0;
    for (int64_t d = nd - 2; d >= 0; --d) {
      idx[size_t(d)] = rem % shape[d];
      rem /= shape[d];
      for (size_t k = 0; k < N; ++k) off[k] += idx[size_t(d)] * (*strides[k])[d];
    }
    for (int64_t r = r0; r < r1; ++r) {
      f(r * inner, inner, off, inner_stride);
      for (int64_t d = nd - 2; d >= 0; --d) {  // next row
        for (size_t k = 0; k < N; ++k) off[k] += (*strides[k])[d];
        if (++idx[size_t(d)] < shape[d]) break;
        for (size_t k = 0; k < N; ++k) off[k] -= shape[d] * (*strides[k])[d];
        idx[size_t(d)] = 0;
      }
    }
  }
}

}  // namespace

void copy(const Tensor& src, Tensor& dst) {
  NMPERM_CHECK(src.shape() == dst.shape(), "copy: shape {} into {}", src.shape(), dst.shape());
  dispatch_all(dst.dtype(), [&]<class D>() {
    dispatch_all(src.dtype(), [&]<class S>() {
      D* d = static_cast<D*>(dst.storage()->data);
      const S* s = static_cast<const S*>(src.storage()->data);
      strided_loop<2>(dst.shape(), {&dst.strides(), &src.strides()}, {dst.offset(), src.offset()},
                      [&](int64_t, int64_t len, const std::array<int64_t, 2>& off, const std::array<int64_t, 2>& st) {
                        D* dr = d + off[0];
                        const S* sr = s + off[1];
                        if (st[0] == 1 && st[1] == 1)
                          for (int64_t j = 0; j < len; ++j) dr[j] = D(sr[j]);
                        else
                          for (int64_t j = 0; j < len; ++j) dr[j * st[0]] = D(sr[j * st[1]]);
                      });
    });
  });
}

void unary(UnaryOp op, const Tensor& x, Tensor& out, double scalar) {
  NMPERM_CHECK(x.shape() == out.shape() && out.is_contiguous(), "{}: bad output for input {}", unary_name(op),
               describe(x));
  dispatch_float(x.dtype(), [&]<class T>() {
    Tensor xc = x.contiguous();
    with_unary_fn(op, [&]<class Op>(Op) { unary_loop<Op, T>(xc.data<T>(), out.data<T>(), x.numel(), T(scalar)); });
  });
}

void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, double scalar) {
  dispatch_float(x.dtype(), [&]<class T>() {
    Tensor xc = x.contiguous(), yc = y.contiguous(), gc = dy.contiguous();
    with_unary_fn(op, [&]<class Op>(Op) {
      unary_grad_loop<Op, T>(xc.data<T>(), yc.data<T>(), gc.data<T>(), dx.data<T>(), x.numel(), T(scalar));
    });
  });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  NMPERM_CHECK(a.dtype() == b.dtype(), "{}: dtypes differ: {} and {}", binary_name(op), describe(a), describe(b));
  NMPERM_CHECK(a.shape() == out.shape() && b.shape() == out.shape() && out.is_contiguous(),
               "{}: inputs must be expanded to the output shape", binary_name(op));
  dispatch_float(a.dtype(), [&]<class T>() {
    with_binary_op(op, [&]<BinaryOp OP>() {
      auto fn = [](T x, T y) { return binary_fn<T>(OP, x, y); };
      T* o = out.data<T>();
      const T* ap = static_cast<const T*>(a.storage()->data);
      const T* bp = static_cast<const T*>(b.storage()->data);
      int64_t n = out.numel();
      if (a.is_contiguous() && b.is_contiguous()) {
        ap += a.offset();
        bp += b.offset();
#pragma omp parallel for if (n > kParallelGrain) schedule(static)
        for (int64_t i = 0; i < n; ++i) o[i] = fn(ap[i], bp[i]);
        return;
      }
      strided_loop<2>(out.shape(), {&a.strides(), &b.strides()}, {a.offset(), b.offset()},
                      [&](int64_t start, int64_t len, const std::array<int64_t, 2>& off,
                          const std::array<int64_t, 2>& st) {
                        const T* pa = ap + off[0];
                        const T* pb = bp + off[1];
                        T* po = o + start;
                        if (st[0] == 1 && st[1] == 0) {
                          T bv = *pb;
                          for (int64_t i = 0; i < len; ++i) po[i] = fn(pa[i], bv);
                        } else if (st[0] == 0 && st[1] == 1) {
                          T av = *pa;
                          for (int64_t i = 0; i < len; ++i) po[i] = fn(av, pb[i]);
                        } else if (st[0] == 1 && st[1] == 1) {
                          for (int64_t i = 0; i < len; ++i) po[i] = fn(pa[i], pb[i]);
                        } else {
                          for (int64_t i = 0; i < len; ++i) po[i] = fn(pa[i * st[0]], pb[i * st[1]]);
                        }
                      });
    });
  });
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
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
  NMPERM_CHECK(t.is_contiguous(), "scale_: needs a contiguous tensor");
  dispatch_float(t.dtype(), [&]<class T>() {
    T* p = t.data<T>();
    T ss = T(s);
    int64_t n = t.numel();
#pragma omp parallel for if (n > kParallelGrain) schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] *= ss;
  });
}

void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) {
  NMPERM_CHECK(gate.shape() == up.shape() && out.shape() == gate.shape() && gate.dtype() == up.dtype() &&
                   gate.is_contiguous() && up.is_contiguous() && out.is_contiguous(),
               "swiglu: gate {}, up {} and out {} must be contiguous with one shape and dtype", describe(gate),
               describe(up), describe(out));
  dispatch_float(gate.dtype(), [&]<class T>() {
    const T *g = gate.data<T>(), *u = up.data<T>();
    T* y = out.data<T>();
    lane_blocks<std::is_same_v<T, float>>(
        gate.numel(), [&](auto i) { swiglu_16(g + i, u + i, y + i); },
        [&](auto i) { swiglu_at<f32x8>(g + i, u + i, y + i); }, [&](int64_t i) { swiglu_at<T>(g + i, u + i, y + i); });
  });
}

void swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dy, Tensor& dgate, Tensor& dup) {
  NMPERM_CHECK(gate.shape() == up.shape() && dy.shape() == gate.shape() && dgate.shape() == gate.shape() &&
                   dup.shape() == gate.shape() && gate.is_contiguous() && up.is_contiguous() && dy.is_contiguous() &&
                   dgate.is_contiguous() && dup.is_contiguous(),
               "swiglu backward: gate {}, up {}, dy {} and the gradients must be contiguous with one shape",
               describe(gate), describe(up), describe(dy));
  dispatch_float(gate.dtype(), [&]<class T>() {
    const T *g = gate.data<T>(), *u = up.data<T>(), *d = dy.data<T>();
    T *dg = dgate.data<T>(), *du = dup.data<T>();
    lane_blocks<std::is_same_v<T, float>>(
        gate.numel(), [&](auto i) { swiglu_grad_16(g + i, u + i, d + i, dg + i, du + i); },
        [&](auto i) { swiglu_grad_at<f32x8>(g + i, u + i, d + i, dg + i, du + i); },
        [&](int64_t i) { swiglu_grad_at<T>(g + i, u + i, d + i, dg + i, du + i); });
  });
}

}  // namespace nmperm::kernels::cpu

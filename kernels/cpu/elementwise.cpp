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

// One op on 16 float lanes (AVX-512; called only where the CPU has it).
template <class Op> NMPERM_AVX512 void fwd_16(const float* x, float* y, float p) {
  f32x16 v;
  std::memcpy(&v, x, sizeof v);
  f32x16 r = Op::template fwd<CpuMath, f32x16, float>(v, p);
  std::memcpy(y, &r, sizeof r);
}
template <class Op> NMPERM_AVX512 void grad_16(const float* x, const float* y, const float* g, float* dx, float p) {
  f32x16 vx, vy, vg;
  std::memcpy(&vx, x, sizeof vx);
  std::memcpy(&vy, y, sizeof vy);
  std::memcpy(&vg, g, sizeof vg);
  f32x16 r = Op::template grad<CpuMath, f32x16, float>(vx, vy, vg, p);
  std::memcpy(dx, &r, sizeof r);
}

// Every element gets the same formula whichever width runs it (16 lanes, 8, or a scalar
// tail), so the results do not depend on the width.
template <class Op, class T> void unary_loop(const T* x, T* y, int64_t n, T p) {
  constexpr bool vec = std::is_same_v<T, float> && Op::lanes;
  const bool wide = vec && wide_lanes();
  parallel_blocks(n, wide ? 16 : 8, [&](int64_t i, int64_t len) {
    if constexpr (vec) {
      if (wide && len == 16) return fwd_16<Op>(x + i, y + i, p);
      for (; len >= 8; i += 8, len -= 8) {
        f32x8 v;
        std::memcpy(&v, x + i, sizeof v);
        f32x8 r = Op::template fwd<CpuMath, f32x8, float>(v, p);
        std::memcpy(y + i, &r, sizeof r);
      }
    }
    for (int64_t k = i; k < i + len; ++k) y[k] = Op::template fwd<CpuMath, T, T>(x[k], p);
  });
}

template <class Op, class T> void unary_grad_loop(const T* x, const T* y, const T* g, T* dx, int64_t n, T p) {
  constexpr bool vec = std::is_same_v<T, float> && Op::lanes;
  const bool wide = vec && wide_lanes();
  parallel_blocks(n, wide ? 16 : 8, [&](int64_t i, int64_t len) {
    if constexpr (vec) {
      if (wide && len == 16) return grad_16<Op>(x + i, y + i, g + i, dx + i, p);
      for (; len >= 8; i += 8, len -= 8) {
        f32x8 vx, vy, vg;
        std::memcpy(&vx, x + i, sizeof vx);
        std::memcpy(&vy, y + i, sizeof vy);
        std::memcpy(&vg, g + i, sizeof vg);
        f32x8 r = Op::template grad<CpuMath, f32x8, float>(vx, vy, vg, p);
        std::memcpy(dx + i, &r, sizeof r);
      }
    }
    for (int64_t k = i; k < i + len; ++k) dx[k] = Op::template grad<CpuMath, T, T>(x[k], y[k], g[k], p);
  });
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

}  // namespace nmperm::kernels::cpu

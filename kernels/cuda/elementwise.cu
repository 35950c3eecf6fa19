// CUDA elementwise kernels: strided copy with dtype conversion, unary ops and their
// backward, broadcasting binary ops, where, in-place scaling. Grid-stride loops over the
// output in row-major order; inputs may be any strided view (broadcast = stride 0).
#include "kernels/elementwise_fn.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace nmperm::kernels::cuda {

namespace {

template <class D, class S> __global__ void copy_kernel(const S* src, Strided ss, D* dst, Strided ds, int64_t n) {
  NMPERM_GRID_STRIDE(i, n) dst[offset_of(ds, i)] = D(src[offset_of(ss, i)]);
}

template <class D, class S> __global__ void copy_contiguous_kernel(const S* src, D* dst, int64_t n) {
  NMPERM_GRID_STRIDE(i, n) dst[i] = D(src[i]);
}

// The math functions of the unary formulas (kernels/elementwise_fn.h) on the GPU.
struct DeviceMath {
  template <class T> __host__ __device__ static T exp(T x) { return ::exp(x); }
  template <class T> __host__ __device__ static T erf(T x) { return ::erf(x); }
  template <class T> __host__ __device__ static T log(T x) { return ::log(x); }
  template <class T> __host__ __device__ static T log1p(T x) { return ::log1p(x); }
  template <class T> __host__ __device__ static T sqrt(T x) { return ::sqrt(x); }
  template <class T> __host__ __device__ static T tanh(T x) { return ::tanh(x); }
  template <class T> __host__ __device__ static T pow(T x, T p) { return ::pow(x, p); }
};

template <class Op, class T> __global__ void unary_kernel(const T* x, Strided xs, T* y, int64_t n, T p) {
  NMPERM_GRID_STRIDE(i, n) y[i] = Op::template fwd<DeviceMath, T, T>(x[offset_of(xs, i)], p);
}

template <class Op, class T>
__global__ void unary_grad_kernel(const T* x, Strided xs, const T* y, Strided ys, const T* g, Strided gs, T* dx,
                                  int64_t n, T p) {
  NMPERM_GRID_STRIDE(i, n)
  dx[i] = Op::template grad<DeviceMath, T, T>(x[offset_of(xs, i)], y[offset_of(ys, i)], g[offset_of(gs, i)], p);
}

template <class T> __global__ void binary_contiguous_kernel(BinaryOp op, const T* a, const T* b, T* out, int64_t n) {
  NMPERM_GRID_STRIDE(i, n) out[i] = binary_fn<T>(op, a[i], b[i]);
}

template <class T>
__global__ void binary_kernel(BinaryOp op, const T* a, Strided as, const T* b, Strided bs, T* out, int64_t n) {
  NMPERM_GRID_STRIDE(i, n) out[i] = binary_fn<T>(op, a[offset_of(as, i)], b[offset_of(bs, i)]);
}

template <class T, class C>
__global__ void where_kernel(const C* c, Strided cs, const T* a, Strided as, const T* b, Strided bs, T* out, int64_t n) {
  NMPERM_GRID_STRIDE(i, n) out[i] = c[offset_of(cs, i)] != C(0) ? a[offset_of(as, i)] : b[offset_of(bs, i)];
}

// swiglu: silu's formula, then the product, as the two ops compute them.
template <class T> __global__ void swiglu_kernel(const T* g, const T* u, T* y, int64_t n) {
  NMPERM_GRID_STRIDE(i, n) y[i] = unary_fn::Silu::fwd<DeviceMath, T, T>(g[i], T(0)) * u[i];
}

template <class T> __global__ void swiglu_grad_kernel(const T* g, const T* u, const T* dy, T* dg, T* du, int64_t n) {
  NMPERM_GRID_STRIDE(i, n) {
    T s = unary_fn::Silu::fwd<DeviceMath, T, T>(g[i], T(0));
    du[i] = dy[i] * s;
    dg[i] = unary_fn::Silu::grad<DeviceMath, T, T>(g[i], s, dy[i] * u[i], T(0));
  }
}

template <class T> __global__ void scale_kernel(T* t, int64_t n, T s) {
  NMPERM_GRID_STRIDE(i, n) t[i] *= s;
}

void check_output(const char* op, const Tensor& out, const Shape& shape) {
  NMPERM_CHECK(out.shape() == shape && out.is_contiguous(), "{}: output {} must be contiguous with shape {}", op,
               describe(out), shape);
}

}  // namespace

void copy(const Tensor& src, Tensor& dst) {
  NMPERM_CHECK(src.shape() == dst.shape(), "copy: shape {} into {}", src.shape(), dst.shape());
  int64_t n = dst.numel();
  if (n == 0) return;
  on_any(dst.dtype(), [&](auto D_tag) {
    using D = decltype(D_tag);
    on_any(src.dtype(), [&](auto S_tag) {
      using S = decltype(S_tag);
      if (src.is_contiguous() && dst.is_contiguous())
        NMPERM_LAUNCH(grid_for(n), kThreads, 0, stream(), copy_contiguous_kernel<D, S>)
            (ptr<S>(src) + src.offset(), ptr<D>(dst) + dst.offset(), n);
      else
        NMPERM_LAUNCH(grid_for(n), kThreads, 0, stream(), copy_kernel<D, S>)
            (ptr<S>(src), strided(src, "copy"), ptr<D>(dst), strided(dst, "copy"), n);
    });
  });
  check_launch("copy");
}

void unary(UnaryOp op, const Tensor& x, Tensor& out, double scalar) {
  check_output(unary_name(op), out, x.shape());
  int64_t n = x.numel();
  if (n == 0) return;
  on_float(x.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    with_unary_fn(op, [&](auto op_fn) {
      NMPERM_LAUNCH(grid_for(n), kThreads, 0, stream(), unary_kernel<decltype(op_fn), T>)
          (ptr<T>(x), strided(x, unary_name(op)), out.data<T>(), n, T(scalar));
    });
  });
  check_launch(unary_name(op));
}

void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, double scalar) {
  check_output(unary_name(op), dx, x.shape());
  NMPERM_CHECK(y.shape() == x.shape() && dy.shape() == x.shape(), "{} backward: shapes {} {} {} differ", unary_name(op),
               x.shape(), y.shape(), dy.shape());
  int64_t n = x.numel();
  if (n == 0) return;
  on_float(x.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    with_unary_fn(op, [&](auto op_fn) {
      NMPERM_LAUNCH(grid_for(n), kThreads, 0, stream(), unary_grad_kernel<decltype(op_fn), T>)
          (ptr<T>(x), strided(x, "unary"), ptr<T>(y), strided(y, "unary"), ptr<T>(dy), strided(dy, "unary"),
           dx.data<T>(), n, T(scalar));
    });
  });
  check_launch(unary_name(op));
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  NMPERM_CHECK(a.dtype() == b.dtype(), "{}: dtypes differ: {} and {}", binary_name(op), describe(a), describe(b));
  NMPERM_CHECK(a.shape() == out.shape() && b.shape() == out.shape(), "{}: inputs must be expanded to the output shape",
               binary_name(op));
  check_output(binary_name(op), out, a.shape());
  int64_t n = out.numel();
  if (n == 0) return;
  on_float(a.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    if (a.is_contiguous() && b.is_contiguous())
      NMPERM_LAUNCH(grid_for(n), kThreads, 0, stream(), binary_contiguous_kernel<T>)
          (op, a.data<T>(), b.data<T>(), out.data<T>(), n);
    else
      NMPERM_LAUNCH(grid_for(n), kThreads, 0, stream(), binary_kernel<T>)
          (op, ptr<T>(a), strided(a, binary_name(op)), ptr<T>(b), strided(b, binary_name(op)), out.data<T>(), n);
  });
  check_launch(binary_name(op));
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
  NMPERM_CHECK(a.dtype() == b.dtype(), "where: dtypes differ: {} and {}", describe(a), describe(b));
  NMPERM_CHECK(cond.shape() == out.shape() && a.shape() == out.shape() && b.shape() == out.shape(),
               "where: inputs must be expanded to the output shape");
  check_output("where", out, a.shape());
  int64_t n = out.numel();
  if (n == 0) return;
  on_float(a.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    on_any(cond.dtype(), [&](auto C_tag) {
      using C = decltype(C_tag);
      NMPERM_LAUNCH(grid_for(n), kThreads, 0, stream(), where_kernel<T, C>)
          (ptr<C>(cond), strided(cond, "where"), ptr<T>(a), strided(a, "where"), ptr<T>(b), strided(b, "where"),
           out.data<T>(), n);
    });
  });
  check_launch("where");
}

void scale_(Tensor& t, double s) {
  NMPERM_CHECK(t.is_contiguous(), "scale_: needs a contiguous tensor, got {}", describe(t));
  int64_t n = t.numel();
  if (n == 0) return;
  on_float(t.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    NMPERM_LAUNCH(grid_for(n), kThreads, 0, stream(), scale_kernel<T>)(t.data<T>(), n, T(s));
  });
  check_launch("scale_");
}

void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) {
  NMPERM_CHECK(gate.shape() == up.shape() && gate.dtype() == up.dtype() && gate.is_contiguous() && up.is_contiguous(),
               "swiglu: gate {} and up {} must be contiguous with one shape and dtype", describe(gate), describe(up));
  check_output("swiglu", out, gate.shape());
  int64_t n = gate.numel();
  if (n == 0) return;
  on_float(gate.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    NMPERM_LAUNCH(grid_for(n), kThreads, 0, stream(), swiglu_kernel<T>)
        (gate.data<T>(), up.data<T>(), out.data<T>(), n);
  });
  check_launch("swiglu");
}

void swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dy, Tensor& dgate, Tensor& dup) {
  NMPERM_CHECK(gate.shape() == up.shape() && dy.shape() == gate.shape() && gate.is_contiguous() &&
                   up.is_contiguous() && dy.is_contiguous(),
               "swiglu backward: gate {}, up {} and dy {} must be contiguous with one shape", describe(gate),
               describe(up), describe(dy));
  check_output("swiglu", dgate, gate.shape());
  check_output("swiglu", dup, gate.shape());
  int64_t n = gate.numel();
  if (n == 0) return;
  on_float(gate.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    NMPERM_LAUNCH(grid_for(n), kThreads, 0, stream(), swiglu_grad_kernel<T>)
        (gate.data<T>(), up.data<T>(), dy.data<T>(), dgate.data<T>(), dup.data<T>(), n);
  });
  check_launch("swiglu backward");
}

}  // namespace nmperm::kernels::cuda

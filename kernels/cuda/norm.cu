// CUDA LayerNorm and RMSNorm over the last dim, forward and backward. One block per row
// for the normalisation and dx; weight and bias gradients are column sums over rows,
// one thread per column walking the rows in order (deterministic, no atomics).
// Undefined weight/bias tensors mean 1 and 0; undefined gradient outputs are skipped.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace nmperm::kernels::cuda {

namespace {

template <class T> __device__ T at_or(const T* p, int64_t c, T fallback) { return p ? p[c] : fallback; }

template <class T>
__global__ void layer_norm_kernel(const T* x, const T* w, const T* b, double eps, int64_t C, T* y, T* mean, T* rstd) {
  int64_t r = blockIdx.x;
  const T* xr = x + r * C;
  double s = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += double(xr[c]);
  double m = block_sum(s) / double(C), q = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) q += (double(xr[c]) - m) * (double(xr[c]) - m);
  double rs = 1.0 / sqrt(block_sum(q) / double(C) + eps);
  if (threadIdx.x == 0) mean[r] = T(m), rstd[r] = T(rs);
  T tm = T(m), trs = T(rs);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    y[r * C + c] = (xr[c] - tm) * trs * at_or(w, c, T(1)) + at_or(b, c, T(0));
}

template <class T>
__global__ void layer_norm_dx_kernel(const T* x, const T* w, const T* mean, const T* rstd, const T* dy, int64_t C,
                                     T* dx) {
  int64_t r = blockIdx.x;
  const T *xr = x + r * C, *gr = dy + r * C;
  T m = mean[r], rs = rstd[r];
  double a = 0, bsum = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    double gw = double(gr[c]) * double(at_or(w, c, T(1)));
    a += gw;
    bsum += gw * double(xr[c]);
  }
  a = block_sum(a);
  bsum = block_sum(bsum);
  T s1 = T(a / double(C)), s2 = T(double(rs) * (bsum - double(m) * a) / double(C));
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    dx[r * C + c] = rs * (gr[c] * at_or(w, c, T(1)) - s1 - (xr[c] - m) * rs * s2);
}

// dw[c] = sum_r dy * xhat, db[c] = sum_r dy; xhat from mean/rstd (LayerNorm) or rstd only.
template <class T>
__global__ void norm_params_kernel(const T* x, const T* mean, const T* rstd, const T* dy, int64_t R, int64_t C, T* dw,
                                   T* db) {
  NMPERM_GRID_STRIDE(c, C) {
    double sw = 0, sb = 0;
    for (int64_t r = 0; r < R; ++r) {
      T g = dy[r * C + c];
      sw += double(g) * double((x[r * C + c] - (mean ? mean[r] : T(0))) * rstd[r]);
      sb += double(g);
    }
    if (dw) dw[c] = T(sw);
    if (db) db[c] = T(sb);
  }
}

template <class T> __global__ void rms_norm_kernel(const T* x, const T* w, double eps, int64_t C, T* y, T* rstd) {
  int64_t r = blockIdx.x;
  const T* xr = x + r * C;
  double q = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) q += double(xr[c]) * double(xr[c]);
  T rs = T(1.0 / sqrt(block_sum(q) / double(C) + eps));
  if (threadIdx.x == 0) rstd[r] = rs;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) y[r * C + c] = xr[c] * rs * at_or(w, c, T(1));
}

template <class T>
__global__ void rms_norm_dx_kernel(const T* x, const T* w, const T* rstd, const T* dy, int64_t C, T* dx) {
  int64_t r = blockIdx.x;
  const T *xr = x + r * C, *gr = dy + r * C;
  T rs = rstd[r];
  double s = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += double(gr[c]) * double(at_or(w, c, T(1))) * double(xr[c]);
  T k = T(block_sum(s) * double(rs) * double(rs) * double(rs) / double(C));
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dx[r * C + c] = gr[c] * at_or(w, c, T(1)) * rs - xr[c] * k;
}

template <class T> const T* opt_ptr(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }
template <class T> T* opt_out(Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }

void check_norm(const char* op, const Tensor& x, const Tensor& w) {
  NMPERM_CHECK(x.ndim() == 2 && x.is_contiguous(), "{}: wants a contiguous (rows, C) input, got {}", op, describe(x));
  NMPERM_CHECK(!w.defined() || (w.numel() == x.shape(1) && w.is_contiguous()), "{}: weight {} for {} channels", op,
               describe(w), x.shape(1));
  NMPERM_CHECK(x.shape(0) <= int64_t(INT32_MAX), "{}: {} rows are too many for one launch", op, x.shape(0));
}

}  // namespace

void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, Tensor& y, Tensor& mean, Tensor& rstd) {
  check_norm("layer_norm", x, w);
  int64_t R = x.shape(0), C = x.shape(1);
  if (R == 0) return;
  on_float(x.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    NMPERM_LAUNCH(unsigned(R), kThreads, 0, stream(), layer_norm_kernel<T>)
        (x.data<T>(), opt_ptr<T>(w), opt_ptr<T>(b), eps, C, y.data<T>(), mean.data<T>(), rstd.data<T>());
  });
  check_launch("layer_norm");
}

void layer_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd, const Tensor& dy,
                         Tensor& dx, Tensor& dw, Tensor& db) {
  check_norm("layer_norm_backward", x, w);
  int64_t R = x.shape(0), C = x.shape(1);
  if (R == 0 || C == 0) return;
  on_float(x.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    if (dx.defined())
      NMPERM_LAUNCH(unsigned(R), kThreads, 0, stream(), layer_norm_dx_kernel<T>)
          (x.data<T>(), opt_ptr<T>(w), mean.data<T>(), rstd.data<T>(), dy.data<T>(), C, dx.data<T>());
    if (dw.defined() || db.defined())
      NMPERM_LAUNCH(grid_for(C), kThreads, 0, stream(), norm_params_kernel<T>)
          (x.data<T>(), mean.data<T>(), rstd.data<T>(), dy.data<T>(), R, C, opt_out<T>(dw), opt_out<T>(db));
  });
  check_launch("layer_norm_backward");
}

void rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) {
  check_norm("rms_norm", x, w);
  int64_t R = x.shape(0), C = x.shape(1);
  if (R == 0) return;
  on_float(x.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    NMPERM_LAUNCH(unsigned(R), kThreads, 0, stream(), rms_norm_kernel<T>)
        (x.data<T>(), opt_ptr<T>(w), eps, C, y.data<T>(), rstd.data<T>());
  });
  check_launch("rms_norm");
}

void rms_norm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dw) {
  check_norm("rms_norm_backward", x, w);
  int64_t R = x.shape(0), C = x.shape(1);
  if (R == 0 || C == 0) return;
  on_float(x.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    if (dx.defined())
      NMPERM_LAUNCH(unsigned(R), kThreads, 0, stream(), rms_norm_dx_kernel<T>)
          (x.data<T>(), opt_ptr<T>(w), rstd.data<T>(), dy.data<T>(), C, dx.data<T>());
    if (dw.defined())
      NMPERM_LAUNCH(grid_for(C), kThreads, 0, stream(), norm_params_kernel<T>)
          (x.data<T>(), nullptr, rstd.data<T>(), dy.data<T>(), R, C, dw.data<T>(), nullptr);
  });
  check_launch("rms_norm_backward");
}

}  // namespace nmperm::kernels::cuda

// CUDA softmax and log-softmax over rows, forward and backward: one block per row, the
// maximum subtracted first (stable), sums in the row's type promoted to double for f32.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace nmperm::kernels::cuda {

namespace {

template <class T> __global__ void softmax_kernel(const T* x, T* y, int64_t K, bool log_out) {
  const T* xr = x + int64_t(blockIdx.x) * K;
  T* yr = y + int64_t(blockIdx.x) * K;
  T m = T(-INFINITY);
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) m = max(m, xr[k]);
  m = block_max(m);
  double s = 0;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) s += double(exp(xr[k] - m));
  s = block_sum(s);
  if (log_out) {
    T lse = T(log(s));
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) yr[k] = xr[k] - m - lse;
  } else {
    T inv = T(1.0 / s);
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) yr[k] = exp(xr[k] - m) * inv;
  }
}

template <class T> __global__ void softmax_backward_kernel(const T* y, const T* dy, T* dx, int64_t K, bool log_in) {
  int64_t base = int64_t(blockIdx.x) * K;
  const T *yr = y + base, *gr = dy + base;
  T* dr = dx + base;
  double s = 0;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) s += log_in ? double(gr[k]) : double(gr[k]) * double(yr[k]);
  T t = T(block_sum(s));
  if (log_in)
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) dr[k] = gr[k] - exp(yr[k]) * t;
  else
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) dr[k] = yr[k] * (gr[k] - t);
}

void check_rows(const char* op, const Tensor& a, const Tensor& b) {
  NMPERM_CHECK(a.ndim() == 2 && a.is_contiguous() && b.shape() == a.shape() && b.is_contiguous(),
               "{}: wants contiguous (rows, K) tensors of one shape, got {} and {}", op, describe(a), describe(b));
  NMPERM_CHECK(a.shape(0) <= int64_t(INT32_MAX), "{}: {} rows are too many for one launch", op, a.shape(0));
}

}  // namespace

void softmax_rows(const Tensor& x, Tensor& y, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  check_rows(op, x, y);
  if (x.numel() == 0) return;
  on_float(x.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    NMPERM_LAUNCH(unsigned(x.shape(0)), kThreads, 0, stream(), softmax_kernel<T>)
        (x.data<T>(), y.data<T>(), x.shape(1), log);
  });
  check_launch(op);
}

void softmax_rows_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool log) {
  const char* op = log ? "log_softmax_backward" : "softmax_backward";
  check_rows(op, y, dy);
  check_rows(op, y, dx);
  if (y.numel() == 0) return;
  on_float(y.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    NMPERM_LAUNCH(unsigned(y.shape(0)), kThreads, 0, stream(), softmax_backward_kernel<T>)
        (y.data<T>(), dy.data<T>(), dx.data<T>(), y.shape(1), log);
  });
  check_launch(op);
}

}  // namespace nmperm::kernels::cuda

// CPU softmax: a numerically stable three-pass row kernel (max, exp-sum, scale), parallel
// over rows.
#include "kernels/softmax.h"

#include <cmath>
#include <limits>

#include "kernels/dispatch.h"

namespace nmperm::kernels {

void softmax_rows(const Tensor& x, Tensor& y, bool log) {
  require_cpu(log ? "log_softmax" : "softmax", x, y);
  int64_t R = x.shape(0), K = x.shape(1);
  dispatch_float(x.dtype(), [&]<class T>() {
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
#pragma omp parallel for if (R * K > 16384) schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      const T* xr = xp + r * K;
      T* yr = yp + r * K;
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t k = 0; k < K; ++k) m = std::max(m, xr[k]);
      if (std::isinf(m) && m < 0) m = 0;  // a fully masked row: keep the NaN-free convention of exp(-inf) = 0
      T s = 0;
      if (log) {
        for (int64_t k = 0; k < K; ++k) s += std::exp(xr[k] - m);
        T lse = m + std::log(s);
        for (int64_t k = 0; k < K; ++k) yr[k] = xr[k] - lse;
      } else {
        for (int64_t k = 0; k < K; ++k) {
          T e = std::exp(xr[k] - m);
          yr[k] = e;
          s += e;
        }
        T inv = T(1) / s;
        for (int64_t k = 0; k < K; ++k) yr[k] *= inv;
      }
    }
  });
}

void softmax_rows_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool log) {
  require_cpu(log ? "log_softmax_backward" : "softmax_backward", y, dy, dx);
  int64_t R = y.shape(0), K = y.shape(1);
  dispatch_float(y.dtype(), [&]<class T>() {
    const T *yp = y.data<T>(), *gp = dy.data<T>();
    T* dp = dx.data<T>();
#pragma omp parallel for if (R * K > 16384) schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      const T *yr = yp + r * K, *gr = gp + r * K;
      T* dr = dp + r * K;
      T s = 0;
      if (log) {
        for (int64_t k = 0; k < K; ++k) s += gr[k];
        for (int64_t k = 0; k < K; ++k) dr[k] = gr[k] - std::exp(yr[k]) * s;
      } else {
        for (int64_t k = 0; k < K; ++k) s += gr[k] * yr[k];
        for (int64_t k = 0; k < K; ++k) dr[k] = yr[k] * (gr[k] - s);
      }
    }
  });
}

}  // namespace nmperm::kernels

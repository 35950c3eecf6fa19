// CPU softmax: a numerically stable three-pass row kernel (max, exp-sum, scale), parallel
// over rows.
#include "kernels/softmax.h"
#include "kernels/cpu/launchers.h"

#include <cmath>
#include <limits>

#include "kernels/cpu/vmath.h"

namespace nmperm::kernels::cpu {

void softmax_rows(const Tensor& x, Tensor& y, bool log) {
  int64_t R = x.shape(0), K = x.shape(1);
  dispatch_float(x.dtype(), [&]<class T>() {
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
#pragma omp parallel for if (R * K > 16384) schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      const T* __restrict xr = xp + r * K;
      T* __restrict yr = yp + r * K;
      T m = max_of(xr, K);
      if (std::isinf(m) && m < 0) m = 0;  // a fully masked row: exp(-inf) = 0 everywhere, no NaN from inf - inf
      T s = 0;
      if (log) {
        s = exp_shift_sum<T>(xr, m, nullptr, K);
        T lse = m + std::log(s);
#pragma omp simd
        for (int64_t k = 0; k < K; ++k) yr[k] = xr[k] - lse;
      } else {
        s = exp_shift_sum<T>(xr, m, yr, K);
        T inv = T(1) / s;
#pragma omp simd
        for (int64_t k = 0; k < K; ++k) yr[k] *= inv;
      }
    }
  });
}

void softmax_rows_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool log) {
  int64_t R = y.shape(0), K = y.shape(1);
  dispatch_float(y.dtype(), [&]<class T>() {
    const T *yp = y.data<T>(), *gp = dy.data<T>();
    T* dp = dx.data<T>();
#pragma omp parallel for if (R * K > 16384) schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      const T *__restrict yr = yp + r * K, *__restrict gr = gp + r * K;
      T* __restrict dr = dp + r * K;
      T s = 0;
      if (log) {
        s = dot<T>(gr, nullptr, K);
        exp_shift_sum<T>(yr, T(0), dr, K);  // softmax = exp(log_softmax)
#pragma omp simd
        for (int64_t k = 0; k < K; ++k) dr[k] = gr[k] - dr[k] * s;
      } else {
        s = dot<T>(gr, yr, K);
#pragma omp simd
        for (int64_t k = 0; k < K; ++k) dr[k] = yr[k] * (gr[k] - s);
      }
    }
  });
}

}  // namespace nmperm::kernels::cpu

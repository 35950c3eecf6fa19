// CPU softmax: a numerically stable three-pass row kernel (max, exp-sum, scale), parallel
// over rows.
#include "kernels/softmax.h"
#include "kernels/cpu/launchers.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/vmath.h"

namespace nmperm::kernels::cpu {

namespace {

// f32 softmax of rows shorter than a vector (the learned method's soft N:M mask: groups
// of M = 4): a row-by-row exp would be all scalar tail, so a chunk of rows is shifted,
// exponentiated as one contiguous run of 8-lane vectors and normalised. Each element and
// each row's sum are computed as in the row kernel, so the results are the same bits.
void softmax_short_rows(const float* xp, float* yp, int64_t R, int64_t K) {
  constexpr int64_t kChunk = 512;
#pragma omp parallel for if (R * K > 16384) schedule(static)
  for (int64_t c = 0; c < R; c += kChunk) {
    const int64_t n = std::min(kChunk, R - c);
    const float* __restrict xr = xp + c * K;
    float* __restrict yr = yp + c * K;
    for (int64_t r = 0; r < n; ++r) {
      float m = max_of(xr + r * K, K);
      if (std::isinf(m) && m < 0) m = 0;
      for (int64_t k = 0; k < K; ++k) yr[r * K + k] = xr[r * K + k] - m;
    }
    exp_shift_sum<float>(yr, 0.0f, yr, n * K);
    for (int64_t r = 0; r < n; ++r) {
      float s = 0;
      for (int64_t k = 0; k < K; ++k) s += yr[r * K + k];
      const float inv = 1.0f / s;
      for (int64_t k = 0; k < K; ++k) yr[r * K + k] *= inv;
    }
  }
}

}  // namespace

void softmax_rows(const Tensor& x, Tensor& y, bool log) {
  int64_t R = x.shape(0), K = x.shape(1);
  if (x.dtype() == DType::F32 && !log && K < 8) return softmax_short_rows(x.data<float>(), y.data<float>(), R, K);
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

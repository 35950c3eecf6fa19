#include "kernels/sinkhorn.h"
#include "kernels/cpu/launchers.h"

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/vmath.h"

namespace nmperm::kernels::cpu {

namespace {

// X = L - R[i] - C[j] (the current log-plan) into x.
template <class T> void current(const T* L, const std::vector<T>& R, const std::vector<T>& C, int64_t n, T* x) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) x[i * n + j] = L[i * n + j] - R[size_t(i)] - C[size_t(j)];
}

template <class T> T lse(const T* v, int64_t n, int64_t stride) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t k = 0; k < n; ++k) m = std::max(m, v[k * stride]);
  if (std::isinf(m)) return m;
  T s = 0;
  for (int64_t k = 0; k < n; ++k) s += std::exp(v[k * stride] - m);
  return m + std::log(s);
}

}  // namespace

void sinkhorn(const Tensor& logits, int64_t iters, Tensor& p, Tensor& row_norm, Tensor& col_norm) {
  int64_t G = logits.shape(0), n = logits.shape(1);
  dispatch_float(logits.dtype(), [&]<class T>() {
    const T* lp = logits.data<T>();
    T *pp = p.data<T>(), *rp = row_norm.data<T>(), *cp = col_norm.data<T>();
#pragma omp parallel for schedule(dynamic) if (G > 1)
    for (int64_t g = 0; g < G; ++g) {
      const T* L = lp + g * n * n;
      T* X = pp + g * n * n;  // the log-plan lives in the output until the final exp
      for (int64_t k = 0; k < n * n; ++k) X[k] = L[k];
      for (int64_t it = 0; it < iters; ++it) {
        T* rk = rp + (g * iters + it) * n;
        T* ck = cp + (g * iters + it) * n;
        for (int64_t i = 0; i < n; ++i) {
          rk[i] = lse(X + i * n, n, 1);
          for (int64_t j = 0; j < n; ++j) X[i * n + j] -= rk[i];
        }
        for (int64_t j = 0; j < n; ++j) ck[j] = lse(X + j, n, n);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < n; ++j) X[i * n + j] -= ck[j];
      }
      for (int64_t k = 0; k < n * n; ++k) X[k] = vexp(X[k]);
    }
  });
}

void sinkhorn_backward(const Tensor& logits, const Tensor& row_norm, const Tensor& col_norm, const Tensor& dp,
                       Tensor& dlogits) {
  int64_t G = logits.shape(0), n = logits.shape(1), iters = row_norm.shape(1);
  dispatch_float(logits.dtype(), [&]<class T>() {
    const T *lp = logits.data<T>(), *rp = row_norm.data<T>(), *cp = col_norm.data<T>(), *gp = dp.data<T>();
    T* dl = dlogits.data<T>();
#pragma omp parallel for schedule(dynamic) if (G > 1)
    for (int64_t g = 0; g < G; ++g) {
      const T* L = lp + g * n * n;
      T* D = dl + g * n * n;  // the running gradient w.r.t. the current log-plan
      std::vector<T> R(static_cast<size_t>(n), T(0)), C(static_cast<size_t>(n), T(0)), X(static_cast<size_t>(n * n)),
          s(static_cast<size_t>(n));
      for (int64_t it = 0; it < iters; ++it)
        for (int64_t i = 0; i < n; ++i) {
          R[size_t(i)] += rp[(g * iters + it) * n + i];
          C[size_t(i)] += cp[(g * iters + it) * n + i];
        }
      // P = exp(X_final): dX = dP * P.
      current(L, R, C, n, X.data());
      for (int64_t k = 0; k < n * n; ++k) D[k] = gp[g * n * n + k] * vexp(X[size_t(k)]);
      for (int64_t it = iters - 1; it >= 0; --it) {
        // Column step Y = X - c: dX = dY - exp(Y) * colsum(dY), Y being the plan after it.
        std::fill(s.begin(), s.end(), T(0));
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < n; ++j) s[size_t(j)] += D[i * n + j];
        for (int64_t k = 0; k < n * n; ++k) D[k] -= vexp(X[size_t(k)]) * s[size_t(k % n)];
        for (int64_t j = 0; j < n; ++j) C[size_t(j)] -= cp[(g * iters + it) * n + j];
        // Row step Z = X - r: the plan after it is the current one with this column step undone.
        current(L, R, C, n, X.data());
        for (int64_t i = 0; i < n; ++i) {
          T rs = 0;
          for (int64_t j = 0; j < n; ++j) rs += D[i * n + j];
          for (int64_t j = 0; j < n; ++j) D[i * n + j] -= vexp(X[size_t(i * n + j)]) * rs;
        }
        for (int64_t i = 0; i < n; ++i) R[size_t(i)] -= rp[(g * iters + it) * n + i];
        current(L, R, C, n, X.data());  // the plan after the previous iteration's column step
      }
    }
  });
}

}  // namespace nmperm::kernels::cpu

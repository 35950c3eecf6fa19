#include "kernels/sinkhorn.h"
#include "kernels/cpu/launchers.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include <omp.h>

#include "kernels/cpu/vmath.h"

namespace nmperm::kernels::cpu {

// Every pass walks the (n, n) block row by row, so the column steps read memory in order
// and vectorise like the row steps: a column's log-sum-exp keeps a running max and sum per
// column while the rows stream past. Rows are split among threads in the row steps and
// columns in the column steps; either way each row's and each column's sum runs in the
// same order whatever the thread count, so the results do not depend on it. One block at
// a time, parallel inside it, so a single wide block (G = 1) uses every thread too.
namespace {

constexpr int64_t kLanes = 8;

// The column range [lo, hi) of thread t of nt for n columns, in whole vectors.
std::pair<int64_t, int64_t> columns_of(int t, int nt, int64_t n) {
  int64_t vecs = (n + kLanes - 1) / kLanes, per = (vecs + nt - 1) / nt;
  return {std::min(n, t * per * kLanes), std::min(n, (t + 1) * per * kLanes)};
}

// out[j] = f(j) for j in [lo, hi), 8 lanes at a time (f takes the first column and
// returns the value for V = float lanes or T scalars).
template <class T, class F> void each(int64_t lo, int64_t hi, T* out, F f) {
  int64_t j = lo;
  if constexpr (sizeof(T) == 4)
    for (; j + kLanes <= hi; j += kLanes) {
      f32x8 v = f.template operator()<f32x8>(j);
      std::memcpy(out + j, &v, sizeof v);
    }
  for (; j < hi; ++j) out[j] = f.template operator()<T>(j);
}

// Loads lanes j.. of x as V (a scalar or 8 floats).
template <class V, class T> V load(const T* x, int64_t j) {
  if constexpr (std::is_same_v<V, T>) {
    return x[j];
  } else {
    V v;
    std::memcpy(&v, x + j, sizeof v);
    return v;
  }
}

// Row step on rows [lo, hi): r[i] = logsumexp(X[i, :]); X[i, :] -= r[i].
template <class T> void row_step(T* X, T* r, int64_t n, int64_t lo, int64_t hi) {
  for (int64_t i = lo; i < hi; ++i) {
    T* x = X + i * n;
    T m = max_of(x, n);
    T v = std::isinf(m) ? m : m + std::log(exp_shift_sum(x, m, static_cast<T*>(nullptr), n));
    r[i] = v;
    each(0, n, x, [&]<class V>(int64_t j) { return load<V>(x, j) - v; });
  }
}

// Column step on columns [lo, hi): c[j] = logsumexp(X[:, j]); X[:, j] -= c[j]. m and s
// are the running max and sum (n each).
template <class T> void column_step(T* X, T* c, T* m, T* s, int64_t n, int64_t lo, int64_t hi) {
  std::fill(m + lo, m + hi, -std::numeric_limits<T>::infinity());
  std::fill(s + lo, s + hi, T(0));
  for (int64_t i = 0; i < n; ++i) {
    const T* x = X + i * n;
    each(lo, hi, m, [&]<class V>(int64_t j) {
      V a = load<V>(x, j), b = load<V>(m, j);
      return a > b ? a : b;
    });
  }
  for (int64_t i = 0; i < n; ++i) {
    const T* x = X + i * n;
    // An all -inf column keeps its sum 0 (its max is -inf; exp(-inf - -inf) would be NaN).
    each(lo, hi, s, [&]<class V>(int64_t j) {
      V mm = load<V>(m, j), e = vexp<V>(load<V>(x, j) - mm);
      return load<V>(s, j) + (mm == -std::numeric_limits<float>::infinity() ? V{} * 0 : e);
    });
  }
  for (int64_t j = lo; j < hi; ++j) c[j] = std::isinf(m[j]) ? m[j] : m[j] + std::log(s[j]);
  for (int64_t i = 0; i < n; ++i) {
    T* x = X + i * n;
    each(lo, hi, x, [&]<class V>(int64_t j) { return load<V>(x, j) - load<V>(c, j); });
  }
}

}  // namespace

void sinkhorn(const Tensor& logits, int64_t iters, Tensor& p, Tensor& row_norm, Tensor& col_norm) {
  int64_t G = logits.shape(0), n = logits.shape(1);
  dispatch_float(logits.dtype(), [&]<class T>() {
    const T* lp = logits.data<T>();
    T *pp = p.data<T>(), *rp = row_norm.data<T>(), *cp = col_norm.data<T>();
    std::vector<T> m(static_cast<size_t>(n)), s(static_cast<size_t>(n));
    const bool parallel = n * n >= (1 << 16);
    for (int64_t g = 0; g < G; ++g) {
      const T* L = lp + g * n * n;
      T* X = pp + g * n * n;  // the log-plan lives in the output until the final exp
#pragma omp parallel if (parallel)
      {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t rlo = n * t / nt, rhi = n * (t + 1) / nt;
        const auto [clo, chi] = columns_of(t, nt, n);
        std::memcpy(X + rlo * n, L + rlo * n, size_t((rhi - rlo) * n) * sizeof(T));
#pragma omp barrier
        for (int64_t it = 0; it < iters; ++it) {
          row_step(X, rp + (g * iters + it) * n, n, rlo, rhi);
#pragma omp barrier
          column_step(X, cp + (g * iters + it) * n, m.data(), s.data(), n, clo, chi);
#pragma omp barrier
        }
        for (int64_t i = rlo; i < rhi; ++i) each(0, n, X + i * n, [&]<class V>(int64_t j) {
            return vexp<V>(load<V>(X + i * n, j));
          });
      }
    }
  });
}

void sinkhorn_backward(const Tensor& logits, const Tensor& row_norm, const Tensor& col_norm, const Tensor& dp,
                       Tensor& dlogits) {
  int64_t G = logits.shape(0), n = logits.shape(1), iters = row_norm.shape(1);
  dispatch_float(logits.dtype(), [&]<class T>() {
    const T *lp = logits.data<T>(), *rp = row_norm.data<T>(), *cp = col_norm.data<T>(), *gp = dp.data<T>();
    T* dl = dlogits.data<T>();
    // R, C: the normalisers subtracted so far, so the plan at any stage is L - R[i] - C[j];
    // s: column sums of the running gradient.
    std::vector<T> R(static_cast<size_t>(n)), C(static_cast<size_t>(n)), s(static_cast<size_t>(n));
    const bool parallel = n * n >= (1 << 16);
    for (int64_t g = 0; g < G; ++g) {
      const T* L = lp + g * n * n;
      const T* dP = gp + g * n * n;
      T* D = dl + g * n * n;  // the running gradient w.r.t. the current log-plan
      const T* r_all = rp + g * iters * n;
      const T* c_all = cp + g * iters * n;
#pragma omp parallel if (parallel)
      {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t rlo = n * t / nt, rhi = n * (t + 1) / nt;
        const auto [clo, chi] = columns_of(t, nt, n);
        for (int64_t i = rlo; i < rhi; ++i) {
          T sr = 0, sc = 0;
          for (int64_t it = 0; it < iters; ++it) sr += r_all[it * n + i], sc += c_all[it * n + i];
          R[size_t(i)] = sr, C[size_t(i)] = sc;
        }
#pragma omp barrier
        // P = exp(X_final): dX = dP * P.
        for (int64_t i = rlo; i < rhi; ++i) {
          const T *l = L + i * n, *dpi = dP + i * n;
          const T ri = R[size_t(i)];
          each(0, n, D + i * n, [&]<class V>(int64_t j) {
            return load<V>(dpi, j) * vexp<V>(load<V>(l, j) - ri - load<V>(C.data(), j));
          });
        }
#pragma omp barrier
        for (int64_t it = iters - 1; it >= 0; --it) {
          // Column step Y = X - c: dX = dY - exp(Y) * colsum(dY), Y being the plan after it.
          std::fill(s.begin() + clo, s.begin() + chi, T(0));
          for (int64_t i = 0; i < n; ++i) {
            const T* d = D + i * n;
            each(clo, chi, s.data(), [&]<class V>(int64_t j) { return load<V>(s.data(), j) + load<V>(d, j); });
          }
          for (int64_t i = 0; i < n; ++i) {
            const T* l = L + i * n;
            T* d = D + i * n;
            const T ri = R[size_t(i)];
            each(clo, chi, d, [&]<class V>(int64_t j) {
              return load<V>(d, j) - vexp<V>(load<V>(l, j) - ri - load<V>(C.data(), j)) * load<V>(s.data(), j);
            });
          }
          for (int64_t j = clo; j < chi; ++j) C[size_t(j)] -= c_all[it * n + j];
#pragma omp barrier
          // Row step Z = X - r: the plan after it is the current one with this column step undone.
          for (int64_t i = rlo; i < rhi; ++i) {
            const T* l = L + i * n;
            T* d = D + i * n;
            const T ri = R[size_t(i)], rs = dot(d, static_cast<const T*>(nullptr), n);
            each(0, n, d, [&]<class V>(int64_t j) {
              return load<V>(d, j) - vexp<V>(load<V>(l, j) - ri - load<V>(C.data(), j)) * rs;
            });
            R[size_t(i)] -= r_all[it * n + i];
          }
#pragma omp barrier
        }
      }
    }
  });
}

}  // namespace nmperm::kernels::cpu

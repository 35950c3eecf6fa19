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

// The plan is never stored: with R[i] and C[j] the row and column normalisers subtracted
// so far, the log-plan is X[i, j] = L[i, j] - R[i] - C[j], computed where it is needed
// (one expression, `plan`, in both directions). A forward iteration is then two passes
// over L, each one exp per entry: the row step (rows split among threads) and the column
// step (columns split among threads, every pass walking rows so that reads stay in
// order and vectorise). After a column step every entry is <= 0 (columns sum to 1), and
// after a row step likewise, so the sums need no max shift; only where a sum underflows
// (a row or column far below the rest) is it recomputed with its max. The first row step
// has no such bound and always shifts by the max.
//
// The backward fuses each step's sum into the previous step's pass: the column step's
// pass leaves partial row sums and the row step's pass partial column sums, over fixed
// chunks of columns and rows whose edges the threads' ranges follow, added in chunk order.
// So every sum runs in the same order whatever the thread count, and the results do not
// depend on it. One block at a time, parallel inside it, so a single wide block (G = 1)
// uses every thread too.
namespace {

constexpr int64_t kLanes = 8;
constexpr int64_t kRowChunk = 32;   // rows per partial column sum
constexpr int64_t kColChunk = 64;   // columns per partial row sum (whole vectors)

// [lo, hi) of thread t of nt over n items in chunks of `chunk`, in whole chunks.
std::pair<int64_t, int64_t> range_of(int t, int nt, int64_t n, int64_t chunk) {
  int64_t chunks = (n + chunk - 1) / chunk;
  return {std::min(n, chunks * t / nt * chunk), std::min(n, chunks * (t + 1) / nt * chunk)};
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
template <class V, class T> void store(T* x, int64_t j, V v) { std::memcpy(x + j, &v, sizeof v); }

// For j in [lo, hi), 8 lanes at a time then scalars: f.template operator()<V>(j) with V =
// f32x8 or T (one body, so the tail matches the lanes).
template <class T, class F> void each(int64_t lo, int64_t hi, F f) {
  int64_t j = lo;
  if constexpr (sizeof(T) == 4)
    for (; j + kLanes <= hi; j += kLanes) f.template operator()<f32x8>(j);
  for (; j < hi; ++j) f.template operator()<T>(j);
}

// The log-plan at (row l with its R, columns j..): the one expression both directions use.
template <class V, class T> V plan(const T* l, T r, const T* C, int64_t j) { return load<V>(l, j) - r - load<V>(C, j); }

// A sum is trusted without a shift while it is at least this (the terms it loses to
// underflow, each below exp(-87) or exp(-708), are then negligible beside it).
template <class T> constexpr T kTrusted = sizeof(T) == 4 ? T(1e-20) : T(1e-200);

// Horizontal sum of 8 lanes, in lane order.
inline float hsum(f32x8 v) {
  float s = 0;
  for (int k = 0; k < 8; ++k) s += v[k];
  return s;
}

// log-sum-exp of x[0..n) (a row of the plan given by `at`), shifted by its max.
template <class T, class At> T lse_shifted(int64_t n, At at) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < n; ++j) m = std::max(m, at(j));
  if (std::isinf(m)) return m;
  T s = 0;
  for (int64_t j = 0; j < n; ++j) s += vexp<T>(at(j) - m);
  return m + std::log(s);
}

// Row step on rows [lo, hi): r[i] = logsumexp_j X[i, j]; R[i] += r[i].
template <class T> void row_step(const T* L, T* R, const T* C, T* r, int64_t n, int64_t lo, int64_t hi, bool first) {
  for (int64_t i = lo; i < hi; ++i) {
    const T* l = L + i * n;
    const T ri = R[i];
    T v;
    if (first) {  // X = L: no bound yet
      T m = max_of(l, n);
      v = std::isinf(m) ? m : m + std::log(exp_shift_sum(l, m, static_cast<T*>(nullptr), n));
    } else {
      T s = 0;
      if constexpr (sizeof(T) == 4) {
        f32x8 acc{};
        int64_t j = 0;
        for (; j + kLanes <= n; j += kLanes) acc += exp_v(plan<f32x8>(l, ri, C, j));
        s = hsum(acc);
        for (; j < n; ++j) s += exp_v(plan<T>(l, ri, C, j));
      } else {
        for (int64_t j = 0; j < n; ++j) s += vexp(plan<T>(l, ri, C, j));
      }
      v = s >= kTrusted<T> ? std::log(s) : lse_shifted<T>(n, [&](int64_t j) { return plan<T>(l, ri, C, j); });
    }
    r[i] = v;
    R[i] = ri + v;
  }
}

// Column step on columns [lo, hi): c[j] = logsumexp_i X[i, j]; C[j] += c[j]. s: n sums.
template <class T> void column_step(const T* L, const T* R, T* C, T* c, T* s, int64_t n, int64_t lo, int64_t hi) {
  std::fill(s + lo, s + hi, T(0));
  for (int64_t i = 0; i < n; ++i) {
    const T* l = L + i * n;
    const T ri = R[i];
    each<T>(lo, hi, [&]<class V>(int64_t j) { store(s, j, load<V>(s, j) + vexp<V>(plan<V>(l, ri, C, j))); });
  }
  for (int64_t j = lo; j < hi; ++j) {
    T v = s[j] >= kTrusted<T> ? std::log(s[j]) : lse_shifted<T>(n, [&](int64_t i) { return plan<T>(L + i * n, R[i], C, j); });
    c[j] = v;
    C[j] += v;
  }
}

}  // namespace

void sinkhorn(const Tensor& logits, int64_t iters, Tensor& p, Tensor& row_norm, Tensor& col_norm) {
  int64_t G = logits.shape(0), n = logits.shape(1);
  dispatch_float(logits.dtype(), [&]<class T>() {
    const T* lp = logits.data<T>();
    T *pp = p.data<T>(), *rp = row_norm.data<T>(), *cp = col_norm.data<T>();
    std::vector<T> R(static_cast<size_t>(n)), C(static_cast<size_t>(n)), s(static_cast<size_t>(n));
    const bool parallel = n * n >= (1 << 16);
    for (int64_t g = 0; g < G; ++g) {
      const T* L = lp + g * n * n;
      T* P = pp + g * n * n;
      std::fill(R.begin(), R.end(), T(0));
      std::fill(C.begin(), C.end(), T(0));
#pragma omp parallel if (parallel)
      {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const auto [rlo, rhi] = range_of(t, nt, n, 1);
        const auto [clo, chi] = range_of(t, nt, n, kLanes);
        for (int64_t it = 0; it < iters; ++it) {
          row_step(L, R.data(), C.data(), rp + (g * iters + it) * n, n, rlo, rhi, it == 0);
#pragma omp barrier
          column_step(L, R.data(), C.data(), cp + (g * iters + it) * n, s.data(), n, clo, chi);
#pragma omp barrier
        }
        for (int64_t i = rlo; i < rhi; ++i) {
          const T *l = L + i * n, ri = R[size_t(i)];
          each<T>(0, n, [&]<class V>(int64_t j) { store(P + i * n, j, vexp<V>(plan<V>(l, ri, C.data(), j))); });
        }
      }
    }
  });
}

void sinkhorn_backward(const Tensor& logits, const Tensor& row_norm, const Tensor& col_norm, const Tensor& dp,
                       Tensor& dlogits) {
  int64_t G = logits.shape(0), n = logits.shape(1), iters = row_norm.shape(1);
  const int64_t row_chunks = (n + kRowChunk - 1) / kRowChunk, col_chunks = (n + kColChunk - 1) / kColChunk;
  dispatch_float(logits.dtype(), [&]<class T>() {
    const T *lp = logits.data<T>(), *rp = row_norm.data<T>(), *cp = col_norm.data<T>(), *gp = dp.data<T>();
    T* dl = dlogits.data<T>();
    // R, C: the normalisers subtracted so far, so the plan at any stage is L - R[i] - C[j].
    // colpart (row_chunks, n): partial column sums of the running gradient per chunk of rows;
    // rowpart (n, col_chunks): partial row sums per chunk of columns; s: the column sums.
    std::vector<T> R(static_cast<size_t>(n)), C(static_cast<size_t>(n)), s(static_cast<size_t>(n));
    std::vector<T> colpart(static_cast<size_t>(row_chunks * n)), rowpart(static_cast<size_t>(n * col_chunks));
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
        const auto [rlo, rhi] = range_of(t, nt, n, kRowChunk);
        const auto [clo, chi] = range_of(t, nt, n, kColChunk);
        for (int64_t i = rlo; i < rhi; ++i) {
          T sr = 0, sc = 0;
          for (int64_t it = 0; it < iters; ++it) sr += r_all[it * n + i], sc += c_all[it * n + i];
          R[size_t(i)] = sr, C[size_t(i)] = sc;
        }
#pragma omp barrier
        // A row-split pass: D[i, j] = f(i, a(i), j) for the rows of this thread, leaving
        // the column sums of every chunk of rows in colpart.
        auto row_pass = [&](auto a, auto f) {
          for (int64_t i = rlo; i < rhi; ++i) {
            T* part = colpart.data() + (i / kRowChunk) * n;
            const bool first = i % kRowChunk == 0;
            const T ai = a(i);
            T* d = D + i * n;
            each<T>(0, n, [&]<class V>(int64_t j) {
              V v = f.template operator()<V>(i, ai, j);
              store(d, j, v);
              store(part, j, first ? v : load<V>(part, j) + v);
            });
          }
        };
        // P = exp(X_final): dX = dP * P.
        row_pass([&](int64_t i) { return R[size_t(i)]; },
                 [&]<class V>(int64_t i, T ri, int64_t j) {
                   return load<V>(dP + i * n, j) * vexp<V>(plan<V>(L + i * n, ri, C.data(), j));
                 });
#pragma omp barrier
        for (int64_t it = iters - 1; it >= 0; --it) {
          // Column step Y = X - c: dX = dY - exp(Y) * colsum(dY), Y being the plan after it.
          for (int64_t j = clo; j < chi; ++j) {
            T v = 0;
            for (int64_t k = 0; k < row_chunks; ++k) v += colpart[size_t(k * n + j)];
            s[size_t(j)] = v;
          }
          for (int64_t i = 0; i < n; ++i) {
            const T* l = L + i * n;
            T* d = D + i * n;
            const T ri = R[size_t(i)];
            T* part = rowpart.data() + i * col_chunks;
            for (int64_t lo = clo; lo < chi; lo += kColChunk) {
              const int64_t hi = std::min(chi, lo + kColChunk);
              T sum = 0;
              if constexpr (sizeof(T) == 4) {
                f32x8 acc{};
                int64_t j = lo;
                for (; j + kLanes <= hi; j += kLanes) {
                  f32x8 v = load<f32x8>(d, j) - vexp<f32x8>(plan<f32x8>(l, ri, C.data(), j)) * load<f32x8>(s.data(), j);
                  store(d, j, v);
                  acc += v;
                }
                sum = hsum(acc);
                for (; j < hi; ++j) sum += d[j] = d[j] - vexp<T>(plan<T>(l, ri, C.data(), j)) * s[size_t(j)];
              } else {
                for (int64_t j = lo; j < hi; ++j) sum += d[j] = d[j] - vexp<T>(plan<T>(l, ri, C.data(), j)) * s[size_t(j)];
              }
              part[lo / kColChunk] = sum;
            }
          }
          for (int64_t j = clo; j < chi; ++j) C[size_t(j)] -= c_all[it * n + j];
#pragma omp barrier
          // Row step Z = X - r: the plan after it is the current one with this column step undone.
          row_pass(
              [&](int64_t i) {  // the row's sum, from the column step's partial sums
                T rs = 0;
                for (int64_t k = 0; k < col_chunks; ++k) rs += rowpart[size_t(i * col_chunks + k)];
                return rs;
              },
              [&]<class V>(int64_t i, T rs, int64_t j) {
                return load<V>(D + i * n, j) - vexp<V>(plan<V>(L + i * n, R[size_t(i)], C.data(), j)) * rs;
              });
          for (int64_t i = rlo; i < rhi; ++i) R[size_t(i)] -= r_all[it * n + i];
#pragma omp barrier
        }
      }
    }
  });
}

}  // namespace nmperm::kernels::cpu

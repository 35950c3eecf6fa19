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
// (one expression, `plan`, in both directions). Each iteration, forward or backward, is
// one pass over the rows (split among threads) with one exp per entry:
// - forward: a row's entries e = exp(X) give its normaliser r = log(sum e), and e / sum e
//   (the entries after the row step) add into the column sums of the column step. Sums
//   need no max shift after the first step: once a step has normalised the rows (or
//   columns), every entry is <= 0 and every column's (row's) largest is >= -log n, and the
//   next step lowers entries by at most log n, so no sum falls below 1 / n^2. The first row
//   step shifts by the max; a column sum of the first iteration may still underflow (a
//   column far below the rest) and is then recomputed shifted by its max.
// - backward: the plan after the column step, P1 = exp(X), gives that step's gradient
//   (with the column sums of the running gradient) and, times exp(c), the plan after the
//   row step and its gradient (with the row's sum, taken in the same pass).
// Column sums are partial sums over fixed chunks of rows, whose edges the threads' ranges
// follow, added in chunk order; a row's sums run in one thread. So every sum runs in the
// same order whatever the thread count, and the results do not depend on it. One block at
// a time, parallel inside it, so a single wide block (G = 1) uses every thread too.
namespace {

constexpr int64_t kLanes = 8;
constexpr int64_t kRowChunk = 32;  // rows per partial column sum

// [lo, hi) of thread t of nt over n items in chunks of `chunk`, in whole chunks.
std::pair<int64_t, int64_t> range_of(int t, int nt, int64_t n, int64_t chunk) {
  int64_t chunks = (n + chunk - 1) / chunk;
  return {std::min(n, chunks * t / nt * chunk), std::min(n, chunks * (t + 1) / nt * chunk)};
}

// Loads lanes j.. of x as V (a scalar or 8 floats), and stores them.
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

// Horizontal sum of 8 lanes, in lane order.
inline float hsum(f32x8 v) {
  float s = 0;
  for (int k = 0; k < 8; ++k) s += v[k];
  return s;
}

// sum over j < n of f.template operator()<V>(j), 8 lanes at a time then scalars (one body
// for V = f32x8 or T, so the tail matches the lanes); `each` runs f the same way, unsummed.
template <class T, class F> T sum_each(int64_t n, F f) {
  T s = 0;
  int64_t j = 0;
  if constexpr (sizeof(T) == 4) {
    f32x8 acc{};
    for (; j + kLanes <= n; j += kLanes) acc += f.template operator()<f32x8>(j);
    s = hsum(acc);
  }
  for (; j < n; ++j) s += f.template operator()<T>(j);
  return s;
}
template <class T, class F> void each(int64_t n, F f) {
  int64_t j = 0;
  if constexpr (sizeof(T) == 4)
    for (; j + kLanes <= n; j += kLanes) f.template operator()<f32x8>(j);
  for (; j < n; ++j) f.template operator()<T>(j);
}

// The log-plan at (row l with its R, columns j..): the one expression both directions use.
template <class V, class T> V plan(const T* l, T r, const T* C, int64_t j) { return load<V>(l, j) - r - load<V>(C, j); }

// A column sum is trusted without a shift while it is at least this (the terms it loses
// to underflow, each below exp(-87) or exp(-708), are then negligible beside it).
template <class T> constexpr T kTrusted = sizeof(T) == 4 ? T(1e-20) : T(1e-200);

// The chunk of rows' partial column sums that row i adds into: the first row of a chunk
// starts it.
template <class T> struct ColumnParts {
  std::vector<T> parts;  // (row chunks, n)
  int64_t n = 0;
  explicit ColumnParts(int64_t n_) : parts(size_t((n_ + kRowChunk - 1) / kRowChunk * n_)), n(n_) {}
  template <class V> void add(int64_t i, int64_t j, V v) {
    T* part = parts.data() + (i / kRowChunk) * n;
    store(part, j, i % kRowChunk == 0 ? v : load<V>(part, j) + v);
  }
  T column(int64_t j) const {  // the whole column's sum, chunks in order
    T v = 0;
    for (size_t k = 0; k < parts.size() / size_t(n); ++k) v += parts[k * size_t(n) + size_t(j)];
    return v;
  }
};

}  // namespace

void sinkhorn(const Tensor& logits, int64_t iters, Tensor& p, Tensor& row_norm, Tensor& col_norm) {
  int64_t G = logits.shape(0), n = logits.shape(1);
  dispatch_float(logits.dtype(), [&]<class T>() {
    const T* lp = logits.data<T>();
    T *pp = p.data<T>(), *rp = row_norm.data<T>(), *cp = col_norm.data<T>();
    std::vector<T> R(static_cast<size_t>(n)), C(static_cast<size_t>(n));
    ColumnParts<T> cols(n);
    const bool parallel = n * n >= (1 << 16);
    for (int64_t g = 0; g < G; ++g) {
      const T* L = lp + g * n * n;
      T* P = pp + g * n * n;
      std::fill(R.begin(), R.end(), T(0));
      std::fill(C.begin(), C.end(), T(0));
#pragma omp parallel if (parallel)
      {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const auto [rlo, rhi] = range_of(t, nt, n, kRowChunk);
        const auto [clo, chi] = range_of(t, nt, n, kLanes);
        std::vector<T> e(static_cast<size_t>(n));  // one row's exp(X - shift)
        for (int64_t it = 0; it < iters; ++it) {
          T* r = rp + (g * iters + it) * n;
          for (int64_t i = rlo; i < rhi; ++i) {
            const T* l = L + i * n;
            const T ri = R[size_t(i)];
            // Shifted by the max at first; after a column step the row's sum needs no shift.
            const T shift = it == 0 ? max_of(l, n) : T(0);
            const T s = std::isinf(shift) ? T(0) : sum_each<T>(n, [&]<class V>(int64_t j) {
              V v = vexp<V>(plan<V>(l, ri, C.data(), j) - shift);
              store(e.data(), j, v);
              return v;
            });
            // An all -inf row keeps normaliser -inf (as log-sum-exp does) and adds nothing.
            const T v = std::isinf(shift) ? shift : shift + std::log(s), inv = s > 0 ? T(1) / s : T(0);
            r[i] = v;
            R[size_t(i)] = ri + v;
            each<T>(n, [&]<class V>(int64_t j) { cols.add(i, j, load<V>(e.data(), j) * inv); });
          }
#pragma omp barrier
          T* c = cp + (g * iters + it) * n;
          for (int64_t j = clo; j < chi; ++j) {
            T s = cols.column(j), v;
            if (s >= kTrusted<T>) {
              v = std::log(s);
            } else {  // underflow: the column again, shifted by its max
              T m = -std::numeric_limits<T>::infinity(), z = 0;
              for (int64_t i = 0; i < n; ++i) m = std::max(m, plan<T>(L + i * n, R[size_t(i)], C.data(), j));
              if (!std::isinf(m))
                for (int64_t i = 0; i < n; ++i) z += vexp<T>(plan<T>(L + i * n, R[size_t(i)], C.data(), j) - m);
              v = std::isinf(m) ? m : m + std::log(z);
            }
            c[j] = v;
            C[size_t(j)] += v;
          }
#pragma omp barrier
        }
        for (int64_t i = rlo; i < rhi; ++i) {
          const T *l = L + i * n, ri = R[size_t(i)];
          each<T>(n, [&]<class V>(int64_t j) { store(P + i * n, j, vexp<V>(plan<V>(l, ri, C.data(), j))); });
        }
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
    // s: the column sums of the running gradient; ec: exp of the column step's normalisers.
    std::vector<T> R(static_cast<size_t>(n)), C(static_cast<size_t>(n)), s(static_cast<size_t>(n)),
        ec(static_cast<size_t>(n));
    ColumnParts<T> cols(n);
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
        const auto [clo, chi] = range_of(t, nt, n, kLanes);
        std::vector<T> p1(static_cast<size_t>(n));  // one row of the plan after a column step
        for (int64_t j = clo; j < chi; ++j) {
          T sr = 0, sc = 0;
          for (int64_t it = 0; it < iters; ++it) sr += r_all[it * n + j], sc += c_all[it * n + j];
          R[size_t(j)] = sr, C[size_t(j)] = sc;
        }
#pragma omp barrier
        // P = exp(X_final): dX = dP * P.
        for (int64_t i = rlo; i < rhi; ++i) {
          const T *l = L + i * n, *dpi = dP + i * n, ri = R[size_t(i)];
          each<T>(n, [&]<class V>(int64_t j) {
            V v = load<V>(dpi, j) * vexp<V>(plan<V>(l, ri, C.data(), j));
            store(D + i * n, j, v);
            cols.add(i, j, v);
          });
        }
#pragma omp barrier
        for (int64_t it = iters - 1; it >= 0; --it) {
          for (int64_t j = clo; j < chi; ++j) {
            if (it < iters - 1) C[size_t(j)] -= c_all[(it + 1) * n + j];  // undo the later column step
            s[size_t(j)] = cols.column(j);
            ec[size_t(j)] = vexp<T>(c_all[it * n + j]);
          }
#pragma omp barrier
          for (int64_t i = rlo; i < rhi; ++i) {
            const T* l = L + i * n;
            T* d = D + i * n;
            const T ri = R[size_t(i)];
            // Column step Y = X - c: dX = dY - exp(Y) * colsum(dY), Y the plan after it.
            const T rs = sum_each<T>(n, [&]<class V>(int64_t j) {
              V e = vexp<V>(plan<V>(l, ri, C.data(), j));
              store(p1.data(), j, e);
              V v = load<V>(d, j) - e * load<V>(s.data(), j);
              store(d, j, v);
              return v;
            });
            // Row step Z = X - r: dX = dZ - exp(Z) * rowsum(dZ), Z the plan after the row
            // step, that is before the column step: exp(Z) = exp(Y) * exp(c).
            each<T>(n, [&]<class V>(int64_t j) {
              V v = load<V>(d, j) - load<V>(p1.data(), j) * load<V>(ec.data(), j) * rs;
              store(d, j, v);
              cols.add(i, j, v);
            });
            R[size_t(i)] = ri - r_all[it * n + i];
          }
#pragma omp barrier
        }
      }
    }
  });
}

}  // namespace nmperm::kernels::cpu

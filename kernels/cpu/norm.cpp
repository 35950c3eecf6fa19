// CPU layer_norm / rms_norm. Rows run in parallel; inner loops are branch-free so they
// vectorize (a missing weight/bias is a row of ones/zeros). Weight/bias gradients are
// reduced per fixed row chunk and summed in chunk order, so results do not depend on
// the thread count or scheduling.
#include "kernels/norm.h"
#include "kernels/cpu/launchers.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/chunks.h"
#include "kernels/cpu/vmath.h"

namespace nmperm::kernels::cpu {

namespace {

constexpr int64_t kParallelGrain = 16384;

// The weight (or bias) as a dense row: the tensor's data, or `fill` repeated.
template <class T> struct Row {
  std::vector<T> own;
  const T* p;
  Row(const Tensor& t, int64_t C, T fill) {
    if (t.defined()) p = t.data<T>();
    else { own.assign(size_t(C), fill); p = own.data(); }
  }
};

// Sums per-chunk partial rows of length C into out, in chunk order.
template <class T> void reduce_partials(const std::vector<T>& part, int64_t n, int64_t C, T* out) {
  for (int64_t c = 0; c < C; ++c) out[c] = 0;
  for (int64_t t = 0; t < n; ++t) {
    const T* row = part.data() + t * C;
    for (int64_t c = 0; c < C; ++c) out[c] += row[c];
  }
}

}  // namespace

void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, Tensor& y, Tensor& mean, Tensor& rstd) {
  int64_t R = x.shape(0), C = x.shape(1);
  dispatch_float(x.dtype(), [&]<class T>() {
    const T* xp = x.data<T>();
    Row<T> wr(w, C, T(1)), br(b, C, T(0));
    const T *__restrict wp = wr.p, *__restrict bp = br.p;
    T *yp = y.data<T>(), *mp = mean.data<T>(), *rp = rstd.data<T>();
#pragma omp parallel for if (R * C > kParallelGrain) schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      const T* __restrict xr = xp + r * C;
      T* __restrict yr = yp + r * C;
      T m = dot<T>(xr, nullptr, C) / T(C), v = sum_sq_dev(xr, m, C);
      T rs = T(1) / std::sqrt(v / T(C) + T(eps));
      mp[r] = m;
      rp[r] = rs;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m) * rs * wp[c] + bp[c];
    }
  });
}

void layer_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd, const Tensor& dy,
                         Tensor& dx, Tensor& dw, Tensor& db) {
  int64_t R = x.shape(0), C = x.shape(1);
  dispatch_float(x.dtype(), [&]<class T>() {
    const T *xp = x.data<T>(), *mp = mean.data<T>(), *rp = rstd.data<T>(), *gp = dy.data<T>();
    Row<T> wr(w, C, T(1));
    const T* __restrict wp = wr.p;
    T* dxp = dx.defined() ? dx.data<T>() : nullptr;
    RowChunks ch(R);
    bool want_w = dw.defined(), want_b = db.defined();
    std::vector<T> pw(want_w ? size_t(ch.count * C) : 0, T(0)), pb(want_b ? size_t(ch.count * C) : 0, T(0));
#pragma omp parallel for schedule(static) if (R * C > kParallelGrain)
    for (int64_t t = 0; t < ch.count; ++t) {
      T* __restrict tw = want_w ? pw.data() + t * C : nullptr;
      T* __restrict tb = want_b ? pb.data() + t * C : nullptr;
      for (int64_t r = ch.begin(t); r < ch.end(t, R); ++r) {
        const T *__restrict xr = xp + r * C, *__restrict gr = gp + r * C;
        T m = mp[r], rs = rp[r];
        if (tw) {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) tw[c] += gr[c] * (xr[c] - m) * rs;
        }
        if (tb) {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) tb[c] += gr[c];
        }
        if (!dxp) continue;
        // dx = rstd * (g - mean(g) - n * mean(g * n)), g = dy * w, n = normalised x
        T s1 = dot(gr, wp, C);
        T s2 = rs * (dot3(gr, wp, xr, C) - m * s1);
        s1 /= T(C);
        s2 /= T(C);
        T* __restrict dr = dxp + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dr[c] = rs * (gr[c] * wp[c] - s1 - (xr[c] - m) * rs * s2);
      }
    }
    if (want_w) reduce_partials(pw, ch.count, C, dw.data<T>());
    if (want_b) reduce_partials(pb, ch.count, C, db.data<T>());
  });
}

void rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) {
  int64_t R = x.shape(0), C = x.shape(1);
  dispatch_float(x.dtype(), [&]<class T>() {
    const T* xp = x.data<T>();
    Row<T> wr(w, C, T(1));
    const T* __restrict wp = wr.p;
    T *yp = y.data<T>(), *rp = rstd.data<T>();
#pragma omp parallel for if (R * C > kParallelGrain) schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      const T* __restrict xr = xp + r * C;
      T* __restrict yr = yp + r * C;
      T rs = T(1) / std::sqrt(dot(xr, xr, C) / T(C) + T(eps));
      rp[r] = rs;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * rs * wp[c];
    }
  });
}

void rms_norm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy, Tensor& dx,
                       Tensor& dw) {
  int64_t R = x.shape(0), C = x.shape(1);
  dispatch_float(x.dtype(), [&]<class T>() {
    const T *xp = x.data<T>(), *rp = rstd.data<T>(), *gp = dy.data<T>();
    Row<T> wr(w, C, T(1));
    const T* __restrict wp = wr.p;
    T* dxp = dx.defined() ? dx.data<T>() : nullptr;
    RowChunks ch(R);
    bool want_w = dw.defined();
    std::vector<T> pw(want_w ? size_t(ch.count * C) : 0, T(0));
#pragma omp parallel for schedule(static) if (R * C > kParallelGrain)
    for (int64_t t = 0; t < ch.count; ++t) {
      T* __restrict tw = want_w ? pw.data() + t * C : nullptr;
      for (int64_t r = ch.begin(t); r < ch.end(t, R); ++r) {
        const T *__restrict xr = xp + r * C, *__restrict gr = gp + r * C;
        T rs = rp[r];
        if (tw) {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) tw[c] += gr[c] * xr[c] * rs;
        }
        if (!dxp) continue;
        // dx = rstd * g - x * rstd^3 * mean(g * x), g = dy * w
        T s = dot3(gr, wp, xr, C);
        T k = s * rs * rs * rs / T(C);
        T* __restrict dr = dxp + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dr[c] = gr[c] * wp[c] * rs - xr[c] * k;
      }
    }
    if (want_w) reduce_partials(pw, ch.count, C, dw.data<T>());
  });
}

}  // namespace nmperm::kernels::cpu

// CPU layer_norm / rms_norm. Rows run in parallel; weight/bias gradients are reduced
// per fixed row chunk and then summed in chunk order, so results do not depend on the
// thread count or scheduling.
#include "kernels/norm.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/chunks.h"
#include "kernels/dispatch.h"

namespace nmperm::kernels {

void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, Tensor& y, Tensor& mean, Tensor& rstd) {
  require_cpu("layer_norm", x, w, b, y, mean, rstd);
  int64_t R = x.shape(0), C = x.shape(1);
  dispatch_float(x.dtype(), [&]<class T>() {
    const T* xp = x.data<T>();
    const T* wp = w.defined() ? w.data<T>() : nullptr;
    const T* bp = b.defined() ? b.data<T>() : nullptr;
    T *yp = y.data<T>(), *mp = mean.data<T>(), *rp = rstd.data<T>();
#pragma omp parallel for if (R * C > 16384) schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      const T* xr = xp + r * C;
      T* yr = yp + r * C;
      T s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t c = 0; c < C; ++c) s += xr[c];
      T m = s / T(C), v = 0;
#pragma omp simd reduction(+ : v)
      for (int64_t c = 0; c < C; ++c) v += (xr[c] - m) * (xr[c] - m);
      T rs = T(1) / std::sqrt(v / T(C) + T(eps));
      mp[r] = m;
      rp[r] = rs;
      for (int64_t c = 0; c < C; ++c) {
        T n = (xr[c] - m) * rs;
        yr[c] = n * (wp ? wp[c] : T(1)) + (bp ? bp[c] : T(0));
      }
    }
  });
}

namespace {

// Sums per-chunk partial rows of length C into out, in chunk order.
template <class T> void reduce_partials(const std::vector<T>& part, int64_t n, int64_t C, T* out) {
  for (int64_t c = 0; c < C; ++c) {
    T s = 0;
    for (int64_t t = 0; t < n; ++t) s += part[size_t(t) * size_t(C) + size_t(c)];
    out[c] = s;
  }
}

}  // namespace

void layer_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd, const Tensor& dy,
                         Tensor& dx, Tensor& dw, Tensor& db) {
  require_cpu("layer_norm_backward", x, w, mean, rstd, dy, dx, dw, db);
  int64_t R = x.shape(0), C = x.shape(1);
  dispatch_float(x.dtype(), [&]<class T>() {
    const T *xp = x.data<T>(), *mp = mean.data<T>(), *rp = rstd.data<T>(), *gp = dy.data<T>();
    const T* wp = w.defined() ? w.data<T>() : nullptr;
    T* dxp = dx.defined() ? dx.data<T>() : nullptr;
    RowChunks ch(R);
    bool want_w = dw.defined(), want_b = db.defined();
    std::vector<T> pw(want_w ? size_t(ch.count * C) : 0, T(0)), pb(want_b ? size_t(ch.count * C) : 0, T(0));
#pragma omp parallel for schedule(static) if (R * C > 16384)
    for (int64_t t = 0; t < ch.count; ++t) {
      T* tw = want_w ? pw.data() + size_t(t * C) : nullptr;
      T* tb = want_b ? pb.data() + size_t(t * C) : nullptr;
      for (int64_t r = ch.begin(t); r < ch.end(t, R); ++r) {
        const T *xr = xp + r * C, *gr = gp + r * C;
        T m = mp[r], rs = rp[r], s1 = 0, s2 = 0;
        for (int64_t c = 0; c < C; ++c) {
          T n = (xr[c] - m) * rs, g = gr[c] * (wp ? wp[c] : T(1));
          s1 += g;
          s2 += g * n;
          if (tw) tw[c] += gr[c] * n;
          if (tb) tb[c] += gr[c];
        }
        if (dxp) {
          T* dr = dxp + r * C;
          s1 /= T(C);
          s2 /= T(C);
          for (int64_t c = 0; c < C; ++c) {
            T n = (xr[c] - m) * rs, g = gr[c] * (wp ? wp[c] : T(1));
            dr[c] = rs * (g - s1 - n * s2);
          }
        }
      }
    }
    if (want_w) reduce_partials(pw, ch.count, C, dw.data<T>());
    if (want_b) reduce_partials(pb, ch.count, C, db.data<T>());
  });
}

void rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) {
  require_cpu("rms_norm", x, w, y, rstd);
  int64_t R = x.shape(0), C = x.shape(1);
  dispatch_float(x.dtype(), [&]<class T>() {
    const T* xp = x.data<T>();
    const T* wp = w.defined() ? w.data<T>() : nullptr;
    T *yp = y.data<T>(), *rp = rstd.data<T>();
#pragma omp parallel for if (R * C > 16384) schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      const T* xr = xp + r * C;
      T* yr = yp + r * C;
      T s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t c = 0; c < C; ++c) s += xr[c] * xr[c];
      T rs = T(1) / std::sqrt(s / T(C) + T(eps));
      rp[r] = rs;
      for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * rs * (wp ? wp[c] : T(1));
    }
  });
}

void rms_norm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy, Tensor& dx,
                       Tensor& dw) {
  require_cpu("rms_norm_backward", x, w, rstd, dy, dx, dw);
  int64_t R = x.shape(0), C = x.shape(1);
  dispatch_float(x.dtype(), [&]<class T>() {
    const T *xp = x.data<T>(), *rp = rstd.data<T>(), *gp = dy.data<T>();
    const T* wp = w.defined() ? w.data<T>() : nullptr;
    T* dxp = dx.defined() ? dx.data<T>() : nullptr;
    RowChunks ch(R);
    bool want_w = dw.defined();
    std::vector<T> pw(want_w ? size_t(ch.count * C) : 0, T(0));
#pragma omp parallel for schedule(static) if (R * C > 16384)
    for (int64_t t = 0; t < ch.count; ++t) {
      T* tw = want_w ? pw.data() + size_t(t * C) : nullptr;
      for (int64_t r = ch.begin(t); r < ch.end(t, R); ++r) {
        const T *xr = xp + r * C, *gr = gp + r * C;
        T rs = rp[r], s = 0;
        for (int64_t c = 0; c < C; ++c) {
          T g = gr[c] * (wp ? wp[c] : T(1));
          s += g * xr[c];
          if (tw) tw[c] += gr[c] * xr[c] * rs;
        }
        if (dxp) {
          T* dr = dxp + r * C;
          T k = s * rs * rs * rs / T(C);
          for (int64_t c = 0; c < C; ++c) dr[c] = (gr[c] * (wp ? wp[c] : T(1))) * rs - xr[c] * k;
        }
      }
    }
    if (want_w) reduce_partials(pw, ch.count, C, dw.data<T>());
  });
}

}  // namespace nmperm::kernels

#include "kernels/index.h"
#include "kernels/cpu/launchers.h"


namespace nmperm::kernels::cpu {

namespace {

using Dims = IndexDims;

template <class I> void check_range(const I* p, int64_t n, int64_t limit, const char* op) {
  for (int64_t i = 0; i < n; ++i)
    NMPERM_CHECK(p[i] >= 0 && p[i] < limit, "{}: index {} out of range [0, {})", op, int64_t(p[i]), limit);
}

}  // namespace

void index_select(const Tensor& x, int64_t dim, const Tensor& idx, Tensor& out) {
  Dims dx = split_at(x.shape(), dim);
  int64_t n = idx.numel();
  dispatch_index(idx.dtype(), [&]<class I>() {
    const I* ip = idx.data<I>();
    check_range(ip, n, dx.d, "index_select");
    dispatch_all(x.dtype(), [&]<class T>() {
      const T* xp = x.data<T>();
      T* op = out.data<T>();
      if (dx.inner == 1) {  // picking entries of rows (a column permutation): a tight loop per row
#pragma omp parallel for if (dx.outer * n > 32768)
        for (int64_t o = 0; o < dx.outer; ++o) {
          const T* s = xp + o * dx.d;
          T* d = op + o * n;
          for (int64_t i = 0; i < n; ++i) d[i] = s[ip[i]];
        }
        return;
      }
#pragma omp parallel for collapse(2) if (dx.outer * n * dx.inner > 32768)
      for (int64_t o = 0; o < dx.outer; ++o)
        for (int64_t i = 0; i < n; ++i) {
          const T* s = xp + (o * dx.d + int64_t(ip[i])) * dx.inner;
          T* d = op + (o * n + i) * dx.inner;
          for (int64_t k = 0; k < dx.inner; ++k) d[k] = s[k];
        }
    });
  });
}

void index_add(Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src) {
  Dims dd = split_at(out.shape(), dim);
  int64_t n = idx.numel();
  dispatch_index(idx.dtype(), [&]<class I>() {
    const I* ip = idx.data<I>();
    check_range(ip, n, dd.d, "index_add");
    dispatch_float(out.dtype(), [&]<class T>() {
      const T* sp = src.data<T>();
      T* op = out.data<T>();
      // Parallel over the outer dim only, so no two threads touch the same output element;
      // the sum over i runs in index order, so results are deterministic.
#pragma omp parallel for if (dd.outer * n * dd.inner > 32768)
      for (int64_t o = 0; o < dd.outer; ++o)
        for (int64_t i = 0; i < n; ++i) {
          const T* s = sp + (o * n + i) * dd.inner;
          T* d = op + (o * dd.d + int64_t(ip[i])) * dd.inner;
          for (int64_t k = 0; k < dd.inner; ++k) d[k] += s[k];
        }
    });
  });
}

void gather(const Tensor& x, int64_t dim, const Tensor& idx, Tensor& out) {
  Dims dx = split_at(x.shape(), dim), di = split_at(idx.shape(), dim);
  dispatch_index(idx.dtype(), [&]<class I>() {
    const I* ip = idx.data<I>();
    check_range(ip, idx.numel(), dx.d, "gather");
    dispatch_all(x.dtype(), [&]<class T>() {
      const T* xp = x.data<T>();
      T* op = out.data<T>();
#pragma omp parallel for if (idx.numel() > 32768)
      for (int64_t o = 0; o < di.outer; ++o)
        for (int64_t i = 0; i < di.d; ++i)
          for (int64_t k = 0; k < di.inner; ++k) {
            int64_t e = (o * di.d + i) * di.inner + k;
            op[e] = xp[(o * dx.d + int64_t(ip[e])) * dx.inner + k];
          }
    });
  });
}

void scatter_add(Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src) {
  Dims dd = split_at(out.shape(), dim), di = split_at(idx.shape(), dim);
  dispatch_index(idx.dtype(), [&]<class I>() {
    const I* ip = idx.data<I>();
    check_range(ip, idx.numel(), dd.d, "scatter_add");
    dispatch_float(out.dtype(), [&]<class T>() {
      const T* sp = src.data<T>();
      T* op = out.data<T>();
      // Each outer slice is owned by one thread; within it the adds run in index order.
#pragma omp parallel for if (idx.numel() > 32768)
      for (int64_t o = 0; o < di.outer; ++o)
        for (int64_t i = 0; i < di.d; ++i)
          for (int64_t k = 0; k < di.inner; ++k) {
            int64_t e = (o * di.d + i) * di.inner + k;
            op[(o * dd.d + int64_t(ip[e])) * dd.inner + k] += sp[e];
          }
    });
  });
}

}  // namespace nmperm::kernels::cpu

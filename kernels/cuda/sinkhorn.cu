// CUDA log-domain Sinkhorn over a batch of square blocks (kernels/sinkhorn.h), the same
// normalisers as the CPU kernel, which keeps the plan implicit; here the log-plan lives in
// the output, each iteration is one row kernel (a block per row: log-sum-exp, subtract) and
// one column kernel (a thread per column walking down the rows, so reads are coalesced
// across threads). The backward keeps
// only the running row and column totals (G, n) and recomputes the plan L - R - C on the
// fly, like the CPU kernel; no (n, n) intermediate besides the gradient itself.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace nmperm::kernels::cuda {

namespace {

// Log-sum-exp of one row of X, then X -= it; the normaliser goes to norm[row].
template <class T> __global__ void row_step(T* X, int64_t n, T* norm, int64_t norm_stride) {
  int64_t row = blockIdx.x;  // g * n + i
  T* x = X + row * n;
  T m = T(-INFINITY);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = max(m, x[j]);
  m = block_max(m);
  T l = m;
  if (!isinf(m)) {
    T s = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += exp(x[j] - m);
    l = m + log(block_sum(s));
  }
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) x[j] -= l;
  if (threadIdx.x == 0) norm[(row / n) * norm_stride + row % n] = l;
}

// The same over columns: a thread per (g, j).
template <class T> __global__ void col_step(T* X, int64_t G, int64_t n, T* norm, int64_t norm_stride) {
  NMPERM_GRID_STRIDE(e, G * n) {
    int64_t g = e / n, j = e % n;
    T* x = X + g * n * n + j;
    T m = T(-INFINITY);
    for (int64_t i = 0; i < n; ++i) m = max(m, x[i * n]);
    T l = m;
    if (!isinf(m)) {
      T s = 0;
      for (int64_t i = 0; i < n; ++i) s += exp(x[i * n] - m);
      l = m + log(s);
    }
    for (int64_t i = 0; i < n; ++i) x[i * n] -= l;
    norm[g * norm_stride + j] = l;
  }
}

template <class T> __global__ void exp_inplace(T* x, int64_t n) {
  NMPERM_GRID_STRIDE(i, n) x[i] = exp(x[i]);
}

// R[g, i] = sum over iterations of row_norm[g, it, i]; the same for C (in iteration order).
template <class T>
__global__ void totals(const T* rn, const T* cn, int64_t G, int64_t iters, int64_t n, T* R, T* C) {
  NMPERM_GRID_STRIDE(e, G * n) {
    int64_t g = e / n, i = e % n;
    T r = 0, c = 0;
    for (int64_t it = 0; it < iters; ++it) {
      r += rn[(g * iters + it) * n + i];
      c += cn[(g * iters + it) * n + i];
    }
    R[e] = r;
    C[e] = c;
  }
}

// D = dP * P with P = exp(L - R - C).
template <class T> __global__ void grad_of_exp(const T* L, const T* dp, const T* R, const T* C, int64_t n, int64_t total,
                                               T* D) {
  NMPERM_GRID_STRIDE(e, total) {
    int64_t g = e / (n * n), i = e / n % n, j = e % n;
    D[e] = dp[e] * exp(L[e] - R[g * n + i] - C[g * n + j]);
  }
}

// Undo one column step: D -= exp(X) * colsum(D) with X = L - R - C, then C -= c_it.
template <class T>
__global__ void col_back(const T* L, const T* R, T* C, const T* c_it, int64_t G, int64_t n, int64_t c_stride, T* D) {
  NMPERM_GRID_STRIDE(e, G * n) {
    int64_t g = e / n, j = e % n;
    const T* l = L + g * n * n + j;
    T* d = D + g * n * n + j;
    const T* r = R + g * n;
    T s = 0;
    for (int64_t i = 0; i < n; ++i) s += d[i * n];
    T cj = C[e];
    for (int64_t i = 0; i < n; ++i) d[i * n] -= exp(l[i * n] - r[i] - cj) * s;
    C[e] = cj - c_it[g * c_stride + j];
  }
}

// Undo one row step: D -= exp(X) * rowsum(D) with X = L - R - C, then R -= r_it.
template <class T>
__global__ void row_back(const T* L, T* R, const T* C, const T* r_it, int64_t n, int64_t r_stride, T* D) {
  int64_t row = blockIdx.x, g = row / n, i = row % n;
  const T* l = L + row * n;
  const T* c = C + g * n;
  T* d = D + row * n;
  T ri = R[row];
  T s = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += d[j];
  s = block_sum(s);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) d[j] -= exp(l[j] - ri - c[j]) * s;
  if (threadIdx.x == 0) R[row] = ri - r_it[g * r_stride + i];
}

void check_blocks(const char* op, const Tensor& a, const Tensor& b) {
  NMPERM_CHECK(a.ndim() == 3 && a.shape(1) == a.shape(2) && a.is_contiguous() && b.shape() == a.shape() &&
                   b.is_contiguous(),
               "{}: wants contiguous (G, n, n) blocks, got {} and {}", op, describe(a), describe(b));
  NMPERM_CHECK(a.shape(0) * a.shape(1) <= int64_t(INT32_MAX), "{}: {} rows are too many for one launch", op,
               a.shape(0) * a.shape(1));
}

void check_norms(const char* op, const Tensor& a, const Tensor& r, const Tensor& c, int64_t iters) {
  Shape s{a.shape(0), iters, a.shape(1)};
  NMPERM_CHECK(r.shape() == s && c.shape() == s && r.is_contiguous() && c.is_contiguous(),
               "{}: row/column normalisers must be contiguous {}, got {} and {}", op, s, describe(r), describe(c));
}

}  // namespace

void sinkhorn(const Tensor& logits, int64_t iters, Tensor& p, Tensor& row_norm, Tensor& col_norm) {
  check_blocks("sinkhorn", logits, p);
  check_norms("sinkhorn", logits, row_norm, col_norm, iters);
  int64_t G = logits.shape(0), n = logits.shape(1);
  if (G * n == 0) return;
  copy(logits, p);
  on_float(logits.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    T* X = p.data<T>();
    for (int64_t it = 0; it < iters; ++it) {
      NMPERM_LAUNCH(unsigned(G * n), kThreads, 0, stream(), row_step<T>)(X, n, row_norm.data<T>() + it * n, iters * n);
      NMPERM_LAUNCH(grid_for(G * n), kThreads, 0, stream(), col_step<T>)
          (X, G, n, col_norm.data<T>() + it * n, iters * n);
    }
    NMPERM_LAUNCH(grid_for(G * n * n), kThreads, 0, stream(), exp_inplace<T>)(X, G * n * n);
  });
  check_launch("sinkhorn");
}

void sinkhorn_backward(const Tensor& logits, const Tensor& row_norm, const Tensor& col_norm, const Tensor& dp,
                       Tensor& dlogits) {
  check_blocks("sinkhorn_backward", logits, dp);
  check_blocks("sinkhorn_backward", logits, dlogits);
  int64_t G = logits.shape(0), n = logits.shape(1), iters = row_norm.ndim() == 3 ? row_norm.shape(1) : -1;
  check_norms("sinkhorn_backward", logits, row_norm, col_norm, iters);
  if (G * n == 0) return;
  Tensor R = Tensor::empty({G, n}, logits.dtype(), Device::CUDA), C = Tensor::empty({G, n}, logits.dtype(), Device::CUDA);
  on_float(logits.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    const T *L = logits.data<T>(), *rn = row_norm.data<T>(), *cn = col_norm.data<T>();
    T *D = dlogits.data<T>(), *Rp = R.data<T>(), *Cp = C.data<T>();
    NMPERM_LAUNCH(grid_for(G * n), kThreads, 0, stream(), totals<T>)(rn, cn, G, iters, n, Rp, Cp);
    NMPERM_LAUNCH(grid_for(G * n * n), kThreads, 0, stream(), grad_of_exp<T>)(L, dp.data<T>(), Rp, Cp, n, G * n * n, D);
    for (int64_t it = iters - 1; it >= 0; --it) {
      NMPERM_LAUNCH(grid_for(G * n), kThreads, 0, stream(), col_back<T>)(L, Rp, Cp, cn + it * n, G, n, iters * n, D);
      NMPERM_LAUNCH(unsigned(G * n), kThreads, 0, stream(), row_back<T>)(L, Rp, Cp, rn + it * n, n, iters * n, D);
    }
  });
  check_launch("sinkhorn_backward");
}

}  // namespace nmperm::kernels::cuda

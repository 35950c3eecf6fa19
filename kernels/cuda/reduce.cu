// CUDA reductions: one block per row for row reductions (f32 sums accumulate in double,
// as on the CPU), one thread per column walking every row for column sums. Fixed
// reduction order: deterministic run to run.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace nmperm::kernels::cuda {

namespace {

template <class T> __global__ void reduce_rows_kernel(ReduceOp op, const T* x, int64_t K, T* out, int64_t* idx,
                                                      int64_t correction) {
  const T* row = x + int64_t(blockIdx.x) * K;
  if (op == ReduceOp::ArgMax || op == ReduceOp::ArgMin) {
    bool mx = op == ReduceOp::ArgMax;
    // Each thread's best (first on ties), then a shared-memory tree that keeps the
    // smaller index on ties: the first extreme element overall.
    T best = row[0];
    int64_t bi = 0;
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x)
      if (mx ? row[k] > best : row[k] < best) best = row[k], bi = k;
      else if (row[k] == best && k < bi) bi = k;
    __shared__ T sv[1024];
    __shared__ int64_t si[1024];
    sv[threadIdx.x] = best;
    si[threadIdx.x] = bi;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
      if (int(threadIdx.x) < s) {
        T v = sv[threadIdx.x + s];
        int64_t i = si[threadIdx.x + s];
        if ((mx ? v > sv[threadIdx.x] : v < sv[threadIdx.x]) || (v == sv[threadIdx.x] && i < si[threadIdx.x]))
          sv[threadIdx.x] = v, si[threadIdx.x] = i;
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) idx[blockIdx.x] = si[0];
    return;
  }
  if (op == ReduceOp::Max || op == ReduceOp::Min) {
    T m = row[0];
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) m = op == ReduceOp::Max ? max(m, row[k]) : min(m, row[k]);
    T r = op == ReduceOp::Max ? block_max(m) : -block_max(-m);
    if (threadIdx.x == 0) out[blockIdx.x] = r;
    return;
  }
  if (op == ReduceOp::LogSumExp) {
    T m = T(-INFINITY);
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) m = max(m, row[k]);
    m = block_max(m);
    if (isinf(double(m)) || K == 0) {
      if (threadIdx.x == 0) out[blockIdx.x] = K == 0 ? -INFINITY : m;
      return;
    }
    double s = 0;
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) s += double(exp(row[k] - m));
    s = block_sum(s);
    if (threadIdx.x == 0) out[blockIdx.x] = T(double(m) + log(s));
    return;
  }
  double s = 0;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) s += double(row[k]);
  s = block_sum(s);
  if (op == ReduceOp::Var) {
    double mean = s / double(K), q = 0;
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) q += (double(row[k]) - mean) * (double(row[k]) - mean);
    q = block_sum(q);
    if (threadIdx.x == 0) out[blockIdx.x] = T(q / double(K - correction));
    return;
  }
  if (threadIdx.x == 0) out[blockIdx.x] = T(op == ReduceOp::Mean ? s / double(K) : s);
}

template <class T> __global__ void reduce_cols_kernel(const T* x, int64_t K, int64_t N, T* out, double scale) {
  NMPERM_GRID_STRIDE(c, N) {
    double s = 0;
    for (int64_t k = 0; k < K; ++k) s += double(x[k * N + c]);
    out[c] = T(s * scale);
  }
}

}  // namespace

void reduce_rows(ReduceOp op, const Tensor& x, Tensor& out, int64_t correction) {
  NMPERM_CHECK(x.ndim() == 2 && x.is_contiguous() && out.numel() == x.shape(0) && out.is_contiguous(),
               "reduce_rows: bad shapes {} -> {}", x.shape(), out.shape());
  int64_t R = x.shape(0), K = x.shape(1);
  if (R == 0) return;
  bool arg = op == ReduceOp::ArgMax || op == ReduceOp::ArgMin;
  if (arg || op == ReduceOp::Max || op == ReduceOp::Min)
    NMPERM_CHECK(K > 0, "{} over an empty dim", arg ? "argmax/argmin" : "max/min");
  NMPERM_CHECK(R <= int64_t(INT32_MAX), "reduce_rows: {} rows are too many for one launch", R);
  on_float(x.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    T* o = arg ? nullptr : out.data<T>();
    int64_t* ip = arg ? out.data<int64_t>() : nullptr;
    NMPERM_LAUNCH(unsigned(R), kThreads, 0, stream(), reduce_rows_kernel<T>)(op, x.data<T>(), K, o, ip, correction);
  });
  check_launch("reduce_rows");
}

void reduce_cols(ReduceOp op, const Tensor& x, Tensor& out) {
  NMPERM_CHECK((op == ReduceOp::Sum || op == ReduceOp::Mean) && x.ndim() == 2 && x.is_contiguous() &&
                   out.numel() == x.shape(1) && out.is_contiguous(),
               "reduce_cols: bad arguments {} -> {}", x.shape(), out.shape());
  int64_t K = x.shape(0), N = x.shape(1);
  if (N == 0) return;
  on_float(x.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    NMPERM_LAUNCH(grid_for(N), kThreads, 0, stream(), reduce_cols_kernel<T>)
        (x.data<T>(), K, N, out.data<T>(), op == ReduceOp::Mean ? 1.0 / double(K) : 1.0);
  });
  check_launch("reduce_cols");
}

}  // namespace nmperm::kernels::cuda

// CPU row reductions, accumulating in double for f32 sums so long rows stay accurate.
#include "kernels/reduce.h"
#include "kernels/cpu/launchers.h"

#include <algorithm>
#include <cmath>
#include <limits>


namespace nmperm::kernels::cpu {

void reduce_rows(ReduceOp op, const Tensor& x, Tensor& out, int64_t correction) {
  NMPERM_CHECK(x.ndim() == 2 && x.is_contiguous() && out.numel() == x.shape(0), "reduce_rows: bad shapes {} -> {}",
               x.shape(), out.shape());
  int64_t R = x.shape(0), K = x.shape(1);
  dispatch_float(x.dtype(), [&]<class T>() {
    const T* xp = x.data<T>();
    if (op == ReduceOp::ArgMax || op == ReduceOp::ArgMin) {
      NMPERM_CHECK(K > 0, "argmax/argmin over an empty dim");
      int64_t* o = out.data<int64_t>();
      bool mx = op == ReduceOp::ArgMax;
#pragma omp parallel for if (R * K > 32768)
      for (int64_t r = 0; r < R; ++r) {
        const T* row = xp + r * K;
        int64_t best = 0;
        for (int64_t k = 1; k < K; ++k)
          if (mx ? row[k] > row[best] : row[k] < row[best]) best = k;
        o[r] = best;
      }
      return;
    }
    if ((op == ReduceOp::Max || op == ReduceOp::Min) && R > 0)
      NMPERM_CHECK(K > 0, "max/min over an empty dim");
    T* o = out.data<T>();
#pragma omp parallel for if (R * K > 32768)
    for (int64_t r = 0; r < R; ++r) {
      const T* row = xp + r * K;
      switch (op) {
        case ReduceOp::Sum:
        case ReduceOp::Mean: {
          double s = 0;
#pragma omp simd reduction(+ : s)
          for (int64_t k = 0; k < K; ++k) s += double(row[k]);
          o[r] = T(op == ReduceOp::Mean ? s / double(K) : s);
          break;
        }
        case ReduceOp::Max:
        case ReduceOp::Min: {
          T m = row[0];
          for (int64_t k = 1; k < K; ++k) m = op == ReduceOp::Max ? std::max(m, row[k]) : std::min(m, row[k]);
          o[r] = m;
          break;
        }
        case ReduceOp::LogSumExp: {
          T m = -std::numeric_limits<T>::infinity();
          for (int64_t k = 0; k < K; ++k) m = std::max(m, row[k]);
          if (std::isinf(m)) { o[r] = m; break; }
          double s = 0;
          for (int64_t k = 0; k < K; ++k) s += double(std::exp(row[k] - m));
          o[r] = T(double(m) + std::log(s));
          break;
        }
        case ReduceOp::Var: {
          double mean = 0;
          for (int64_t k = 0; k < K; ++k) mean += double(row[k]);
          mean /= double(K);
          double s = 0;
          for (int64_t k = 0; k < K; ++k) s += (double(row[k]) - mean) * (double(row[k]) - mean);
          o[r] = T(s / double(K - correction));
          break;
        }
        default: break;
      }
    }
  });
}

void reduce_cols(ReduceOp op, const Tensor& x, Tensor& out) {
  NMPERM_CHECK((op == ReduceOp::Sum || op == ReduceOp::Mean) && x.ndim() == 2 && x.is_contiguous() &&
                   out.numel() == x.shape(1),
               "reduce_cols: bad arguments {} -> {}", x.shape(), out.shape());
  int64_t K = x.shape(0), N = x.shape(1);
  dispatch_float(x.dtype(), [&]<class T>() {
    const T* xp = x.data<T>();
    T* o = out.data<T>();
    // Each thread owns a block of columns and walks all rows in order: deterministic for
    // any thread count, and the inner loop runs along contiguous memory.
    constexpr int64_t kBlock = 256;
    int64_t nblocks = (N + kBlock - 1) / kBlock;
#pragma omp parallel for if (K * N > 32768) schedule(static)
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      int64_t c0 = blk * kBlock, c1 = std::min(N, c0 + kBlock);
      double acc[kBlock] = {};
      for (int64_t k = 0; k < K; ++k) {
        const T* row = xp + k * N;
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) acc[c - c0] += double(row[c]);
      }
      double scale = op == ReduceOp::Mean ? 1.0 / double(K) : 1.0;
      for (int64_t c = c0; c < c1; ++c) o[c] = T(acc[c - c0] * scale);
    }
  });
}

}  // namespace nmperm::kernels::cpu

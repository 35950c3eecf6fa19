// CPU row reductions, accumulating in double for f32 sums so long rows stay accurate.
#include "kernels/reduce.h"

#include <cmath>
#include <limits>

#include "kernels/dispatch.h"

namespace nmperm::kernels {

void reduce_rows(ReduceOp op, const Tensor& x, Tensor& out, int64_t correction) {
  require_cpu("reduce", x, out);
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

}  // namespace nmperm::kernels

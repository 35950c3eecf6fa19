#include "kernels/loss.h"
#include "kernels/cpu/launchers.h"

#include <cmath>
#include <limits>

#include "kernels/cpu/vmath.h"

namespace nmperm::kernels::cpu {

void cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index, double label_smoothing,
                   Tensor& loss_rows, Tensor& lse) {
  int64_t N = logits.shape(0), V = logits.shape(1);
  dispatch_index(target.dtype(), [&]<class I>() {
    const I* tp = target.data<I>();
    for (int64_t n = 0; n < N; ++n)
      NMPERM_CHECK(int64_t(tp[n]) == ignore_index || (tp[n] >= 0 && tp[n] < V),
                   "cross_entropy: target {} at row {} is outside [0, {})", int64_t(tp[n]), n, V);
    dispatch_float(logits.dtype(), [&]<class T>() {
      const T* xp = logits.data<T>();
      T *lp = loss_rows.data<T>(), *sp = lse.data<T>();
      T ls = T(label_smoothing);
#pragma omp parallel for if (N * V > 16384)
      for (int64_t n = 0; n < N; ++n) {
        const T* row = xp + n * V;
        T m = max_of(row, V);
        T l = m + std::log(exp_shift_sum<T>(row, m, nullptr, V)), sum = dot<T>(row, nullptr, V);
        sp[n] = l;
        if (int64_t(tp[n]) == ignore_index) {
          lp[n] = 0;
          continue;
        }
        lp[n] = (T(1) - ls) * (l - row[tp[n]]) + ls * (l - sum / T(V));
      }
    });
  });
}

void cross_entropy_backward(const Tensor& logits, const Tensor& target, const Tensor& lse, const Tensor& grad_rows,
                            int64_t ignore_index, double label_smoothing, Tensor& dlogits) {
  int64_t N = logits.shape(0), V = logits.shape(1);
  dispatch_index(target.dtype(), [&]<class I>() {
    const I* tp = target.data<I>();
    dispatch_float(logits.dtype(), [&]<class T>() {
      const T *xp = logits.data<T>(), *sp = lse.data<T>(), *gp = grad_rows.data<T>();
      T* dp = dlogits.data<T>();
      T ls = T(label_smoothing);
#pragma omp parallel for if (N * V > 16384)
      for (int64_t n = 0; n < N; ++n) {
        const T* row = xp + n * V;
        T* dr = dp + n * V;
        if (int64_t(tp[n]) == ignore_index) {
          for (int64_t v = 0; v < V; ++v) dr[v] = 0;
          continue;
        }
        T g = gp[n], off = ls / T(V);
        exp_shift_sum<T>(row, sp[n], dr, V);  // softmax of the row
        for (int64_t v = 0; v < V; ++v) dr[v] = g * (dr[v] - off);
        dr[tp[n]] -= g * (T(1) - ls);
      }
    });
  });
}

}  // namespace nmperm::kernels::cpu

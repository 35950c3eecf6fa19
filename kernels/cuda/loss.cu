// CUDA cross-entropy fused with log-softmax (kernels/loss.h): one block per row computes
// the row's max, log-sum-exp and mean logit in one pass over the logits each; the
// backward writes softmax - target distribution scaled by the row's gradient. Targets are
// range-checked on the host (N values, small next to the N x V logits).
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace nmperm::kernels::cuda {

namespace {

template <class T, class I>
__global__ void cross_entropy_kernel(const T* x, const I* target, int64_t V, int64_t ignore_index, T ls, T* loss,
                                     T* lse) {
  int64_t n = blockIdx.x;
  const T* row = x + n * V;
  T m = T(-INFINITY);
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) m = max(m, row[v]);
  m = block_max(m);
  double s = 0, sum = 0;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    s += double(exp(row[v] - m));
    sum += double(row[v]);
  }
  s = block_sum(s);
  sum = block_sum(sum);
  if (threadIdx.x != 0) return;
  T l = m + T(log(s));
  lse[n] = l;
  int64_t y = int64_t(target[n]);
  loss[n] = y == ignore_index ? T(0) : (T(1) - ls) * (l - row[y]) + ls * (l - T(sum) / T(V));
}

template <class T, class I>
__global__ void cross_entropy_backward_kernel(const T* x, const I* target, const T* lse, const T* grad, int64_t V,
                                              int64_t ignore_index, T ls, T* dx) {
  int64_t n = blockIdx.x;
  const T* row = x + n * V;
  T* dr = dx + n * V;
  int64_t y = int64_t(target[n]);
  T g = y == ignore_index ? T(0) : grad[n], off = ls / T(V), l = lse[n];
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x)
    dr[v] = g * (exp(row[v] - l) - off - (v == y ? T(1) - ls : T(0)));
}

void check_shapes(const char* op, const Tensor& logits, const Tensor& target) {
  NMPERM_CHECK(logits.ndim() == 2 && logits.is_contiguous() && target.ndim() == 1 && target.is_contiguous() &&
                   target.shape(0) == logits.shape(0),
               "{}: wants contiguous logits (N, V) and targets (N), got {} and {}", op, describe(logits),
               describe(target));
  NMPERM_CHECK(logits.shape(0) <= int64_t(INT32_MAX), "{}: {} rows are too many for one launch", op, logits.shape(0));
}

}  // namespace

void cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index, double label_smoothing,
                   Tensor& loss_rows, Tensor& lse) {
  check_shapes("cross_entropy", logits, target);
  int64_t N = logits.shape(0), V = logits.shape(1);
  if (N == 0) return;
  NMPERM_CHECK(V > 0, "cross_entropy: no classes (logits {})", logits.shape());
  on_index(target.dtype(), [&](auto I_tag) {
    using I = decltype(I_tag);
    std::vector<I> t(static_cast<size_t>(N));
    NMPERM_CUDA_CHECK(cudaMemcpy(t.data(), target.data<I>(), size_t(N) * sizeof(I), cudaMemcpyDeviceToHost));
    for (int64_t n = 0; n < N; ++n)
      NMPERM_CHECK(int64_t(t[size_t(n)]) == ignore_index || (t[size_t(n)] >= 0 && t[size_t(n)] < V),
                   "cross_entropy: target {} at row {} is outside [0, {})", int64_t(t[size_t(n)]), n, V);
    on_float(logits.dtype(), [&](auto T_tag) {
      using T = decltype(T_tag);
      NMPERM_LAUNCH(unsigned(N), kThreads, 0, stream(), cross_entropy_kernel<T, I>)
          (logits.data<T>(), target.data<I>(), V, ignore_index, T(label_smoothing), loss_rows.data<T>(), lse.data<T>());
    });
  });
  check_launch("cross_entropy");
}

void cross_entropy_backward(const Tensor& logits, const Tensor& target, const Tensor& lse, const Tensor& grad_rows,
                            int64_t ignore_index, double label_smoothing, Tensor& dlogits) {
  check_shapes("cross_entropy_backward", logits, target);
  int64_t N = logits.shape(0), V = logits.shape(1);
  if (N == 0 || V == 0) return;
  on_index(target.dtype(), [&](auto I_tag) {
    using I = decltype(I_tag);
    on_float(logits.dtype(), [&](auto T_tag) {
      using T = decltype(T_tag);
      NMPERM_LAUNCH(unsigned(N), kThreads, 0, stream(), cross_entropy_backward_kernel<T, I>)
          (logits.data<T>(), target.data<I>(), lse.data<T>(), grad_rows.data<T>(), V, ignore_index, T(label_smoothing),
           dlogits.data<T>());
    });
  });
  check_launch("cross_entropy_backward");
}

}  // namespace nmperm::kernels::cuda

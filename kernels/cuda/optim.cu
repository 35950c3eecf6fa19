// CUDA AdamW (one fused kernel per parameter tensor: moments, bias correction, decoupled
// decay and the update in one pass) and the sum of squares behind global-norm clipping,
// reduced in a fixed two-stage order so it is the same run to run.
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace nmperm::kernels::cuda {

namespace {

template <class T>
__global__ void adamw_kernel(T* p, const T* g, T* m, T* v, int64_t n, T b1, T b2, T eps, T decay, T step_size,
                             T inv_sqrt_bc2) {
  NMPERM_GRID_STRIDE(i, n) {
    T gi = g[i];
    T mi = b1 * m[i] + (T(1) - b1) * gi;
    T vi = b2 * v[i] + (T(1) - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * mi / (sqrt(vi) * inv_sqrt_bc2 + eps);
  }
}

constexpr int kPartials = 1024;  // fixed block count: the partial sums always split the same way

template <class T> __global__ void sum_squares_partial(const T* x, int64_t n, double* part) {
  double s = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    s += double(x[i]) * double(x[i]);
  s = block_sum(s);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void sum_partials(const double* part, int n, double* out) {
  double s = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += part[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *out = s;
}

}  // namespace

void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p, int64_t step) {
  require_cuda("adamw", param, grad, m, v);
  NMPERM_CHECK(param.is_contiguous() && grad.is_contiguous() && m.is_contiguous() && v.is_contiguous() &&
                   grad.shape() == param.shape() && m.shape() == param.shape() && v.shape() == param.shape(),
               "adamw: param {} grad {} m {} v {} must match and be contiguous", describe(param), describe(grad),
               describe(m), describe(v));
  NMPERM_CHECK(step >= 1, "adamw: step counts from 1, got {}", step);
  int64_t n = param.numel();
  if (n == 0) return;
  on_float(param.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    T bc1 = T(1.0 - std::pow(p.beta1, double(step))), bc2 = T(1.0 - std::pow(p.beta2, double(step)));
    adamw_kernel<T><<<grid_for(n), kThreads, 0, stream()>>>(
        param.data<T>(), grad.data<T>(), m.data<T>(), v.data<T>(), n, T(p.beta1), T(p.beta2), T(p.eps),
        T(1.0 - p.lr * p.weight_decay), T(p.lr) / bc1, T(1) / std::sqrt(bc2));
  });
  check_launch("adamw");
}

double sum_squares(const Tensor& t) {
  require_cuda("sum_squares", t);
  Tensor c = t.contiguous();
  Tensor part = Tensor::empty({kPartials + 1}, DType::F64, Device::CUDA);
  double* pp = part.data<double>();
  on_float(c.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    sum_squares_partial<T><<<kPartials, kThreads, 0, stream()>>>(c.data<T>(), c.numel(), pp);
  });
  sum_partials<<<1, 1024, 0, stream()>>>(pp, kPartials, pp + kPartials);
  check_launch("sum_squares");
  double out = 0;
  NMPERM_CUDA_CHECK(cudaMemcpy(&out, pp + kPartials, sizeof out, cudaMemcpyDeviceToHost));
  return out;
}

}  // namespace nmperm::kernels::cuda

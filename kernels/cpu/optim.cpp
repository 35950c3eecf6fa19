#include "kernels/optim.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/chunks.h"
#include "kernels/cuda/launchers.h"
#include "kernels/dispatch.h"

namespace nmperm::kernels {

void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p, int64_t step) {
  NMPERM_ROUTE_CUDA(param, adamw(param, grad, m, v, p, step));
  require_cpu("adamw", param, grad, m, v);
  NMPERM_CHECK(param.is_contiguous() && grad.shape() == param.shape() && m.shape() == param.shape() &&
                   v.shape() == param.shape(),
               "adamw: param {} grad {} m {} v {} must match and be contiguous", describe(param), describe(grad),
               describe(m), describe(v));
  NMPERM_CHECK(step >= 1, "adamw: step counts from 1, got {}", step);
  dispatch_float(param.dtype(), [&]<class T>() {
    Tensor gc = grad.contiguous();
    T *pp = param.data<T>(), *mp = m.data<T>(), *vp = v.data<T>();
    const T* gp = gc.data<T>();
    T lr = T(p.lr), b1 = T(p.beta1), b2 = T(p.beta2), eps = T(p.eps), decay = T(1.0 - p.lr * p.weight_decay);
    T bc1 = T(1.0 - std::pow(p.beta1, double(step))), bc2 = T(1.0 - std::pow(p.beta2, double(step)));
    T step_size = lr / bc1, inv_sqrt_bc2 = T(1) / std::sqrt(bc2);
    int64_t n = param.numel();
#pragma omp parallel for if (n > 32768) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      T g = gp[i];
      mp[i] = b1 * mp[i] + (T(1) - b1) * g;
      vp[i] = b2 * vp[i] + (T(1) - b2) * g * g;
      pp[i] = pp[i] * decay - step_size * mp[i] / (std::sqrt(vp[i]) * inv_sqrt_bc2 + eps);
    }
  });
}

double sum_squares(const Tensor& t) {
  NMPERM_ROUTE_CUDA(t, sum_squares(t));
  require_cpu("sum_squares", t);
  return dispatch_float(t.dtype(), [&]<class T>() {
    Tensor c = t.contiguous();
    const T* p = c.data<T>();
    int64_t n = c.numel();
    RowChunks ch(n, 256, 4096);
    std::vector<double> part(size_t(ch.count), 0.0);
#pragma omp parallel for if (n > 32768) schedule(static)
    for (int64_t t = 0; t < ch.count; ++t) {
      double s = 0;
      for (int64_t i = ch.begin(t); i < ch.end(t, n); ++i) s += double(p[i]) * double(p[i]);
      part[size_t(t)] = s;
    }
    double s = 0;
    for (double x : part) s += x;  // in chunk order: the same for any thread count
    return s;
  });
}

}  // namespace nmperm::kernels

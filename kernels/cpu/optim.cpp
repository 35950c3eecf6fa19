#include "kernels/optim.h"
#include "kernels/cpu/launchers.h"

#include <cmath>
#include <vector>


namespace nmperm::kernels {

constexpr int64_t kChunk = 16384;

// The chunks of the fused passes, shared with the CUDA optimizer kernels.
std::vector<OptimChunk> optim_chunks(const std::vector<Tensor>& ts) {
  std::vector<OptimChunk> chunks;
  for (size_t i = 0; i < ts.size(); ++i)
    for (int64_t b = 0; b < ts[i].numel(); b += kChunk)
      chunks.push_back({int64_t(i), b, std::min(kChunk, ts[i].numel() - b)});
  return chunks;
}

void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p, int64_t step) {
  NMPERM_CHECK(m.numel() == param.numel(), "adamw: moments {} for param {}", describe(m), describe(param));
  adamw({AdamWSlot{param, grad, 0, p.weight_decay}}, m, v, p, step);
}

double sum_squares(const Tensor& t) { return sum_squares(std::vector<Tensor>{t}); }

namespace cpu {

namespace {

void check_adamw(const std::vector<AdamWSlot>& slots, const Tensor& m, const Tensor& v, int64_t step) {
  NMPERM_CHECK(m.defined() && v.defined() && m.is_contiguous() && v.is_contiguous() && m.numel() == v.numel() &&
                   m.dtype() == v.dtype() && m.device() == v.device(),
               "adamw: the moments m {} and v {} must be contiguous buffers of one size, dtype and device",
               describe(m), describe(v));
  NMPERM_CHECK(step >= 1, "adamw: step counts from 1, got {}", step);
  for (const AdamWSlot& s : slots) {
    NMPERM_CHECK(s.param.defined() && s.grad.defined() && s.param.is_contiguous() && s.grad.shape() == s.param.shape() &&
                     s.param.dtype() == m.dtype() && s.grad.dtype() == m.dtype() && s.param.device() == m.device() &&
                     s.grad.device() == m.device(),
                 "adamw: param {} and grad {} must match each other and the moments {} (param contiguous)",
                 describe(s.param), describe(s.grad), describe(m));
    NMPERM_CHECK(s.offset >= 0 && s.offset + s.param.numel() <= m.numel(),
                 "adamw: moments [{}, {}) of param {} fall outside the flat buffer of {}", s.offset,
                 s.offset + s.param.numel(), describe(s.param), m.numel());
  }
}

}  // namespace

void adamw(const std::vector<AdamWSlot>& slots, Tensor& m, Tensor& v, const AdamWParams& p, int64_t step) {
  check_adamw(slots, m, v, step);
  if (slots.empty()) return;
  dispatch_float(m.dtype(), [&]<class T>() {
    std::vector<Tensor> grads;
    for (const AdamWSlot& s : slots) grads.push_back(s.grad.contiguous());
    std::vector<OptimChunk> chunks = optim_chunks(grads);
    T b1 = T(p.beta1), b2 = T(p.beta2), eps = T(p.eps);
    T bc1 = T(1.0 - std::pow(p.beta1, double(step))), bc2 = T(1.0 - std::pow(p.beta2, double(step)));
    T step_size = T(p.lr) / bc1, inv_sqrt_bc2 = T(1) / std::sqrt(bc2);
    T *mp = m.data<T>(), *vp = v.data<T>();
#pragma omp parallel for schedule(static) if (chunks.size() > 2)
    for (size_t c = 0; c < chunks.size(); ++c) {
      const AdamWSlot& s = slots[size_t(chunks[c].tensor)];
      int64_t b = chunks[c].begin, e = b + chunks[c].size;
      T* pp = s.param.data<T>();
      const T* gp = grads[size_t(chunks[c].tensor)].data<T>();
      T *mi = mp + s.offset, *vi = vp + s.offset, decay = T(1.0 - p.lr * s.weight_decay), gs = T(s.grad_scale);
      for (int64_t i = b; i < e; ++i) {
        T g = gp[i] * gs;
        mi[i] = b1 * mi[i] + (T(1) - b1) * g;
        vi[i] = b2 * vi[i] + (T(1) - b2) * g * g;
        pp[i] = pp[i] * decay - step_size * mi[i] / (std::sqrt(vi[i]) * inv_sqrt_bc2 + eps);
      }
    }
  });
}

double sum_squares(const std::vector<Tensor>& ts) {
  return dispatch_float(ts[0].dtype(), [&]<class T>() {
    std::vector<Tensor> cs;
    for (const Tensor& t : ts) cs.push_back(t.contiguous());
    std::vector<OptimChunk> chunks = optim_chunks(cs);
    std::vector<double> part(chunks.size(), 0.0);
#pragma omp parallel for schedule(static) if (chunks.size() > 2)
    for (size_t c = 0; c < chunks.size(); ++c) {
      const T* x = cs[size_t(chunks[c].tensor)].data<T>() + chunks[c].begin;
      double s = 0;
      for (int64_t i = 0; i < chunks[c].size; ++i) s += double(x[i]) * double(x[i]);
      part[c] = s;
    }
    double s = 0;
    for (double x : part) s += x;  // in chunk order: the same for any thread count
    return s;
  });
}

}  // namespace cpu

}  // namespace nmperm::kernels

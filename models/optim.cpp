#include "models/optim.h"

#include <cmath>

#include "kernels/elementwise.h"

namespace nmperm {

AdamW::AdamW(std::vector<Tensor> ps, kernels::AdamWParams h) : params(std::move(ps)), hp(h) {
  for (auto& p : params) {
    NMPERM_CHECK(p.defined() && p.requires_grad() && p.is_contiguous(),
                 "AdamW: parameters must be contiguous tensors that require grad, got {}", describe(p));
    m.push_back(zeros_like(p));
    v.push_back(zeros_like(p));
    decay.push_back(h.weight_decay);
  }
}

void AdamW::step() {
  ++step_count;
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor g = params[i].grad();
    if (!g.defined()) continue;
    kernels::AdamWParams h = hp;
    h.weight_decay = decay[i];
    kernels::adamw(params[i], g, m[i], v[i], h, step_count);
  }
}

void AdamW::zero_grad() {
  for (auto& p : params) p.zero_grad();
}

double grad_norm(const std::vector<Tensor>& params) {
  double s = 0;
  for (auto& p : params)
    if (p.grad().defined()) s += kernels::sum_squares(p.grad());
  return std::sqrt(s);
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  double norm = grad_norm(params);
  NMPERM_CHECK(std::isfinite(norm), "gradient norm is {}: the loss or a gradient has NaN/Inf", norm);
  if (norm > max_norm) {
    double scale = max_norm / (norm + 1e-6);
    for (Tensor p : params) {  // a copy shares the gradient slot
      Tensor g = p.grad();
      if (!g.defined()) continue;
      if (!g.is_contiguous()) {
        g = g.clone();
        p.set_grad(g);
      }
      kernels::scale_(g, scale);
    }
  }
  return norm;
}

}  // namespace nmperm

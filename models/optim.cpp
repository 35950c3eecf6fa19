#include "models/optim.h"

#include <algorithm>
#include <cmath>

#include "kernels/elementwise.h"

namespace nmperm {

AdamW::AdamW(std::vector<Tensor> ps, kernels::AdamWParams h) : params(std::move(ps)), hp(h) {
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i];
    NMPERM_CHECK(p.defined() && p.requires_grad() && p.is_contiguous(),
                 "AdamW: parameters must be contiguous tensors that require grad, got {}", describe(p));
    auto f = std::find_if(flats_.begin(), flats_.end(),
                          [&](const Flat& x) { return x.device == p.device() && x.dtype == p.dtype(); });
    if (f == flats_.end()) f = flats_.insert(flats_.end(), Flat{p.device(), p.dtype(), {}, {}, {}, {}});
    f->offsets.push_back(f->members.empty() ? 0 : f->offsets.back() + params[f->members.back()].numel());
    f->members.push_back(i);
    decay.push_back(h.weight_decay);
  }
  m.resize(params.size());
  v.resize(params.size());
  for (Flat& f : flats_) {
    int64_t total = f.offsets.back() + params[f.members.back()].numel();
    f.m = zeros({total}, f.dtype, f.device);
    f.v = zeros({total}, f.dtype, f.device);
    for (size_t k = 0; k < f.members.size(); ++k) {
      const Shape& shape = params[f.members[k]].shape();
      m[f.members[k]] = f.m.as_strided(shape, contiguous_strides(shape), f.offsets[k]);
      v[f.members[k]] = f.v.as_strided(shape, contiguous_strides(shape), f.offsets[k]);
    }
  }
}

void AdamW::step() {
  ++step_count;
  for (Flat& f : flats_) {
    std::vector<kernels::AdamWSlot> slots;
    for (size_t k = 0; k < f.members.size(); ++k) {
      size_t i = f.members[k];
      Tensor g = params[i].grad();
      if (g.defined()) slots.push_back({params[i], g, f.offsets[k], decay[i]});
    }
    kernels::adamw(slots, f.m, f.v, hp, step_count);
  }
}

void AdamW::zero_grad() {
  for (auto& p : params) p.zero_grad();
}

double grad_norm(const std::vector<Tensor>& params) {
  // One fused sum per device and dtype (one launch and one sync on the GPU).
  std::vector<std::vector<Tensor>> groups;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    auto it = std::find_if(groups.begin(), groups.end(), [&](const std::vector<Tensor>& x) {
      return x[0].device() == g.device() && x[0].dtype() == g.dtype();
    });
    if (it == groups.end()) groups.push_back({g});
    else it->push_back(g);
  }
  double s = 0;
  for (const auto& group : groups) s += kernels::sum_squares(group);
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

#include "models/optim.h"

#include <algorithm>
#include <cmath>

#include "kernels/elementwise.h"

namespace nmperm {

namespace {

// Indices of the defined tensors, grouped by device and dtype in order of first appearance:
// the fused kernels take one group each.
std::vector<std::vector<size_t>> by_device_and_dtype(const std::vector<Tensor>& ts) {
  std::vector<std::vector<size_t>> groups;
  for (size_t i = 0; i < ts.size(); ++i) {
    if (!ts[i].defined()) continue;
    auto g = std::find_if(groups.begin(), groups.end(), [&](const std::vector<size_t>& x) {
      return ts[x[0]].device() == ts[i].device() && ts[x[0]].dtype() == ts[i].dtype();
    });
    if (g == groups.end()) groups.push_back({i});
    else g->push_back(i);
  }
  return groups;
}

}  // namespace

AdamW::AdamW(std::vector<Tensor> ps, kernels::AdamWParams h) : params(std::move(ps)), hp(h) {
  for (const Tensor& p : params)
    NMPERM_CHECK(p.defined() && p.requires_grad() && p.is_contiguous(),
                 "AdamW: parameters must be contiguous tensors that require grad, got {}", describe(p));
  decay.assign(params.size(), h.weight_decay);
  m.resize(params.size());
  v.resize(params.size());
  for (std::vector<size_t>& members : by_device_and_dtype(params)) {
    Flat f{params[members[0]].device(), params[members[0]].dtype(), {}, {}, std::move(members), {}};
    int64_t total = 0;
    for (size_t i : f.members) {
      f.offsets.push_back(total);
      total += params[i].numel();
    }
    f.m = zeros({total}, f.dtype, f.device);
    f.v = zeros({total}, f.dtype, f.device);
    for (size_t k = 0; k < f.members.size(); ++k) {
      const Shape& shape = params[f.members[k]].shape();
      m[f.members[k]] = f.m.as_strided(shape, contiguous_strides(shape), f.offsets[k]);
      v[f.members[k]] = f.v.as_strided(shape, contiguous_strides(shape), f.offsets[k]);
    }
    flats_.push_back(std::move(f));
  }
}

void AdamW::step(double grad_scale) {
  ++step_count;
  for (Flat& f : flats_) {
    std::vector<kernels::AdamWSlot> slots;
    for (size_t k = 0; k < f.members.size(); ++k) {
      size_t i = f.members[k];
      Tensor g = params[i].grad();
      if (g.defined()) slots.push_back({params[i], g, f.offsets[k], decay[i], grad_scale});
    }
    kernels::adamw(slots, f.m, f.v, hp, step_count);
  }
}

void AdamW::zero_grad() {
  for (auto& p : params) p.zero_grad();
}

double grad_norm(const std::vector<Tensor>& params) {
  // One fused sum per device and dtype (one launch and one sync on the GPU).
  std::vector<Tensor> grads;
  for (const Tensor& p : params) grads.push_back(p.grad());
  double s = 0;
  for (const std::vector<size_t>& group : by_device_and_dtype(grads)) {
    std::vector<Tensor> gs;
    for (size_t i : group) gs.push_back(grads[i]);
    s += kernels::sum_squares(gs);
  }
  return std::sqrt(s);
}

double clip_scale(double norm, double max_norm) {
  NMPERM_CHECK(std::isfinite(norm), "gradient norm is {}: the loss or a gradient has NaN/Inf", norm);
  return norm > max_norm ? max_norm / (norm + 1e-6) : 1.0;
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  double norm = grad_norm(params), scale = clip_scale(norm, max_norm);
  if (scale != 1.0) {
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

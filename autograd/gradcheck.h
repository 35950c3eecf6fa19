// gradcheck: compares the gradients backward() computes with float64 central differences.
//
// For f: inputs -> output, a fixed random cotangent u (seeded) turns the output into the
// scalar L = sum(f(x) * u). backward(f(x), u) gives dL/dx analytically; for each checked
// element x_e, (L(x_e + eps) - L(x_e - eps)) / (2 eps) gives it numerically. An element
// passes when |analytic - numeric| <= atol + rtol * |numeric|. Every element is checked,
// or a seeded random subset of max_elements per input above that size.
//
// Inputs that require grad must be f64; other inputs (indices, masks) are passed through.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace nmperm {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-4;
  int64_t max_elements = 4096;  // per input; above it a seeded subset is checked
  uint64_t seed = 0;
};

struct GradcheckResult {
  bool ok = true;
  std::string message;   // on failure: which input, which index, both values
  int64_t input = -1;    // worst input
  Shape index;           // worst element's multi-index
  double analytic = 0, numeric = 0;
  double worst_ratio = 0;  // |a - n| / (atol + rtol |n|); <= 1 passes
  int64_t checked = 0;     // elements compared
};

using GradcheckFn = std::function<Tensor(const std::vector<Tensor>&)>;
GradcheckResult gradcheck(const GradcheckFn& fn, const std::vector<Tensor>& inputs, const GradcheckOptions& opt = {});

}  // namespace nmperm

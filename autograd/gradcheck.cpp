#include "autograd/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "autograd/ops.h"

namespace nmperm {

namespace {

long double dot(const Tensor& out, const std::vector<double>& u) {
  std::vector<double> o = out.to_vector<double>();
  long double s = 0;
  for (size_t i = 0; i < o.size(); ++i) s += (long double)o[i] * u[i];
  return s;
}

Shape unravel(int64_t flat, const Shape& shape) {
  Shape idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = flat % std::max<int64_t>(shape[d], 1);
    flat /= std::max<int64_t>(shape[d], 1);
  }
  return idx;
}

}  // namespace

GradcheckResult gradcheck(const GradcheckFn& fn, const std::vector<Tensor>& inputs, const GradcheckOptions& opt) {
  std::vector<Tensor> xs;
  for (auto& x : inputs) {
    if (x.requires_grad()) {
      NMPERM_CHECK(x.dtype() == DType::F64, "gradcheck: inputs that require grad must be f64, got {}", describe(x));
      Tensor c = x.to(Device::CPU).clone();
      c.set_requires_grad(true);
      xs.push_back(c);
    } else {
      xs.push_back(x);
    }
  }
  Tensor out = fn(xs);
  NMPERM_CHECK(out.defined() && out.requires_grad(), "gradcheck: the function's output does not require grad");
  Generator gen(opt.seed);
  Tensor u = randn(out.shape(), gen, out.dtype());
  std::vector<double> uv = u.to_vector<double>();
  backward(out, u);

  GradcheckResult r;
  NoGradGuard no_grad;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (!xs[i].requires_grad()) continue;
    Tensor x = xs[i];
    int64_t n = x.numel();
    Tensor g = x.grad();
    std::vector<double> ga = g.defined() ? g.to_vector<double>() : std::vector<double>(size_t(n), 0.0);
    std::vector<int64_t> which(static_cast<size_t>(n));
    std::iota(which.begin(), which.end(), 0);
    if (n > opt.max_elements) {  // seeded partial Fisher-Yates
      Generator pick(opt.seed + 1 + i);
      for (int64_t k = 0; k < opt.max_elements; ++k)
        std::swap(which[size_t(k)], which[size_t(k + pick.randint(n - k))]);
      which.resize(size_t(opt.max_elements));
      std::sort(which.begin(), which.end());
    }
    double* p = x.data<double>();
    for (int64_t e : which) {
      double saved = p[e];
      p[e] = saved + opt.eps;
      long double fp = dot(fn(xs), uv);
      p[e] = saved - opt.eps;
      long double fm = dot(fn(xs), uv);
      p[e] = saved;
      double num = double((fp - fm) / (2.0L * opt.eps)), ana = ga[size_t(e)];
      double ratio = std::abs(ana - num) / (opt.atol + opt.rtol * std::abs(num));
      if (std::isnan(ana) || std::isnan(num)) ratio = INFINITY;
      ++r.checked;
      if (ratio > r.worst_ratio || r.input < 0) {
        r.worst_ratio = ratio;
        r.input = int64_t(i);
        r.index = unravel(e, x.shape());
        r.analytic = ana;
        r.numeric = num;
      }
    }
  }
  r.ok = r.worst_ratio <= 1.0;
  if (!r.ok)
    r.message = fmt::format(
        "gradcheck failed: input {} at index {}: analytic {:.10g} vs numeric {:.10g} (|diff| {:.3g} > atol {} + "
        "rtol {} * |numeric|; {} elements checked)",
        r.input, r.index, r.analytic, r.numeric, std::abs(r.analytic - r.numeric), opt.atol, opt.rtol, r.checked);
  return r;
}

}  // namespace nmperm

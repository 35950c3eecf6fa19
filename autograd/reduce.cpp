// Reductions over any set of dims. The reduced dims are moved last and the tensor is
// viewed as (R, K), so one row kernel serves every case.
#include <algorithm>

#include "autograd/ops.h"
#include "core/view.h"
#include "kernels/reduce.h"

namespace nmperm {

using kernels::ReduceOp;

namespace {

struct Plan {
  std::vector<int64_t> reduced, kept;
  Shape out_shape, keep_shape;  // without and with the reduced dims as 1
  int64_t R = 1, K = 1;
};

Plan make_plan(const Tensor& x, std::vector<int64_t> dims, bool keepdim, const char* op) {
  Plan p;
  int64_t nd = x.ndim();
  if (dims.empty())
    for (int64_t d = 0; d < nd; ++d) dims.push_back(d);
  std::vector<bool> is_red(size_t(nd), false);
  for (int64_t d : dims) {
    int64_t w = wrap_dim(d, nd, op);
    NMPERM_CHECK(!is_red[size_t(w)], "{}: dim {} listed twice", op, d);
    is_red[size_t(w)] = true;
  }
  for (int64_t d = 0; d < nd; ++d) {
    int64_t n = x.shape()[size_t(d)];
    if (is_red[size_t(d)]) {
      p.reduced.push_back(d);
      p.K *= n;
      p.keep_shape.push_back(1);
      if (keepdim) p.out_shape.push_back(1);
    } else {
      p.kept.push_back(d);
      p.R *= n;
      p.keep_shape.push_back(n);
      p.out_shape.push_back(n);
    }
  }
  return p;
}

Tensor as_rows(const Tensor& x, const Plan& p) {
  std::vector<int64_t> order = p.kept;
  order.insert(order.end(), p.reduced.begin(), p.reduced.end());
  return view::reshape(view::permute(x, order), {p.R, p.K}).contiguous();
}

Tensor run(ReduceOp op, const Tensor& x, const Plan& p, int64_t correction = 1) {
  bool index = op == ReduceOp::ArgMax || op == ReduceOp::ArgMin;
  Tensor out = Tensor::empty(p.out_shape, index ? DType::I64 : x.dtype(), x.device());
  // Sums over leading dims of a contiguous tensor (bias and broadcast gradients): column sums.
  bool leading = !p.reduced.empty() && p.reduced.back() == int64_t(p.reduced.size()) - 1;
  if ((op == ReduceOp::Sum || op == ReduceOp::Mean) && leading && !p.kept.empty() && x.is_contiguous()) {
    kernels::reduce_cols(op, view::reshape(x, {p.K, p.R}), out);
    return out;
  }
  Tensor rows = as_rows(x, p);
  kernels::reduce_rows(op, rows, out, correction);
  return out;
}

// Gradient of a reduction: g (out_shape) broadcast back over the reduced dims.
Tensor spread(const Tensor& g, const Plan& p, const Shape& x_shape) {
  return view::expand(view::reshape(g, p.keep_shape), x_shape).contiguous();
}

struct ReduceNode : Node {
  ReduceOp op;
  Plan plan;
  Tensor x, y;  // y with keep_shape, for max/min/logsumexp
  int64_t correction;
  ReduceNode(ReduceOp o, Plan pl, Tensor xx, Tensor yy, int64_t c)
      : op(o), plan(std::move(pl)), x(std::move(xx)), y(std::move(yy)), correction(c) {}
  const char* name() const override {
    switch (op) {
      case ReduceOp::Sum: return "sum";
      case ReduceOp::Mean: return "mean";
      case ReduceOp::Max: return "max";
      case ReduceOp::Min: return "min";
      case ReduceOp::LogSumExp: return "logsumexp";
      case ReduceOp::Var: return "var";
      default: return "reduce";
    }
  }
  std::vector<Tensor> backward(const Tensor& g) override {
    const Shape& xs = inputs[0].shape;
    Tensor gs = spread(g, plan, xs);
    switch (op) {
      case ReduceOp::Sum: return {gs};
      case ReduceOp::Mean: return {mul(gs, 1.0 / double(plan.K))};
      case ReduceOp::Max:
      case ReduceOp::Min: {
        Tensor hit = eq(x, view::reshape(y, plan.keep_shape));
        Tensor count = sum(hit, plan.reduced, true);
        return {div(mul(gs, hit), count)};
      }
      case ReduceOp::LogSumExp: return {mul(gs, exp(sub(x, view::reshape(y, plan.keep_shape))))};
      case ReduceOp::Var: {
        Tensor centered = sub(x, mean(x, plan.reduced, true));
        return {mul(gs, mul(centered, 2.0 / double(plan.K - correction)))};
      }
      default: NMPERM_FAIL("{} has no gradient", name());
    }
  }
  void release() override { x = y = Tensor(); }
};

Tensor reduce(ReduceOp op, const Tensor& x, std::vector<int64_t> dims, bool keepdim, const char* name,
              int64_t correction = 1) {
  NMPERM_CHECK(x.defined(), "{}: undefined input", name);
  Plan p = make_plan(x, std::move(dims), keepdim, name);
  Tensor out = run(op, x, p, correction);
  if (any_requires_grad({&x})) {
    bool save_x = op == ReduceOp::Max || op == ReduceOp::Min || op == ReduceOp::LogSumExp || op == ReduceOp::Var;
    bool save_y = op == ReduceOp::Max || op == ReduceOp::Min || op == ReduceOp::LogSumExp;
    attach(out,
           std::make_shared<ReduceNode>(op, p, save_x ? x.detach() : Tensor(), save_y ? out.detach() : Tensor(),
                                        correction),
           {&x});
  }
  return out;
}

}  // namespace

Tensor sum(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
  return reduce(ReduceOp::Sum, x, std::move(dims), keepdim, "sum");
}
Tensor mean(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
  return reduce(ReduceOp::Mean, x, std::move(dims), keepdim, "mean");
}
Tensor max(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
  return reduce(ReduceOp::Max, x, std::move(dims), keepdim, "max");
}
Tensor min(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
  return reduce(ReduceOp::Min, x, std::move(dims), keepdim, "min");
}
Tensor logsumexp(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
  return reduce(ReduceOp::LogSumExp, x, std::move(dims), keepdim, "logsumexp");
}
Tensor var(const Tensor& x, std::vector<int64_t> dims, int64_t correction, bool keepdim) {
  Plan p = make_plan(x, dims, keepdim, "var");
  NMPERM_CHECK(p.K > correction, "var: {} elements per reduction with correction {}", p.K, correction);
  return reduce(ReduceOp::Var, x, std::move(dims), keepdim, "var", correction);
}
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  return run(ReduceOp::ArgMax, x, make_plan(x, {dim}, keepdim, "argmax"));
}
Tensor argmin(const Tensor& x, int64_t dim, bool keepdim) {
  return run(ReduceOp::ArgMin, x, make_plan(x, {dim}, keepdim, "argmin"));
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  NMPERM_CHECK(shape.size() <= x.shape().size(), "sum_to: cannot reduce {} to {}", x.shape(), shape);
  size_t lead = x.shape().size() - shape.size();
  std::vector<int64_t> dims;
  for (size_t d = 0; d < x.shape().size(); ++d) {
    if (d < lead) dims.push_back(int64_t(d));
    else if (shape[d - lead] == 1 && x.shape()[d] != 1) dims.push_back(int64_t(d));
    else
      NMPERM_CHECK(shape[d - lead] == x.shape()[d], "sum_to: cannot reduce {} to {}", x.shape(), shape);
  }
  if (dims.empty()) return reshape(x, shape);
  return reshape(sum(x, dims, true), shape);
}

}  // namespace nmperm

#include "permute/sinkhorn.h"

#include <cmath>

#include "core/view.h"
#include "kernels/sinkhorn.h"

namespace nmperm {

namespace {

struct SinkhornNode : Node {
  Tensor logits, row_norm, col_norm;
  SinkhornNode(Tensor l, Tensor r, Tensor c) : logits(std::move(l)), row_norm(std::move(r)), col_norm(std::move(c)) {}
  const char* name() const override { return "sinkhorn"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor d = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
    kernels::sinkhorn_backward(logits, row_norm, col_norm, view::reshape(g.contiguous(), logits.shape()), d);
    return {view::reshape(d, inputs[0].shape)};
  }
  void release() override { logits = row_norm = col_norm = Tensor(); }
};

Tensor as_blocks(const Tensor& x, const char* op) {
  NMPERM_CHECK((x.ndim() == 2 || x.ndim() == 3) && x.shape(-1) == x.shape(-2) && is_floating(x.dtype()),
               "{}: expects square blocks (n, n) or (G, n, n), got {}", op, describe(x));
  return view::reshape(x.contiguous(), {x.ndim() == 3 ? x.shape(0) : 1, x.shape(-1), x.shape(-1)});
}

}  // namespace

Tensor sinkhorn(const Tensor& logits, int64_t iters) {
  NMPERM_CHECK(iters >= 1, "sinkhorn: iterations must be at least 1, got {}", iters);
  Tensor l = as_blocks(logits, "sinkhorn");
  int64_t G = l.shape(0), n = l.shape(1);
  Tensor p = Tensor::empty(l.shape(), l.dtype(), l.device());
  Tensor r = Tensor::empty({G, iters, n}, l.dtype(), l.device()), c = Tensor::empty({G, iters, n}, l.dtype(), l.device());
  kernels::sinkhorn(l, iters, p, r, c);
  Tensor out = view::reshape(p, logits.shape());
  if (any_requires_grad({&logits})) attach(out, std::make_shared<SinkhornNode>(l.detach(), r, c), {&logits});
  return out;
}

Tensor sinkhorn_unrolled(const Tensor& logits, int64_t iters) {
  NMPERM_CHECK(iters >= 1, "sinkhorn: iterations must be at least 1, got {}", iters);
  Tensor x = logits;
  for (int64_t k = 0; k < iters; ++k) {
    x = sub(x, logsumexp(x, {-1}, true));  // rows sum to 1
    x = sub(x, logsumexp(x, {-2}, true));  // columns sum to 1
  }
  return exp(x);
}

SinkhornError sinkhorn_error(const Tensor& p) {
  NoGradGuard ng;
  SinkhornError e;
  e.row = max(abs(add(sum(p, {-1}), -1.0))).item();
  e.col = max(abs(add(sum(p, {-2}), -1.0))).item();
  return e;
}

}  // namespace nmperm

// matmul with broadcast batch dims, and linear. Transposed views reach CBLAS as
// transpose flags, so the backward's A^T and B^T cost no copies.
#include "autograd/ops.h"
#include "core/view.h"
#include "kernels/matmul.h"

namespace nmperm {

namespace {

struct MatmulNode : Node {
  Tensor a, b;
  MatmulNode(Tensor aa, Tensor bb) : a(std::move(aa)), b(std::move(bb)) {}
  const char* name() const override { return "matmul"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor ga, gb;
    if (needs(0)) ga = sum_to(matmul(g, transpose(b, -1, -2)), a.shape());
    if (needs(1)) {
      if (b.ndim() == 2 && a.ndim() > 2) {  // shared weight: one (K, rows) @ (rows, N) product
        Tensor a2 = view::reshape(a, {-1, a.shape(-1)}), g2 = view::reshape(g, {-1, g.shape(-1)});
        gb = matmul(transpose(a2, 0, 1), g2);
      } else {
        gb = sum_to(matmul(transpose(a, -1, -2), g), b.shape());
      }
    }
    return {ga, gb};
  }
  void release() override { a = b = Tensor(); }
};

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  NMPERM_CHECK(a.ndim() >= 2 && b.ndim() >= 2, "matmul: operands need at least 2 dims, got {} and {}", describe(a),
               describe(b));
  NMPERM_CHECK(a.shape(-1) == b.shape(-2), "matmul: inner dims differ: {} @ {}", describe(a), describe(b));
  NMPERM_CHECK(a.dtype() == b.dtype() && a.device() == b.device(), "matmul: {} and {} differ in dtype or device",
               describe(a), describe(b));
  int64_t M = a.shape(-2), K = a.shape(-1), N = b.shape(-1);
  Shape ab(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  Shape batch = broadcast_shapes(ab, bb);
  int64_t nb = numel(batch);
  auto as3 = [&](const Tensor& t, int64_t r, int64_t c) {
    Shape full = batch;
    full.push_back(r);
    full.push_back(c);
    Tensor e = view::expand(t, full);
    // Keep a transposed (column-major) matrix layout through the reshape when we can.
    Tensor v = view::reshape(e, {nb, r, c});
    bool ok = (v.stride(2) == 1 && v.stride(1) >= c) || (v.stride(1) == 1 && v.stride(2) >= r);
    return ok ? v : view::reshape(e.contiguous(), {nb, r, c});
  };
  Shape out_shape = batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  Tensor c3 = view::reshape(out, {nb, M, N});
  kernels::matmul(as3(a, M, K), as3(b, K, N), c3);
  if (any_requires_grad({&a, &b})) attach(out, std::make_shared<MatmulNode>(a.detach(), b.detach()), {&a, &b});
  return out;
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  NMPERM_CHECK(w.ndim() == 2 && x.ndim() >= 1 && x.shape(-1) == w.shape(1),
               "linear: input {} does not fit weight {} (out, in)", describe(x), describe(w));
  Tensor y = matmul(x, transpose(w, 0, 1));
  if (b.defined()) {
    NMPERM_CHECK(b.ndim() == 1 && b.shape(0) == w.shape(0), "linear: bias {} for weight {}", describe(b), describe(w));
    y = add(y, b);
  }
  return y;
}

}  // namespace nmperm

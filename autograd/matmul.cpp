// matmul with broadcast batch dims, and linear. Transposed views reach CBLAS as
// transpose flags, so the backward's A^T and B^T cost no copies.
#include "autograd/ops.h"
#include "core/view.h"
#include "kernels/matmul.h"
#include "kernels/reduce.h"

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

namespace {

thread_local DType current_precision = DType::F32;

// Linear as one node: the bias goes into the product (kernels::matmul), and the backward
// is two gemms and a column sum, with no broadcast tensors in between.
// x2 and w are saved in the dtype they were multiplied in (16-bit under mixed precision),
// and the incoming gradient is rounded to it too, as autocast's backward does.
struct LinearNode : Node {
  Tensor x2, w;  // x as (R, in)
  LinearNode(Tensor xx, Tensor ww) : x2(std::move(xx)), w(std::move(ww)) {}
  const char* name() const override { return "linear"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    int64_t R = x2.shape(0), I = x2.shape(1), O = w.shape(0);
    Tensor g2 = view::reshape(g.contiguous(), {1, R, O}), gx, gw, gb;
    Tensor gm = g2;  // the gradient as multiplied
    if ((needs(0) || needs(1)) && g2.dtype() != w.dtype()) gm = g2.to(w.dtype());
    if (needs(0)) {
      gx = Tensor::empty(inputs[0].shape, g.dtype(), g.device());
      Tensor c = view::reshape(gx, {1, R, I});
      kernels::matmul(gm, view::reshape(w, {1, O, I}), c);  // dx = g W
    }
    if (needs(1)) {
      gw = Tensor::empty({O, I}, g.dtype(), g.device());
      Tensor c = view::reshape(gw, {1, O, I});
      kernels::matmul(view::transpose(gm, 1, 2), view::reshape(x2, {1, R, I}), c);  // dW = g^T x
    }
    if (needs(2)) {
      gb = Tensor::empty({O}, g.dtype(), g.device());
      kernels::reduce_cols(kernels::ReduceOp::Sum, view::reshape(g2, {R, O}), gb);
    }
    return {gx, gw, gb};
  }
  void release() override { x2 = w = Tensor(); }
};

}  // namespace

LinearPrecision::LinearPrecision(DType dtype) : saved_(current_precision) {
  NMPERM_CHECK(dtype == DType::F32 || is_half(dtype), "linear precision must be f32, bf16 or f16, not {}", dtype);
  current_precision = dtype;
}
LinearPrecision::~LinearPrecision() { current_precision = saved_; }
DType linear_precision() { return current_precision; }
DType precision_dtype(const std::string& name) {
  if (name == "f32") return DType::F32;
  if (name == "bf16") return DType::BF16;
  if (name == "f16") return DType::F16;
  NMPERM_FAIL("precision must be f32, bf16 or f16, got '{}'", name);
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  NMPERM_CHECK(w.ndim() == 2 && x.ndim() >= 1 && x.shape(-1) == w.shape(1),
               "linear: input {} does not fit weight {} (out, in)", describe(x), describe(w));
  const DType mul = is_half(w.dtype()) ? w.dtype() : x.dtype() == DType::F32 ? current_precision : x.dtype();
  const DType out_dtype = is_half(mul) ? DType::F32 : x.dtype();
  NMPERM_CHECK(x.device() == w.device() && (x.dtype() == w.dtype() || (is_half(mul) && !is_half(x.dtype()))),
               "linear: input {} and weight {} differ", describe(x), describe(w));
  if (b.defined())
    NMPERM_CHECK(b.ndim() == 1 && b.shape(0) == w.shape(0) && b.dtype() == out_dtype,
                 "linear: bias {} for weight {}", describe(b), describe(w));
  int64_t I = w.shape(1), O = w.shape(0), R = x.numel() / std::max<int64_t>(I, 1);
  Tensor x2 = view::reshape(x.contiguous(), {R, I}), wc = w.contiguous();
  if (x2.dtype() != mul) x2 = x2.to(mul);
  if (wc.dtype() != mul) wc = wc.to(mul);
  Shape out_shape = x.shape();
  out_shape.back() = O;
  Tensor out = Tensor::empty(out_shape, out_dtype, x.device());
  Tensor c = view::reshape(out, {1, R, O});
  kernels::matmul(view::reshape(x2, {1, R, I}), view::transpose(view::reshape(wc, {1, O, I}), 1, 2), c, 1.0, 0.0,
                  b.defined() ? b.contiguous() : Tensor());
  if (any_requires_grad({&x, &w, &b})) attach(out, std::make_shared<LinearNode>(x2, wc.detach()), {&x, &w, &b});
  return out;
}

}  // namespace nmperm

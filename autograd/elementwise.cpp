// Elementwise ops and their backwards. Binary ops broadcast; their backward reduces each
// gradient back to its input's shape with sum_to.
#include "autograd/ops.h"
#include "core/view.h"
#include "kernels/elementwise.h"

namespace nmperm {

using kernels::BinaryOp;
using kernels::UnaryOp;

namespace {

// Every unary op's backward is one fused kernel (its `grad` in kernels/elementwise_fn.h)
// rather than tensor ops: SiLU forward + backward at (4096, 512) took 1.86 ms fused against
// 4.15 ms composed from sigmoid and mul (2 threads; 3.71 vs 8.90 ms at 1 thread), bench_ops
// BM_silu_fwdbwd / BM_silu_composed_fwdbwd, Xeon with AVX-512, 2026-12-05.
struct UnaryNode : Node {
  UnaryOp op;
  double p;
  Tensor x, y;
  UnaryNode(UnaryOp o, double s, Tensor xx, Tensor yy) : op(o), p(s), x(std::move(xx)), y(std::move(yy)) {}
  const char* name() const override { return kernels::unary_name(op); }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    kernels::unary_backward(op, x, y, g, dx, p);
    return {dx};
  }
  void release() override { x = y = Tensor(); }
};

Tensor unary(UnaryOp op, const Tensor& x, double p = 0) {
  NMPERM_CHECK(x.defined(), "{}: undefined input", kernels::unary_name(op));
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  kernels::unary(op, x, y, p);
  if (any_requires_grad({&x})) attach(y, std::make_shared<UnaryNode>(op, p, x.detach(), y.detach()), {&x});
  return y;
}

// silu(gate) * up in one kernel each way; saves gate and up (not silu(gate)) and
// recomputes silu in the backward.
struct SwigluNode : Node {
  Tensor gate, up;
  SwigluNode(Tensor g, Tensor u) : gate(std::move(g)), up(std::move(u)) {}
  const char* name() const override { return "swiglu"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor dgate = Tensor::empty(gate.shape(), gate.dtype(), gate.device());
    Tensor dup = Tensor::empty(up.shape(), up.dtype(), up.device());
    kernels::swiglu_backward(gate, up, g.contiguous(), dgate, dup);
    return {needs(0) ? dgate : Tensor(), needs(1) ? dup : Tensor()};
  }
  void release() override { gate = up = Tensor(); }
};

struct BinaryNode : Node {
  BinaryOp op;
  Tensor a, b;  // saved only when the backward needs them
  BinaryNode(BinaryOp o, Tensor aa, Tensor bb) : op(o), a(std::move(aa)), b(std::move(bb)) {}
  const char* name() const override { return kernels::binary_name(op); }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor ga, gb;
    const Shape &sa = inputs[0].shape, &sb = inputs[1].shape;
    switch (op) {
      case BinaryOp::Add:
        if (needs(0)) ga = sum_to(g, sa);
        if (needs(1)) gb = sum_to(g, sb);
        break;
      case BinaryOp::Sub:
        if (needs(0)) ga = sum_to(g, sa);
        if (needs(1)) gb = sum_to(neg(g), sb);
        break;
      case BinaryOp::Mul:
        if (needs(0)) ga = sum_to(mul(g, b), sa);
        if (needs(1)) gb = sum_to(mul(g, a), sb);
        break;
      case BinaryOp::Div:
        if (needs(0)) ga = sum_to(div(g, b), sa);
        if (needs(1)) gb = sum_to(neg(div(mul(g, a), mul(b, b))), sb);
        break;
      case BinaryOp::Maximum:
      case BinaryOp::Minimum: {
        // The gradient goes to the winner; ties split it evenly, as PyTorch does.
        Tensor a_wins = op == BinaryOp::Maximum ? gt(a, b) : lt(a, b), tie = eq(a, b);
        Tensor share = add(a_wins, mul(tie, 0.5));
        if (needs(0)) ga = sum_to(mul(g, share), sa);
        if (needs(1)) gb = sum_to(mul(g, add(neg(share), 1.0)), sb);
        break;
      }
      default: NMPERM_FAIL("{} has no gradient", name());
    }
    return {ga, gb};
  }
  void release() override { a = b = Tensor(); }
};

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  NMPERM_CHECK(a.defined() && b.defined(), "{}: undefined input", kernels::binary_name(op));
  NMPERM_CHECK(a.dtype() == b.dtype(), "{}: dtypes differ: {} and {} (cast one first)", kernels::binary_name(op),
               describe(a), describe(b));
  NMPERM_CHECK(a.device() == b.device(), "{}: devices differ: {} and {}", kernels::binary_name(op), describe(a),
               describe(b));
  Shape s = broadcast_shapes(a.shape(), b.shape());
  Tensor out = Tensor::empty(s, a.dtype(), a.device());
  kernels::binary(op, view::expand(a, s), view::expand(b, s), out);
  bool differentiable = int(op) <= int(BinaryOp::Minimum);
  if (differentiable && any_requires_grad({&a, &b})) {
    bool save = op != BinaryOp::Add && op != BinaryOp::Sub;
    attach(out, std::make_shared<BinaryNode>(op, save ? a.detach() : Tensor(), save ? b.detach() : Tensor()),
           {&a, &b});
  }
  return out;
}

Tensor scalar_like(const Tensor& x, double s) {
  Tensor t = full({}, s, x.dtype());
  return x.device() == Device::CPU ? t : t.to(x.device());
}

struct WhereNode : Node {
  Tensor cond;
  explicit WhereNode(Tensor c) : cond(std::move(c)) {}
  const char* name() const override { return "where"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor z = zeros({}, g.dtype(), g.device()), ga, gb;
    if (needs(1)) ga = sum_to(where(cond, g, z), inputs[1].shape);
    if (needs(2)) gb = sum_to(where(cond, z, g), inputs[2].shape);
    return {Tensor(), ga, gb};
  }
  void release() override { cond = Tensor(); }
};

struct CastNode : Node {
  DType from;
  explicit CastNode(DType f) : from(f) {}
  const char* name() const override { return "cast"; }
  std::vector<Tensor> backward(const Tensor& g) override { return {g.to(from)}; }
};

}  // namespace

Tensor neg(const Tensor& x) { return unary(UnaryOp::Neg, x); }
Tensor exp(const Tensor& x) { return unary(UnaryOp::Exp, x); }
Tensor log(const Tensor& x) { return unary(UnaryOp::Log, x); }
Tensor sqrt(const Tensor& x) { return unary(UnaryOp::Sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary(UnaryOp::Rsqrt, x); }
Tensor tanh(const Tensor& x) { return unary(UnaryOp::Tanh, x); }
Tensor sigmoid(const Tensor& x) { return unary(UnaryOp::Sigmoid, x); }
Tensor relu(const Tensor& x) { return unary(UnaryOp::Relu, x); }
Tensor gelu(const Tensor& x, bool tanh_approximation) {
  return unary(tanh_approximation ? UnaryOp::GeluTanh : UnaryOp::GeluErf, x);
}
Tensor silu(const Tensor& x) { return unary(UnaryOp::Silu, x); }
Tensor swiglu(const Tensor& gate, const Tensor& up) {
  NMPERM_CHECK(gate.defined() && up.defined() && gate.shape() == up.shape() && gate.dtype() == up.dtype(),
               "swiglu: gate {} and up {} must have one shape and dtype", describe(gate), describe(up));
  Tensor g = gate.contiguous(), u = up.contiguous();
  Tensor y = Tensor::empty(g.shape(), g.dtype(), g.device());
  kernels::swiglu(g, u, y);
  if (any_requires_grad({&gate, &up})) attach(y, std::make_shared<SwigluNode>(g.detach(), u.detach()), {&gate, &up});
  return y;
}
Tensor softplus(const Tensor& x) { return unary(UnaryOp::Softplus, x); }
Tensor abs(const Tensor& x) { return unary(UnaryOp::Abs, x); }
Tensor square(const Tensor& x) { return unary(UnaryOp::Square, x); }
Tensor pow(const Tensor& x, double e) { return unary(UnaryOp::Pow, x, e); }

Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Div, a, b); }
Tensor maximum(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Maximum, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Minimum, a, b); }
Tensor eq(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Eq, a, b); }
Tensor ne(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Ne, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Lt, a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Le, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Gt, a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Ge, a, b); }

Tensor add(const Tensor& x, double s) { return add(x, scalar_like(x, s)); }
Tensor mul(const Tensor& x, double s) { return mul(x, scalar_like(x, s)); }
Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& x) { return neg(x); }
Tensor operator+(const Tensor& x, double s) { return add(x, s); }
Tensor operator-(const Tensor& x, double s) { return add(x, -s); }
Tensor operator*(const Tensor& x, double s) { return mul(x, s); }
Tensor operator/(const Tensor& x, double s) { return mul(x, 1.0 / s); }
Tensor operator*(double s, const Tensor& x) { return mul(x, s); }

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  NMPERM_CHECK(a.dtype() == b.dtype(), "where: dtypes differ: {} and {}", describe(a), describe(b));
  Shape s = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape()), b.shape());
  Tensor out = Tensor::empty(s, a.dtype(), a.device());
  kernels::where(view::expand(cond, s), view::expand(a, s), view::expand(b, s), out);
  if (any_requires_grad({&a, &b})) attach(out, std::make_shared<WhereNode>(cond.detach()), {nullptr, &a, &b});
  return out;
}

Tensor cast(const Tensor& x, DType dtype) {
  Tensor y = x.dtype() == dtype ? x.detach() : x.to(dtype);
  if (any_requires_grad({&x})) {
    NMPERM_CHECK(is_floating(dtype), "cast: a tensor that requires grad can only be cast to a floating dtype");
    attach(y, std::make_shared<CastNode>(x.dtype()), {&x});
  }
  return y;
}

}  // namespace nmperm

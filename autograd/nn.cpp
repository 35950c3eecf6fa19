// Fused neural-network ops: softmax, norms, RoPE, attention, cross-entropy. Each has a
// dedicated backward kernel; the tests compare them with gradients of the same function
// composed from elementwise ops and with central differences.
#include <cmath>

#include "autograd/ops.h"
#include "core/view.h"
#include "kernels/attention.h"
#include "kernels/loss.h"
#include "kernels/norm.h"
#include "kernels/rope.h"
#include "kernels/softmax.h"

namespace nmperm {

namespace {

// x with `dim` moved last, packed as (R, K).
Tensor to_rows(const Tensor& x, int64_t dim) {
  Tensor t = dim == x.ndim() - 1 ? x : view::transpose(x, dim, -1);
  int64_t K = x.ndim() ? x.shape(dim) : 1;
  return view::reshape(t.contiguous(), {-1, K});
}
// Inverse of to_rows: rows (R, K) back to `shape` with the last dim returned to `dim`.
Tensor from_rows(const Tensor& rows, const Shape& shape, int64_t dim) {
  int64_t last = int64_t(shape.size()) - 1;
  if (dim == last) return view::reshape(rows, shape);
  Shape ts = shape;
  std::swap(ts[size_t(dim)], ts[size_t(last)]);
  return view::transpose(view::reshape(rows, ts), dim, -1).contiguous();
}

struct SoftmaxNode : Node {
  Tensor y_rows;
  int64_t dim;
  bool log;
  SoftmaxNode(Tensor y, int64_t d, bool l) : y_rows(std::move(y)), dim(d), log(l) {}
  const char* name() const override { return log ? "log_softmax" : "softmax"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor g_rows = to_rows(g, dim), dx = Tensor::empty(y_rows.shape(), g.dtype(), g.device());
    kernels::softmax_rows_backward(y_rows, g_rows, dx, log);
    return {from_rows(dx, inputs[0].shape, dim)};
  }
  void release() override { y_rows = Tensor(); }
};

Tensor softmax_impl(const Tensor& x, int64_t dim, bool log) {
  NMPERM_CHECK(x.ndim() >= 1, "softmax: needs at least one dim, got {}", describe(x));
  int64_t d = wrap_dim(dim, x.ndim(), "softmax");
  Tensor rows = to_rows(x, d), y = Tensor::empty(rows.shape(), x.dtype(), x.device());
  kernels::softmax_rows(rows, y, log);
  Tensor out = from_rows(y, x.shape(), d);
  if (any_requires_grad({&x})) attach(out, std::make_shared<SoftmaxNode>(y, d, log), {&x});
  return out;
}

void check_affine(const Tensor& x, const Tensor& p, const char* op, const char* what) {
  if (!p.defined()) return;
  NMPERM_CHECK(p.ndim() == 1 && p.shape(0) == x.shape(-1) && p.dtype() == x.dtype(),
               "{}: {} {} does not match input {} (want {}[{}])", op, what, describe(p), describe(x), x.dtype(),
               x.shape(-1));
}

struct NormNode : Node {
  bool rms;
  Tensor x_rows, w, mean, rstd;
  NormNode(bool r, Tensor x, Tensor ww, Tensor m, Tensor s)
      : rms(r), x_rows(std::move(x)), w(std::move(ww)), mean(std::move(m)), rstd(std::move(s)) {}
  const char* name() const override { return rms ? "rms_norm" : "layer_norm"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor g_rows = view::reshape(g.contiguous(), x_rows.shape());
    Tensor dx, dw, db;
    if (needs(0)) dx = Tensor::empty(x_rows.shape(), g.dtype(), g.device());
    if (needs(1)) dw = Tensor::empty(w.shape(), g.dtype(), g.device());
    if (!rms && needs(2)) db = Tensor::empty({x_rows.shape(1)}, g.dtype(), g.device());
    if (rms) kernels::rms_norm_backward(x_rows, w, rstd, g_rows, dx, dw);
    else kernels::layer_norm_backward(x_rows, w, mean, rstd, g_rows, dx, dw, db);
    if (dx.defined()) dx = view::reshape(dx, inputs[0].shape);
    if (rms) return {dx, dw};
    return {dx, dw, db};
  }
  void release() override { x_rows = w = mean = rstd = Tensor(); }
};

struct RopeNode : Node {
  int64_t offset;
  std::vector<double> inv_freq;
  kernels::RopeStyle style;
  RopeNode(int64_t o, std::vector<double> f, kernels::RopeStyle s) : offset(o), inv_freq(std::move(f)), style(s) {}
  const char* name() const override { return "rope"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor gc = g.contiguous(), dx = Tensor::empty(g.shape(), g.dtype(), g.device());
    kernels::rope(gc, dx, offset, inv_freq, style, true);
    return {dx};
  }
};

struct AttentionNode : Node {
  Tensor q, k, v, out, lse;
  double scale;
  bool causal;
  AttentionNode(Tensor qq, Tensor kk, Tensor vv, Tensor o, Tensor l, double s, bool c)
      : q(std::move(qq)), k(std::move(kk)), v(std::move(vv)), out(std::move(o)), lse(std::move(l)), scale(s), causal(c) {}
  const char* name() const override { return "scaled_dot_product_attention"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor dq = Tensor::empty(q.shape(), q.dtype(), q.device()), dk = Tensor::empty(k.shape(), k.dtype(), k.device()),
           dv = Tensor::empty(v.shape(), v.dtype(), v.device());
    if (q.numel() == 0 || k.numel() == 0) return {zeros_like(q), zeros_like(k), zeros_like(v)};
    kernels::attention_backward(q, k, v, out, lse, kernels::as_head_input(g), dq, dk, dv, scale, causal);
    return {dq, dk, dv};
  }
  void release() override { q = k = v = out = lse = Tensor(); }
};

struct CrossEntropyNode : Node {
  Tensor logits, target, lse;
  int64_t ignore_index;
  double smoothing;
  Reduction reduction;
  double count;
  CrossEntropyNode(Tensor l, Tensor t, Tensor s, int64_t ii, double ls, Reduction r, double c)
      : logits(std::move(l)), target(std::move(t)), lse(std::move(s)), ignore_index(ii), smoothing(ls), reduction(r),
        count(c) {}
  const char* name() const override { return "cross_entropy"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    int64_t N = logits.shape(0);
    Tensor grad_rows = reduction == Reduction::None
                           ? g.contiguous()
                           : full({N}, g.item() / (reduction == Reduction::Mean ? count : 1.0), g.dtype(), g.device());
    Tensor dx = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
    kernels::cross_entropy_backward(logits, target, lse, grad_rows, ignore_index, smoothing, dx);
    return {dx};
  }
  void release() override { logits = target = lse = Tensor(); }
};

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, true); }

Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  NMPERM_CHECK(x.ndim() >= 1 && is_floating(x.dtype()), "layer_norm: bad input {}", describe(x));
  check_affine(x, w, "layer_norm", "weight");
  check_affine(x, b, "layer_norm", "bias");
  int64_t C = x.shape(-1);
  Tensor rows = view::reshape(x.contiguous(), {-1, C});
  int64_t R = rows.shape(0);
  Tensor y = Tensor::empty(rows.shape(), x.dtype(), x.device()), mean = Tensor::empty({R}, x.dtype(), x.device()),
         rstd = Tensor::empty({R}, x.dtype(), x.device());
  Tensor wc = w.defined() ? w.contiguous() : w, bc = b.defined() ? b.contiguous() : b;
  kernels::layer_norm(rows, wc, bc, eps, y, mean, rstd);
  Tensor out = view::reshape(y, x.shape());
  if (any_requires_grad({&x, &w, &b}))
    attach(out, std::make_shared<NormNode>(false, rows, wc.defined() ? wc.detach() : wc, mean, rstd), {&x, &w, &b});
  return out;
}

Tensor rms_norm(const Tensor& x, const Tensor& w, double eps) {
  NMPERM_CHECK(x.ndim() >= 1 && is_floating(x.dtype()), "rms_norm: bad input {}", describe(x));
  check_affine(x, w, "rms_norm", "weight");
  int64_t C = x.shape(-1);
  Tensor rows = view::reshape(x.contiguous(), {-1, C});
  int64_t R = rows.shape(0);
  Tensor y = Tensor::empty(rows.shape(), x.dtype(), x.device()), rstd = Tensor::empty({R}, x.dtype(), x.device());
  Tensor wc = w.defined() ? w.contiguous() : w;
  kernels::rms_norm(rows, wc, eps, y, rstd);
  Tensor out = view::reshape(y, x.shape());
  if (any_requires_grad({&x, &w}))
    attach(out, std::make_shared<NormNode>(true, rows, wc.defined() ? wc.detach() : wc, Tensor(), rstd), {&x, &w});
  return out;
}

Tensor rope(const Tensor& x, int64_t pos_offset, double theta, kernels::RopeStyle style) {
  NMPERM_CHECK(x.ndim() == 4 && x.shape(3) % 2 == 0, "rope: expects (B, H, T, D) with even D, got {}", describe(x));
  NMPERM_CHECK(theta > 0, "rope: theta must be positive, got {}", theta);
  return rope(x, pos_offset, kernels::rope_inv_freq(theta, x.shape(3)), style);
}

Tensor rope(const Tensor& x, int64_t pos_offset, const std::vector<double>& inv_freq, kernels::RopeStyle style) {
  NMPERM_CHECK(x.ndim() == 4 && x.shape(3) % 2 == 0, "rope: expects (B, H, T, D) with even D, got {}", describe(x));
  NMPERM_CHECK(int64_t(inv_freq.size()) * 2 == x.shape(3), "rope: {} frequencies for head size {}", inv_freq.size(),
               x.shape(3));
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  kernels::rope(kernels::as_head_input(x), out, pos_offset, inv_freq, style, false);
  if (any_requires_grad({&x})) attach(out, std::make_shared<RopeNode>(pos_offset, inv_freq, style), {&x});
  return out;
}

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale) {
  NMPERM_CHECK(q.ndim() == 4 && k.ndim() == 4 && v.ndim() == 4,
               "scaled_dot_product_attention: q, k, v must be (B, H, T, D), got {} {} {}", describe(q), describe(k),
               describe(v));
  NMPERM_CHECK(q.dtype() == k.dtype() && q.dtype() == v.dtype(), "scaled_dot_product_attention: dtypes differ");
  if (scale < 0) scale = 1.0 / std::sqrt(double(q.shape(3)));
  // On the CPU, heads split from a linear layer's rows are read in place, and the output is
  // written as (B, T, H, D), so merging its heads back into rows is a view, not a copy.
  Tensor qc = kernels::as_head_input(q), kc = kernels::as_head_input(k), vc = kernels::as_head_input(v);
  int64_t B = q.shape(0), H = q.shape(1), T = q.shape(2), D = q.shape(3);
  Tensor out = q.device() != Device::CPU ? zeros(q.shape(), q.dtype(), q.device())
               : k.numel() > 0           ? transpose(Tensor::empty({B, T, H, D}, q.dtype()), 1, 2)  // all written
                                         : transpose(zeros({B, T, H, D}, q.dtype()), 1, 2);
  Tensor lse = Tensor::empty({B, H, T}, q.dtype(), q.device());
  if (q.numel() > 0 && k.numel() > 0) kernels::attention(qc, kc, vc, out, lse, scale, causal);
  if (any_requires_grad({&q, &k, &v}))
    attach(out, std::make_shared<AttentionNode>(qc, kc, vc, out.detach(), lse, scale, causal), {&q, &k, &v});
  return out;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index, double label_smoothing,
                     Reduction reduction) {
  NMPERM_CHECK(logits.ndim() == 2 && target.ndim() == 1 && target.shape(0) == logits.shape(0),
               "cross_entropy: logits must be (N, V) and target (N), got {} and {}", describe(logits), describe(target));
  NMPERM_CHECK(!is_floating(target.dtype()), "cross_entropy: target must be i32 or i64, got {}", describe(target));
  NMPERM_CHECK(label_smoothing >= 0 && label_smoothing <= 1, "cross_entropy: label_smoothing {} outside [0, 1]",
               label_smoothing);
  Tensor lc = logits.contiguous(), tc = target.contiguous();
  int64_t N = logits.shape(0);
  Tensor rows = Tensor::empty({N}, logits.dtype(), logits.device()), lse = Tensor::empty({N}, logits.dtype(), logits.device());
  kernels::cross_entropy(lc, tc, ignore_index, label_smoothing, rows, lse);
  double count = 0;
  for (int64_t t : tc.to_vector<int64_t>()) count += t != ignore_index;
  Tensor out;
  {
    NoGradGuard ng;
    if (reduction == Reduction::None) out = rows;
    else {
      out = sum(rows);
      if (reduction == Reduction::Mean) out = mul(out, 1.0 / count);  // no targets: NaN, as in PyTorch
    }
  }
  if (any_requires_grad({&logits}))
    attach(out, std::make_shared<CrossEntropyNode>(lc, tc, lse, ignore_index, label_smoothing, reduction, count),
           {&logits});
  return out;
}

}  // namespace nmperm

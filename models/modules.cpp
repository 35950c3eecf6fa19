#include "models/modules.h"

namespace nmperm {

namespace {
thread_local LinearObserver* current_observer = nullptr;
}

void set_linear_observer(LinearObserver* observer) { current_observer = observer; }
LinearObserver* linear_observer() { return current_observer; }

void check_permutation(const std::vector<int64_t>& p, int64_t n, const std::string& what) {
  NMPERM_CHECK(int64_t(p.size()) == n, "{}: has {} entries for {} channels", what, p.size(), n);
  std::vector<bool> seen(size_t(n), false);
  for (int64_t v : p) {
    NMPERM_CHECK(v >= 0 && v < n && !seen[size_t(v)], "{}: is not a permutation of 0..{} (entry {})", what, n - 1, v);
    seen[size_t(v)] = true;
  }
}

void Linear::visit(const std::string& prefix, const ParamVisitor& f) {
  f(prefix + ".weight", weight);
  if (bias.defined()) f(prefix + ".bias", bias);
}

void Norm::visit(const std::string& prefix, const ParamVisitor& f) {
  f(prefix + ".weight", weight);
  if (bias.defined()) f(prefix + ".bias", bias);
}

Tensor Attention::operator()(const Tensor& x) const {
  int64_t B = x.shape(0), T = x.shape(1), D = q.out() / heads;
  auto split_heads = [&](const Tensor& t, int64_t h) {  // (B, T, h*D) -> (B, h, T, D)
    return transpose(reshape(t, {B, T, h, D}), 1, 2);
  };
  Tensor qh = split_heads(q(x), heads), kh = split_heads(k(x), kv_heads), vh = split_heads(v(x), kv_heads);
  if (!rope_inv_freq.empty()) {
    qh = nmperm::rope(qh, 0, rope_inv_freq);
    kh = nmperm::rope(kh, 0, rope_inv_freq);
  }
  Tensor y = scaled_dot_product_attention(qh, kh, vh, causal);  // (B, H, T, D)
  return o(reshape(transpose(y, 1, 2), {B, T, heads * D}));
}

Tensor normal_tensor(const Shape& shape, double std, Generator* gen) {
  if (!gen) return Tensor::empty(shape).set_requires_grad();
  Tensor t = randn(shape, *gen);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] *= float(std);
  return t.set_requires_grad();
}

Tensor normal_tensor(const Shape& shape, double std, Generator& gen) { return normal_tensor(shape, std, &gen); }

Linear make_linear(int64_t in, int64_t out, bool bias, double std, Generator& gen) {
  return make_linear(in, out, bias, std, &gen);
}

Linear make_linear(int64_t in, int64_t out, bool bias, double std, Generator* gen) {
  Linear l;
  l.weight = normal_tensor({out, in}, std, gen);
  if (bias) l.bias = zeros({out}).set_requires_grad();
  return l;
}

Norm make_norm(int64_t dim, double eps, bool rms) {
  Norm n;
  n.weight = ones({dim}).set_requires_grad();
  if (!rms) n.bias = zeros({dim}).set_requires_grad();
  n.eps = eps;
  n.rms = rms;
  return n;
}

}  // namespace nmperm

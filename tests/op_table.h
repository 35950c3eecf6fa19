// The table of every differentiable op: each entry builds its inputs (odd sizes 1, 7, 33
// and broadcasting on purpose) and the function. Every unary op of kernels/elementwise.h's
// list needs an entry named as the op (or the op's name and a suffix, "pow_int"): a test
// fails otherwise. The CPU tests gradcheck every entry in
// f64 (test_gradcheck_ops.cpp); the CUDA tests run each entry on both devices and compare
// outputs and gradients (tests/cuda). Functions make any tensor of their own on the
// device of their first input.
#pragma once
#include <functional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "autograd/ops.h"
#include "core/rng.h"

namespace nmperm::test {

enum class Kind { Normal, Positive, Constant, Index, Mask };
struct In {
  Kind kind;
  Shape shape;
  int64_t high = 0;  // index range
};
inline In R(Shape s) { return {Kind::Normal, std::move(s)}; }
inline In P(Shape s) { return {Kind::Positive, std::move(s)}; }
inline In C(Shape s) { return {Kind::Constant, std::move(s)}; }
inline In I(Shape s, int64_t high) { return {Kind::Index, std::move(s), high}; }
inline In M(Shape s) { return {Kind::Mask, std::move(s)}; }

using V = const std::vector<Tensor>&;
struct OpCase {
  std::string name;
  std::vector<In> inputs;
  std::function<Tensor(V)> fn;
};
// Test listings show the op's name, not the struct's bytes.
inline void PrintTo(const OpCase& c, std::ostream* os) { *os << c.name; }

inline Tensor make(const In& in, uint64_t seed) {
  Generator g(seed);
  switch (in.kind) {
    case Kind::Normal: return randn(in.shape, g, DType::F64).set_requires_grad();
    case Kind::Positive: return add(rand(in.shape, g, DType::F64), 0.5).set_requires_grad();
    case Kind::Constant: return randn(in.shape, g, DType::F64);
    case Kind::Mask: return gt(rand(in.shape, g, DType::F64), full({}, 0.5, DType::F64));
    case Kind::Index: {
      Tensor t = Tensor::empty(in.shape, DType::I64);
      for (int64_t i = 0; i < t.numel(); ++i) t.data<int64_t>()[i] = g.randint(in.high);
      return t;
    }
  }
  return {};
}

// Distinct indices 0..n-1 in a seeded order, for ops that need no duplicate hits.
inline Tensor perm_index(int64_t n, uint64_t seed) {
  Generator g(seed);
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(v[size_t(i)], v[size_t(g.randint(i + 1))]);
  return from_vector(v, {n});
}

inline std::vector<OpCase> cases() {
  using kernels::RopeStyle;
  std::vector<OpCase> c = {
      // unary
      {"neg", {R({7, 33})}, [](V x) { return neg(x[0]); }},
      {"exp", {R({7, 33})}, [](V x) { return exp(x[0]); }},
      {"log", {P({33})}, [](V x) { return log(x[0]); }},
      {"sqrt", {P({7, 1})}, [](V x) { return sqrt(x[0]); }},
      {"rsqrt", {P({1, 33})}, [](V x) { return rsqrt(x[0]); }},
      {"tanh", {R({7, 33})}, [](V x) { return tanh(x[0]); }},
      {"sigmoid", {R({7, 33})}, [](V x) { return sigmoid(x[0]); }},
      {"relu", {R({7, 33})}, [](V x) { return relu(x[0]); }},
      {"gelu", {R({7, 33})}, [](V x) { return gelu(x[0]); }},
      {"gelu_tanh", {R({7, 33})}, [](V x) { return gelu(x[0], true); }},
      {"silu", {R({7, 33})}, [](V x) { return silu(x[0]); }},
      {"swiglu", {R({7, 33}), R({7, 33})}, [](V x) { return swiglu(x[0], x[1]); }},
      {"softplus", {R({7, 33})}, [](V x) { return softplus(x[0]); }},
      {"abs", {R({7, 33})}, [](V x) { return abs(x[0]); }},
      {"square", {R({7})}, [](V x) { return square(x[0]); }},
      {"pow_frac", {P({7, 33})}, [](V x) { return pow(x[0], 2.5); }},
      {"pow_int", {R({7, 33})}, [](V x) { return pow(x[0], 3.0); }},
      // binary with broadcasting
      {"add_bcast", {R({7, 33}), R({33})}, [](V x) { return add(x[0], x[1]); }},
      {"sub_outer", {R({1, 7}), R({7, 1})}, [](V x) { return sub(x[0], x[1]); }},
      {"mul_3d", {R({3, 1, 5}), R({7, 5})}, [](V x) { return mul(x[0], x[1]); }},
      {"div", {R({7, 33}), P({33})}, [](V x) { return div(x[0], x[1]); }},
      {"maximum", {R({7, 33}), R({7, 33})}, [](V x) { return maximum(x[0], x[1]); }},
      {"minimum_bcast", {R({7, 33}), R({1, 33})}, [](V x) { return minimum(x[0], x[1]); }},
      {"where", {M({7, 1}), R({7, 33}), R({33})}, [](V x) { return where(x[0], x[1], x[2]); }},
      {"scalar_ops", {R({7, 33})}, [](V x) { return (x[0] * 3.0 + 1.5) / 2.0 - x[0]; }},
      {"same_input_twice", {R({7, 33})}, [](V x) { return mul(x[0], x[0]); }},
      // reductions
      {"sum_all", {R({7, 33})}, [](V x) { return sum(x[0]); }},
      {"sum_dims_keep", {R({3, 7, 5})}, [](V x) { return sum(x[0], {0, 2}, true); }},
      {"mean_dim", {R({3, 7, 5})}, [](V x) { return mean(x[0], {1}); }},
      {"max_dim", {R({7, 33})}, [](V x) { return max(x[0], {1}); }},
      {"min_all", {R({7, 33})}, [](V x) { return min(x[0]); }},
      {"logsumexp", {R({7, 33})}, [](V x) { return logsumexp(x[0], {-1}, true); }},
      {"var_unbiased", {R({7, 33})}, [](V x) { return var(x[0], {1}); }},
      {"var_all_biased", {R({3, 7})}, [](V x) { return var(x[0], {}, 0); }},
      {"sum_to", {R({3, 7, 5})}, [](V x) { return sum_to(x[0], {7, 1}); }},
      // shapes
      {"reshape", {R({7, 6})}, [](V x) { return reshape(x[0], {3, -1, 2}); }},
      {"flatten", {R({2, 3, 5})}, [](V x) { return flatten(x[0], 1); }},
      {"transpose", {R({7, 33})}, [](V x) { return transpose(x[0], 0, 1); }},
      {"permute", {R({2, 3, 5})}, [](V x) { return permute(x[0], {2, 0, 1}); }},
      {"narrow", {R({7, 33})}, [](V x) { return narrow(x[0], 1, 5, 20); }},
      {"expand", {R({7, 1})}, [](V x) { return expand(x[0], {3, 7, 5}); }},
      {"unsqueeze_squeeze", {R({7, 1})}, [](V x) { return unsqueeze(squeeze(x[0], 1), 0); }},
      {"contiguous", {R({7, 33})}, [](V x) { return contiguous(transpose(x[0], 0, 1)); }},
      {"reshape_of_transposed", {R({6, 4})}, [](V x) { return reshape(transpose(x[0], 0, 1), {-1}); }},
      {"cat", {R({7, 1}), R({7, 33}), R({7, 2})}, [](V x) { return cat({x[0], x[1], x[2]}, 1); }},
      {"stack", {R({7, 5}), R({7, 5})}, [](V x) { return stack({x[0], x[1]}, 1); }},
      {"split", {R({7, 33})},
       [](V x) {
         auto p = split(x[0], {10, 23}, 1);
         return cat({mul(p[0], 2.0), exp(p[1])}, 1);
       }},
      {"chunk", {R({6, 5})}, [](V x) {
         auto p = chunk(x[0], 3, 0);
         return add(add(p[0], mul(p[1], 2.0)), mul(p[2], p[2]));
       }},
      // linear algebra
      {"matmul", {R({7, 33}), R({33, 5})}, [](V x) { return matmul(x[0], x[1]); }},
      {"matmul_shared_weight", {R({2, 7, 3}), R({3, 5})}, [](V x) { return matmul(x[0], x[1]); }},
      {"matmul_batch_bcast", {R({2, 1, 4, 3}), R({3, 3, 5})}, [](V x) { return matmul(x[0], x[1]); }},
      {"matmul_transposed", {R({3, 7}), R({5, 3})},
       [](V x) { return matmul(transpose(x[0], 0, 1), transpose(x[1], 0, 1)); }},
      {"matmul_one", {R({1, 1}), R({1, 1})}, [](V x) { return matmul(x[0], x[1]); }},
      {"linear", {R({2, 7, 33}), R({5, 33}), R({5})}, [](V x) { return linear(x[0], x[1], x[2]); }},
      // neural-network ops
      {"softmax_last", {R({7, 33})}, [](V x) { return softmax(x[0], -1); }},
      {"softmax_dim0", {R({7, 5})}, [](V x) { return softmax(x[0], 0); }},
      {"log_softmax", {R({3, 7, 5})}, [](V x) { return log_softmax(x[0], 1); }},
      {"layer_norm", {R({2, 7, 33}), R({33}), R({33})}, [](V x) { return layer_norm(x[0], x[1], x[2], 1e-5); }},
      {"layer_norm_plain", {R({7, 1})}, [](V x) { return layer_norm(x[0], Tensor(), Tensor(), 1e-5); }},
      {"rms_norm", {R({2, 7, 33}), R({33})}, [](V x) { return rms_norm(x[0], x[1], 1e-6); }},
      {"rope_rotate_half", {R({2, 3, 7, 8})}, [](V x) { return rope(x[0], 3, 10000.0, RopeStyle::RotateHalf); }},
      {"rope_interleaved", {R({1, 2, 7, 6})}, [](V x) { return rope(x[0], 0, 500.0, RopeStyle::Interleaved); }},
      {"attention", {R({2, 3, 7, 8}), R({2, 3, 7, 8}), R({2, 3, 7, 8})},
       [](V x) { return scaled_dot_product_attention(x[0], x[1], x[2], false); }},
      {"attention_causal", {R({1, 2, 7, 5}), R({1, 2, 7, 5}), R({1, 2, 7, 5})},
       [](V x) { return scaled_dot_product_attention(x[0], x[1], x[2], true); }},
      {"attention_gqa_causal_longer_keys", {R({2, 4, 5, 3}), R({2, 2, 7, 3}), R({2, 2, 7, 3})},
       [](V x) { return scaled_dot_product_attention(x[0], x[1], x[2], true, 0.3); }},
      {"attention_one", {R({1, 1, 1, 1}), R({1, 1, 1, 1}), R({1, 1, 1, 1})},
       [](V x) { return scaled_dot_product_attention(x[0], x[1], x[2], true); }},
      {"cross_entropy", {R({7, 33}), I({7}, 33)}, [](V x) { return cross_entropy(x[0], x[1]); }},
      {"cross_entropy_ignore_smooth", {R({7, 5}), C({1})},
       [](V x) {
         Tensor t = from_vector<int64_t>({0, -100, 4, 2, -100, 1, 3}, {7}).to(x[0].device());
         return cross_entropy(x[0], t, -100, 0.1);
       }},
      {"cross_entropy_sum", {R({7, 5}), I({7}, 5)},
       [](V x) { return cross_entropy(x[0], x[1], -100, 0.0, Reduction::Sum); }},
      {"cross_entropy_none", {R({7, 5}), I({7}, 5)},
       [](V x) { return cross_entropy(x[0], x[1], -100, 0.2, Reduction::None); }},
      // indexing
      {"embedding", {R({11, 7}), I({2, 5}, 11)}, [](V x) { return embedding(x[0], x[1]); }},
      {"index_select", {R({3, 7, 5}), I({9}, 7)}, [](V x) { return index_select(x[0], 1, x[1]); }},
      {"gather", {R({7, 5}), I({7, 3}, 5)}, [](V x) { return gather(x[0], 1, x[1]); }},
      {"scatter_add", {R({7, 5}), I({7, 9}, 5), R({7, 9})}, [](V x) { return scatter_add(x[0], 1, x[1], x[2]); }},
      {"topk", {R({7, 33})}, [](V x) { return topk(x[0], 4).first; }},
      {"topk_smallest_permuted_input", {R({3, 7})},
       [](V x) { return topk(index_select(x[0], 1, perm_index(7, 5).to(x[0].device())), 7, false).first; }},
  };
  return c;
}

}  // namespace nmperm::test

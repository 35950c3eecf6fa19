// Fused ops against the same function composed from elementwise ops: forward values and
// every input gradient must agree (the composed form is the readable definition).
#include "helpers.h"
#include "kernels/cpu/vmath.h"
#include "kernels/heads.h"

namespace nmperm {
namespace {

using test::all_close;
using test::randn64;
using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

void agree(const Fn& fused, const Fn& composed, std::vector<Tensor> inputs) {
  auto run = [&](const Fn& f) {
    std::vector<Tensor> xs;
    for (auto& x : inputs) xs.push_back(x.requires_grad() ? x.clone().set_requires_grad() : x);
    Tensor y = f(xs);
    Tensor u = randn64(y.shape(), 99);
    backward(y, u);
    std::vector<Tensor> out{y};
    for (auto& x : xs)
      if (x.requires_grad()) out.push_back(x.grad());
    return out;
  };
  auto a = run(fused), b = run(composed);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_TRUE(all_close(a[i], b[i], 1e-10, 1e-8)) << (i == 0 ? "output" : "gradient of input " + std::to_string(i - 1));
}

Tensor g(Shape s, uint64_t seed) { return randn64(s, seed).set_requires_grad(); }

// swiglu computes silu's formula and the product as the two ops do, so in f32 its output
// and both gradients have the composed form's bits, at 8 and at 16 lanes, on odd lengths
// (scalar tails) and special values; transposed (strided) inputs too. f64 as above.
TEST(Fused, SwigluHasTheBitsOfSiluThenMul) {
  const bool saved = kernels::wide_lanes();
  for (bool wide : {false, true}) {
    kernels::set_wide_lanes(wide);
    Generator g(4);
    Tensor gate = mul(randn({3, 345}, g), 5.0), up = randn({3, 345}, g), dy = randn({3, 345}, g);
    const float special[] = {NAN, INFINITY, -INFINITY, 100.0f, -100.0f, 0.0f, -0.0f, 1e-30f};
    for (int64_t i = 0; i < gate.numel(); i += 7) gate.data<float>()[i] = special[size_t(i / 7) % std::size(special)];
    auto run = [&](bool fused, bool strided) {
      Tensor a = (strided ? transpose(contiguous(transpose(gate, 0, 1)), 0, 1) : gate).clone().set_requires_grad();
      Tensor b = up.clone().set_requires_grad();
      Tensor y = fused ? swiglu(a, b) : mul(silu(a), b);
      backward(y, dy);
      return std::vector<std::vector<float>>{y.to_vector<float>(), a.grad().to_vector<float>(),
                                             b.grad().to_vector<float>()};
    };
    auto composed = run(false, false);
    for (bool strided : {false, true}) {
      auto fused = run(true, strided);
      for (size_t k = 0; k < 3; ++k)
        for (size_t j = 0; j < composed[k].size(); ++j)
          if (!(std::isnan(composed[k][j]) && std::isnan(fused[k][j]))) {
            ASSERT_EQ(std::bit_cast<uint32_t>(composed[k][j]), std::bit_cast<uint32_t>(fused[k][j]))
                << (k == 0 ? "output" : k == 1 ? "gate gradient" : "up gradient") << " at " << j << " (wide " << wide
                << ", strided " << strided << ")";
          }
    }
  }
  kernels::set_wide_lanes(saved);
  agree([](const std::vector<Tensor>& x) { return swiglu(x[0], x[1]); },
        [](const std::vector<Tensor>& x) { return mul(silu(x[0]), x[1]); },
        {randn64({5, 37}, 1).set_requires_grad(), randn64({5, 37}, 2).set_requires_grad()});
  EXPECT_THROW(swiglu(zeros({2, 3}), zeros({3, 2})), Error);
}

TEST(Fused, SoftmaxMatchesComposed) {
  agree([](auto& x) { return softmax(x[0], 1); },
        [](auto& x) {
          Tensor e = exp(sub(x[0], max(x[0], {1}, true)));
          return div(e, sum(e, {1}, true));
        },
        {g({3, 7, 5}, 1)});
  agree([](auto& x) { return log_softmax(x[0], -1); },
        [](auto& x) { return sub(x[0], logsumexp(x[0], {-1}, true)); }, {g({7, 33}, 2)});
}

TEST(Fused, LayerNormMatchesComposed) {
  agree([](auto& x) { return layer_norm(x[0], x[1], x[2], 1e-5); },
        [](auto& x) {
          Tensor m = mean(x[0], {-1}, true);
          Tensor v = var(x[0], {-1}, 0, true);
          return add(mul(div(sub(x[0], m), sqrt(add(v, 1e-5))), x[1]), x[2]);
        },
        {g({2, 7, 33}, 3), g({33}, 4), g({33}, 5)});
}

TEST(Fused, RmsNormMatchesComposed) {
  agree([](auto& x) { return rms_norm(x[0], x[1], 1e-6); },
        [](auto& x) { return mul(mul(x[0], rsqrt(add(mean(square(x[0]), {-1}, true), 1e-6))), x[1]); },
        {g({7, 33}, 6), g({33}, 7)});
}

Tensor composed_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale) {
  int64_t H = q.shape(1), Hkv = k.shape(1), T = q.shape(2), S = k.shape(2);
  std::vector<int64_t> rep;
  for (int64_t h = 0; h < H; ++h) rep.push_back(h / (H / Hkv));
  Tensor idx = from_vector(rep, {H});
  Tensor kk = index_select(k, 1, idx), vv = index_select(v, 1, idx);
  Tensor s = mul(matmul(q, transpose(kk, -1, -2)), scale);
  if (causal) {
    std::vector<double> m(size_t(T * S));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < S; ++j) m[size_t(t * S + j)] = j <= t + S - T ? 0.0 : -1e30;
    s = add(s, from_vector(m, {T, S}));
  }
  return matmul(softmax(s, -1), vv);
}

TEST(Fused, AttentionMatchesComposed) {
  for (bool causal : {false, true}) {
    agree([=](auto& x) { return scaled_dot_product_attention(x[0], x[1], x[2], causal, 0.4); },
          [=](auto& x) { return composed_attention(x[0], x[1], x[2], causal, 0.4); },
          {g({2, 4, 7, 5}, 8), g({2, 2, 9, 5}, 9), g({2, 2, 9, 5}, 10)});
  }
}

// Long enough for the CPU kernel's causal row blocks (32 query rows each, each against
// only the keys its last row sees): several blocks, grouped heads, more keys than queries.
TEST(Fused, AttentionMatchesComposedAcrossCausalRowBlocks) {
  for (bool causal : {false, true}) {
    agree([=](auto& x) { return scaled_dot_product_attention(x[0], x[1], x[2], causal, 0.3); },
          [=](auto& x) { return composed_attention(x[0], x[1], x[2], causal, 0.3); },
          {g({1, 4, 70, 4}, 13), g({1, 2, 75, 4}, 14), g({1, 2, 75, 4}, 15)});
    agree([=](auto& x) { return scaled_dot_product_attention(x[0], x[1], x[2], causal, 0.3); },
          [=](auto& x) { return composed_attention(x[0], x[1], x[2], causal, 0.3); },
          {g({2, 2, 64, 3}, 16), g({2, 2, 64, 3}, 17), g({2, 2, 64, 3}, 18)});
  }
}

// Heads split from a linear layer's rows, as the models split them, go through RoPE and
// attention in place, and the output merges back into rows without a copy; values and every
// gradient equal the composed form on packed heads.
TEST(Fused, RopeAndAttentionReadHeadsSplitFromRowsInPlace) {
  const int64_t B = 2, T = 37, H = 4, Hkv = 2, D = 6;
  auto split = [&](const Tensor& x, int64_t h) { return transpose(reshape(x, {B, T, h, D}), 1, 2); };
  auto packed = [](const Tensor& x) { return mul(x, 1.0); };  // an elementwise op writes packed output
  for (bool causal : {false, true}) {
    agree(
        [&](auto& x) {
          Tensor q = rope(split(x[0], H), 3, 100.0), k = rope(split(x[1], Hkv), 3, 100.0);
          EXPECT_TRUE(kernels::has_head_rows(split(x[0], H)) && !split(x[0], H).is_contiguous());
          Tensor y = scaled_dot_product_attention(q, k, split(x[2], Hkv), causal, 0.4);
          EXPECT_TRUE(transpose(y, 1, 2).is_contiguous());  // written as (B, T, H, D)
          return reshape(transpose(y, 1, 2), {B, T, H * D});
        },
        [&](auto& x) {
          Tensor q = rope(packed(split(x[0], H)), 3, 100.0), k = rope(packed(split(x[1], Hkv)), 3, 100.0);
          Tensor y = composed_attention(q, k, packed(split(x[2], Hkv)), causal, 0.4);
          return reshape(packed(transpose(y, 1, 2)), {B, T, H * D});
        },
        {g({B, T, H * D}, 20), g({B, T, Hkv * D}, 21), g({B, T, Hkv * D}, 22)});
  }
}

TEST(Fused, CrossEntropyMatchesComposed) {
  Tensor target = from_vector<int64_t>({1, 4, -100, 0, 2, 3, 3}, {7});
  Tensor keep = from_vector<double>({1, 1, 0, 1, 1, 1, 1}, {7, 1});
  Tensor safe_target = from_vector<int64_t>({1, 4, 0, 0, 2, 3, 3}, {7, 1});
  double ls = 0.15;
  agree([&](auto& x) { return cross_entropy(x[0], target, -100, ls); },
        [&](auto& x) {
          Tensor lp = log_softmax(x[0], -1);
          Tensor nll = neg(gather(lp, 1, safe_target));            // (7, 1)
          Tensor smooth = neg(mean(lp, {1}, true));                // (7, 1)
          Tensor rows = mul(add(mul(nll, 1 - ls), mul(smooth, ls)), keep);
          return div(sum(rows), sum(keep));
        },
        {g({7, 5}, 11)});
}

TEST(Fused, RopeMatchesComposedRotateHalf) {
  // Rotate-half written out with cat/narrow and precomputed cos/sin.
  int64_t T = 5, D = 6, off = 2;
  double theta = 100.0;
  std::vector<double> c(size_t(T * D)), s(size_t(T * D));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D; ++i) {
      double a = double(t + off) * std::pow(theta, -double(2 * (i % (D / 2))) / double(D));
      c[size_t(t * D + i)] = std::cos(a);
      s[size_t(t * D + i)] = std::sin(a);
    }
  Tensor ct = from_vector(c, {T, D}), st = from_vector(s, {T, D});
  agree([&](auto& x) { return rope(x[0], off, theta); },
        [&](auto& x) {
          Tensor rot = cat({neg(narrow(x[0], -1, D / 2, D / 2)), narrow(x[0], -1, 0, D / 2)}, -1);
          return add(mul(x[0], ct), mul(rot, st));
        },
        {g({2, 3, T, D}, 12)});
}

}  // namespace
}  // namespace nmperm

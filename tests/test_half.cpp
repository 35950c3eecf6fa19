// bf16 and f16: conversions against the compiler's own (and every 16-bit pattern), the
// mixed-precision matmul and linear against f64 references, with tolerances derived from
// the formats' precision rather than tuned.
#include <cstring>

#include "core/safetensors.h"
#include "helpers.h"
#include "core/view.h"
#include "kernels/matmul.h"
#include "tiny_models.h"

namespace nmperm {
namespace {

using test::randn64;

using half_bits::bits_float;

TEST(Half, EverySixteenBitPatternRoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float b = half_bits::bf16_to_float(uint16_t(h)), f = half_bits::f16_to_float(uint16_t(h));
    if (std::isnan(b)) EXPECT_TRUE(std::isnan(float(bf16(b))));
    else EXPECT_EQ(bf16(b).bits, h);
    if (std::isnan(f)) EXPECT_TRUE(std::isnan(float(f16(f))));
    else EXPECT_EQ(f16(f).bits, h) << std::hex << h;
  }
}

TEST(Half, RoundingMatchesTheCompilersConversions) {
  // A stride through all 2^32 float patterns (every exponent, subnormals, NaN, infinity)
  // plus the halfway points, where ties-to-even decides.
  auto check = [](uint32_t u) {
    float x = bits_float(u);
    _Float16 h = static_cast<_Float16>(x);  // the compiler's IEEE conversion
    uint16_t hb;
    std::memcpy(&hb, &h, 2);
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(float(f16(x))));
      EXPECT_TRUE(std::isnan(float(bf16(x))));
      return;
    }
    ASSERT_EQ(f16(x).bits, hb) << x;
    // bf16 reference: the nearer of the two bf16 neighbours, ties to the even one. Floats
    // between them are evenly spaced, so distances are counted in float steps (integers:
    // the engine runs with denormals-are-zero, which would flush subnormal arithmetic).
    uint32_t rest = u & 0xffffu, lo = u >> 16;
    uint16_t want = uint16_t(rest < 0x8000u || (rest == 0x8000u && !(lo & 1u)) ? lo : lo + 1);
    if ((u & 0x7f800000u) == 0x7f800000u) want = uint16_t(lo);  // infinity stays infinity
    ASSERT_EQ(bf16(x).bits, want) << x;
  };
  for (uint64_t u = 0; u < (1ull << 32); u += 65521) check(uint32_t(u));
  for (uint32_t e = 0; e < 255; ++e)
    for (uint32_t s : {0u, 0x80000000u}) {
      uint32_t base = s | e << 23;
      for (uint32_t m : {0x8000u, 0x18000u, 0x1000u, 0x3000u, 0x7fffffu, 0x1u})  // bf16 and f16 halfway points
        check(base | m);
    }
}

TEST(Half, TensorsConvertAndSafetensorsKeepTheirDtype) {
  Tensor x = randn64({3, 17}, 1).to(DType::F32);
  for (DType d : {DType::BF16, DType::F16}) {
    Tensor h = x.to(d);
    EXPECT_EQ(h.dtype(), d);
    EXPECT_EQ(h.storage()->nbytes, size_t(3 * 17 * 2));
    auto back = h.to(DType::F32).to_vector<float>(), orig = x.to_vector<float>();
    double u = d == DType::BF16 ? 1.0 / 256 : 1.0 / 2048;  // unit roundoff 2^-8 / 2^-11
    for (size_t i = 0; i < back.size(); ++i) EXPECT_LE(std::abs(back[i] - orig[i]), u * std::abs(orig[i])) << i;
    // A transposed view converts element by element.
    EXPECT_EQ(transpose(h, 0, 1).contiguous().to(DType::F32).to_vector<float>(),
              transpose(h.to(DType::F32), 0, 1).contiguous().to_vector<float>());
    std::string path = ::testing::TempDir() + "/half.safetensors";
    save_safetensors(path, {{"h", h}});
    MappedSafeTensors m(path);
    Tensor kept = m.read(*m.find("h"), /*keep_half=*/true), wide = m.read(*m.find("h"));
    EXPECT_EQ(kept.dtype(), d);
    EXPECT_EQ(std::memcmp(kept.raw_data(), h.raw_data(), 3 * 17 * 2), 0);
    EXPECT_EQ(wide.dtype(), DType::F32);
    EXPECT_EQ(wide.to_vector<float>(), back);
  }
}

// |c - ref| <= tol * sum_k |a_ik| |b_kj| elementwise, for (M, K) @ (K, N) as doubles.
::testing::AssertionResult within_product_bound(const Tensor& c, const Tensor& a, const Tensor& b, double alpha,
                                                const Tensor& c0, double beta, double tol) {
  int64_t M = a.shape(0), K = a.shape(1), N = b.shape(1);
  auto av = a.to_vector<double>(), bv = b.to_vector<double>(), cv = c.to_vector<double>(), c0v = c0.to_vector<double>();
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        ref += av[size_t(i * K + k)] * bv[size_t(k * N + j)];
        mag += std::abs(av[size_t(i * K + k)] * bv[size_t(k * N + j)]);
      }
      ref = alpha * ref + beta * c0v[size_t(i * N + j)];
      double err = std::abs(cv[size_t(i * N + j)] - ref), bound = tol * std::abs(alpha) * mag + 1e-6 * std::abs(ref);
      if (err > bound)
        return ::testing::AssertionFailure() << "(" << i << ", " << j << "): " << cv[size_t(i * N + j)] << " vs "
                                             << ref << ", error " << err << " > " << bound;
    }
  return ::testing::AssertionSuccess();
}

TEST(Half, MatmulAccumulatesInF32OnEveryLayout) {
  for (DType d : {DType::BF16, DType::F16})
    for (int64_t M : {1, 7, 65})
      for (int64_t K : {1, 33, 300})
        for (int64_t N : {1, 9, 40}) {
          Tensor a = randn64({M, K}, 1).to(DType::F32), b = randn64({K, N}, 2).to(DType::F32);
          Tensor c0 = randn64({M, N}, 3).to(DType::F32);
          Tensor ah = a.to(d), bh = b.to(d);
          // Against the rounded inputs the only error is f32 accumulation (K * 2^-24, with
          // slack for blocked sums); against the f32 inputs add two roundings of 2^-8 / 2^-11.
          double acc = 4.0 * double(K) * 0x1p-24, u = d == DType::BF16 ? 0x1p-8 : 0x1p-11;
          Tensor at = transpose(contiguous(transpose(ah, 0, 1)), 0, 1), bt = transpose(contiguous(transpose(bh, 0, 1)), 0, 1);
          struct Case { const char* name; Tensor a, b; double alpha, beta; };
          for (auto& k : {Case{"plain", ah, bh, 1, 0}, Case{"A transposed", at, bh, 1, 0},
                          Case{"B transposed", ah, bt, 1, 0}, Case{"scaled, accumulated", ah, bh, 0.5, 1}}) {
            Tensor c = c0.clone(), c3 = view::reshape(c, {1, M, N});
            kernels::matmul(view::reshape(k.a, {1, M, K}), view::reshape(k.b, {1, K, N}), c3, k.alpha, k.beta);
            EXPECT_TRUE(within_product_bound(c, ah.to(DType::F32), bh.to(DType::F32), k.alpha, c0, k.beta, acc))
                << dtype_name(d) << " " << k.name << " M" << M << " K" << K << " N" << N;
            EXPECT_TRUE(within_product_bound(c, a, b, k.alpha, c0, k.beta, acc + 2 * u + u * u)) << k.name;
          }
        }
}

TEST(Half, BatchedMatmulWithASharedOperand) {
  Tensor a = randn64({4, 5, 24}, 4).to(DType::BF16), w = randn64({1, 24, 6}, 5).to(DType::BF16);
  Tensor c = Tensor::empty({4, 5, 6});
  kernels::matmul(a, view::expand(w, {4, 24, 6}), c);
  for (int64_t i = 0; i < 4; ++i) {
    Tensor ai = view::reshape(view::narrow(a, 0, i, 1), {5, 24}).to(DType::F32);
    Tensor ci = view::reshape(view::narrow(c, 0, i, 1), {5, 6}).contiguous();
    EXPECT_TRUE(within_product_bound(ci, ai, view::reshape(w, {24, 6}).to(DType::F32), 1, zeros({5, 6}), 0,
                                     4 * 24 * 0x1p-24));
  }
}

TEST(Half, MixedPrecisionLinearAndItsGradients) {
  Tensor x = randn64({2, 3, 48}, 6).to(DType::F32).set_requires_grad();
  Tensor w = randn64({20, 48}, 7).to(DType::F32).set_requires_grad();
  Tensor b = randn64({20}, 8).to(DType::F32).set_requires_grad();
  Tensor up = randn64({2, 3, 20}, 9).to(DType::F32);
  auto run = [&](DType precision) {
    LinearPrecision scope(precision);
    x.zero_grad(), w.zero_grad(), b.zero_grad();
    Tensor y = linear(x, w, b);
    EXPECT_EQ(y.dtype(), DType::F32);
    backward(sum(mul(y, up)));
    return std::vector<Tensor>{y.detach(), x.grad(), w.grad(), b.grad()};
  };
  auto ref = run(DType::F32);
  EXPECT_EQ(linear_precision(), DType::F32);  // the scope ended
  for (DType d : {DType::BF16, DType::F16}) {
    auto got = run(d);
    double u = d == DType::BF16 ? 0x1p-8 : 0x1p-11;
    // Each output sums 48 products of two rounded operands; the gradients round the
    // upstream gradient as well (three roundings). Bounded relative to the magnitudes.
    auto rms = [](const Tensor& t) {
      double s = 0;
      for (double v : t.to_vector<double>()) s += v * v;
      return std::sqrt(s / double(t.numel()));
    };
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(got[size_t(i)].dtype(), DType::F32);
      double scale = rms(ref[size_t(i)]);
      EXPECT_TRUE(test::all_close(got[size_t(i)], ref[size_t(i)], 3 * u * scale * 8, 0)) << dtype_name(d) << " " << i;
    }
    EXPECT_TRUE(test::all_close(got[3], ref[3], 1e-5, 1e-5));  // the bias gradient is the f32 sum of g
  }
  // A weight stored in bf16 computes in bf16 without a scope; 16-bit tensors do not train.
  Tensor wh = w.detach().to(DType::BF16);
  Tensor y = linear(x.detach(), wh, b.detach());
  EXPECT_EQ(y.dtype(), DType::F32);
  {
    LinearPrecision scope(DType::BF16);
    EXPECT_TRUE(test::all_close(y, linear(x.detach(), w.detach(), b.detach()), 0, 0));
  }
  EXPECT_THROW_MSG(wh.set_requires_grad(), "cannot train");
  EXPECT_THROW_MSG(LinearPrecision(DType::I64), "linear precision must be f32, bf16 or f16");
}

// 16-bit inference of whole models: storing the linear weights in bf16 computes exactly
// what the precision scope computes on f32 weights, a tied lm_head stays shared, and the
// loss moves by about bf16's rounding only.
TEST(Half, StoredLinearWeightsEvaluateAsTheScopeDoes) {
  for (bool vit : {true, false}) {
    Model m = vit ? test::tiny_vit(1) : test::tiny_llama(1);
    TrainData data = test::tiny_data(m, 2);
    if (!vit) {
      m.as<Llama>().cfg.tie_word_embeddings = true;
      m.as<Llama>().lm_head.weight = m.as<Llama>().embed_tokens;
    }
    EvalResult f32 = evaluate(m, data, 0), scoped;
    {
      LinearPrecision scope(DType::BF16);
      scoped = evaluate(m, data, 0);
      int64_t linears = 0, saved = m.store_linear_weights(DType::BF16);
      m.visit_linears([&](const std::string& name, Linear& l) {
        if (l.weight.same_data(vit ? Tensor() : m.as<Llama>().embed_tokens)) return;
        EXPECT_EQ(l.weight.dtype(), DType::BF16) << name;
        linears += l.weight.numel();
      });
      EXPECT_EQ(saved, 2 * linears);
      EvalResult stored = evaluate(m, data, 0);
      EXPECT_EQ(stored.loss, scoped.loss);
    }
    if (!vit) {
      EXPECT_EQ(m.as<Llama>().lm_head.weight.dtype(), DType::F32);
      EXPECT_TRUE(m.as<Llama>().lm_head.weight.same_data(m.as<Llama>().embed_tokens));
    }
    EXPECT_NE(scoped.loss, f32.loss);
    EXPECT_NEAR(scoped.loss, f32.loss, 0.02 * f32.loss) << (vit ? "vit" : "llama");
  }
}

}  // namespace
}  // namespace nmperm

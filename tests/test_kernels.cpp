// Kernel behaviour the op-level tests do not pin down: matmul layouts against a naive
// loop, top-k ordering and ties, AdamW against its formula, clipping, thread-count
// independence of reductions.
#include "core/profile.h"
#include "core/view.h"
#include "helpers.h"
#include "kernels/cpu/vmath.h"
#include "kernels/elementwise.h"
#include "kernels/matmul.h"
#include "kernels/runtime.h"
#include "kernels/optim.h"
#include "models/optim.h"

namespace nmperm {
namespace {

using test::all_close;
using test::randn64;

// The profile charges each launcher to its family, an op inside a Region to the region's
// family, and nothing while it is off.
TEST(Profile, ChargesLaunchersToTheirFamiliesAndRegionsToTheirOwn) {
  Generator gen(1);
  Tensor a = randn({256, 256}, gen), w = ones({256}), b = zeros({256});
  auto run = [&] {
    Tensor c = matmul(a, a);
    Tensor y = layer_norm(c, w, b, 1e-5);
    return sum(y).item();
  };
  profile::reset();
  run();
  for (double t : profile::totals()) EXPECT_EQ(t, 0.0);
  {
    profile::Enabled on;
    run();
  }
  auto t = profile::totals();
  auto at = [&](profile::Family f) { return t[size_t(f)]; };
  EXPECT_GT(at(profile::Family::Matmul), 0.0);
  EXPECT_GT(at(profile::Family::Norm), 0.0);
  EXPECT_GT(at(profile::Family::Allocation), 0.0);
  EXPECT_GT(at(profile::Family::Reduce), 0.0);
  EXPECT_EQ(at(profile::Family::Optimizer), 0.0);
  EXPECT_EQ(at(profile::Family::Sinkhorn), 0.0);

  profile::reset();
  {
    profile::Enabled on;
    profile::Region opt(profile::Family::Optimizer);
    run();
  }
  t = profile::totals();
  EXPECT_GT(at(profile::Family::Optimizer), 0.0);
  EXPECT_EQ(at(profile::Family::Matmul), 0.0);
  EXPECT_EQ(at(profile::Family::Norm), 0.0);
  EXPECT_FALSE(profile::enabled());
  EXPECT_STREQ(profile::family_name(profile::family_of("layer_norm_backward")), "norms");
  EXPECT_STREQ(profile::family_name(profile::family_of("gelu")), "elementwise");
}

Tensor naive_matmul(const Tensor& a, const Tensor& b) {  // 2-d
  int64_t M = a.shape(0), K = a.shape(1), N = b.shape(1);
  auto av = a.to_vector<double>(), bv = b.to_vector<double>();
  std::vector<double> c(size_t(M * N), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < N; ++j) c[size_t(i * N + j)] += av[size_t(i * K + k)] * bv[size_t(k * N + j)];
  return from_vector(c, {M, N});
}

TEST(Kernels, MatmulEveryLayoutAndOddSizes) {
  for (int64_t M : {1, 7, 33})
    for (int64_t K : {1, 7, 33})
      for (int64_t N : {1, 5, 33}) {
        Tensor a = randn64({M, K}, 1), b = randn64({K, N}, 2), ref = naive_matmul(a, b);
        Tensor at = transpose(contiguous(transpose(a, 0, 1)), 0, 1);  // column-major storage
        Tensor bt = transpose(contiguous(transpose(b, 0, 1)), 0, 1);
        EXPECT_TRUE(all_close(matmul(a, b), ref, 1e-12, 1e-10)) << M << "x" << K << "x" << N;
        EXPECT_TRUE(all_close(matmul(at, bt), ref, 1e-12, 1e-10)) << "transposed " << M << "x" << K << "x" << N;
        EXPECT_TRUE(all_close(matmul(a.to(DType::F32), bt.to(DType::F32)), ref, 1e-4, 1e-4));
      }
  // f32 with 1024 and more output columns: a row-major B goes to OpenBLAS, a transposed
  // one to oneDNN (kernels/cpu/matmul.cpp); both against the f64 product.
  Tensor a = randn64({3, 5}, 1), b = randn64({5, 1030}, 2), ref = naive_matmul(a, b);
  Tensor bt = transpose(contiguous(transpose(b, 0, 1)), 0, 1);
  EXPECT_TRUE(all_close(matmul(a.to(DType::F32), b.to(DType::F32)), ref, 1e-4, 1e-4)) << "wide, B row-major";
  EXPECT_TRUE(all_close(matmul(a.to(DType::F32), bt.to(DType::F32)), ref, 1e-4, 1e-4)) << "wide, B transposed";
}

TEST(Kernels, BatchedMatmulMatchesPerBatch) {
  Tensor a = randn64({3, 4, 7, 5}, 3), b = randn64({4, 5, 6}, 4);
  Tensor c = matmul(a, b);
  ASSERT_EQ(c.shape(), Shape({3, 4, 7, 6}));
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 4; ++j) {
      Tensor ai = reshape(narrow(narrow(a, 0, i, 1), 1, j, 1), {7, 5}), bj = reshape(narrow(b, 0, j, 1), {5, 6});
      EXPECT_TRUE(all_close(reshape(narrow(narrow(c, 0, i, 1), 1, j, 1), {7, 6}), naive_matmul(ai, bj), 1e-12, 1e-10));
    }
}

// A bias added in the product equals the product plus the bias, on every path of the CPU
// matmul: oneDNN (f32, bf16 operands), OpenBLAS (f64, f32 with a row-major B of 1024 and
// more columns), the batch folded into M, one call per batch, the small batched products,
// and an empty inner dimension.
TEST(Kernels, MatmulAddsABiasOnEveryPath) {
  struct Case { const char* name; int64_t batch, M, K, N; bool shared_b; };
  for (DType in : {DType::F32, DType::F64, DType::BF16})
    for (const Case& k : {Case{"one", 1, 37, 19, 23, false}, Case{"folded", 3, 8, 16, 24, true},
                          Case{"per batch, large", 2, 128, 128, 160, false}, Case{"per batch, small", 4, 5, 6, 7, false},
                          Case{"wide", 1, 9, 8, 1030, false}, Case{"wide, folded", 2, 5, 8, 1030, true},
                          Case{"empty inner", 2, 3, 0, 5, false}}) {
      const DType out = in == DType::BF16 ? DType::F32 : in;
      Tensor a = randn64({k.batch, k.M, k.K}, 1).to(in);
      Tensor b = k.shared_b ? view::expand(randn64({1, k.K, k.N}, 2).to(in), {k.batch, k.K, k.N})
                            : randn64({k.batch, k.K, k.N}, 2).to(in);
      Tensor bias = randn64({k.N}, 3).to(out);
      Tensor c = Tensor::empty({k.batch, k.M, k.N}, out), plain = Tensor::empty({k.batch, k.M, k.N}, out);
      kernels::matmul(a, b, c, 1.0, 0.0, bias);
      kernels::matmul(a, b, plain);
      Tensor want = add(plain.to(DType::F64), bias.to(DType::F64));
      const double tol = out == DType::F64 ? 1e-12 : 1e-5;
      EXPECT_TRUE(all_close(c.to(DType::F64), want, tol, tol)) << dtype_name(in) << " " << k.name;
    }
  Tensor a = Tensor::empty({1, 2, 3}), b = Tensor::empty({1, 3, 4}), c = Tensor::empty({1, 2, 4});
  EXPECT_THROW_MSG(kernels::matmul(a, b, c, 1.0, 1.0, zeros({4})), "bias");
  EXPECT_THROW_MSG(kernels::matmul(a, b, c, 1.0, 0.0, zeros({3})), "bias");
}

TEST(Kernels, TopkSortsAndBreaksTiesByIndex) {
  Tensor x = from_vector<double>({3, 1, 3, 2, 5, 5}, {1, 6});
  auto [v, i] = topk(x, 4);
  EXPECT_EQ(v.to_vector<double>(), (std::vector<double>{5, 5, 3, 3}));
  EXPECT_EQ(i.to_vector<int64_t>(), (std::vector<int64_t>{4, 5, 0, 2}));
  auto [vs, is] = topk(x, 2, false);
  EXPECT_EQ(is.to_vector<int64_t>(), (std::vector<int64_t>{1, 3}));
  EXPECT_THROW_MSG(topk(x, 7), "k = 7 must lie in [0, 6]");
}

TEST(Kernels, ArgmaxAndReductionsOverSeveralDims) {
  Tensor x = reshape(arange(0, 24, 1, DType::F64), {2, 3, 4});
  EXPECT_EQ(argmax(x, 1).to_vector<int64_t>(), std::vector<int64_t>(8, 2));
  EXPECT_EQ(sum(x, {0, 2}).to_vector<double>(), (std::vector<double>{60, 92, 124}));
  EXPECT_EQ(sum(x, {0, 2}, true).shape(), Shape({1, 3, 1}));
  EXPECT_DOUBLE_EQ(max(x).item(), 23);
  EXPECT_NEAR(logsumexp(x).item(), 23 + std::log(1 / (1 - std::exp(-1.0))), 1e-6);
}

TEST(Kernels, AdamWFollowsItsFormula) {
  Tensor p = from_vector<double>({1.0, -2.0}, {2}).set_requires_grad();
  kernels::AdamWParams hp{.lr = 0.1, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.5};
  AdamW opt({p}, hp);
  std::vector<double> pv{1.0, -2.0}, m(2, 0), v(2, 0);
  for (int step = 1; step <= 3; ++step) {
    p.set_grad(from_vector<double>({0.3 * step, -0.1}, {2}));
    opt.step();
    std::vector<double> g{0.3 * step, -0.1};
    for (int i = 0; i < 2; ++i) {
      pv[size_t(i)] *= 1 - hp.lr * hp.weight_decay;
      m[size_t(i)] = 0.9 * m[size_t(i)] + 0.1 * g[size_t(i)];
      v[size_t(i)] = 0.99 * v[size_t(i)] + 0.01 * g[size_t(i)] * g[size_t(i)];
      double mh = m[size_t(i)] / (1 - std::pow(0.9, step)), vh = v[size_t(i)] / (1 - std::pow(0.99, step));
      pv[size_t(i)] -= hp.lr * mh / (std::sqrt(vh) + hp.eps);
    }
  }
  EXPECT_TRUE(all_close(p.detach(), from_vector(pv, {2}), 1e-12, 1e-10));
}

// The optimizer updates all parameters in one fused pass over flat moment buffers: the
// result equals the one-parameter kernel run on each, bit for bit, with per-parameter
// decay, a parameter without gradient (untouched), a transposed gradient and a parameter
// spanning several chunks; the moments are views of one buffer.
TEST(Kernels, FusedAdamWEqualsOneParameterAtATime) {
  Generator gen(12);
  std::vector<Shape> shapes{{1}, {7}, {33, 3}, {1000}, {150, 250}};
  std::vector<Tensor> params, refs, rm, rv;
  for (const Shape& s : shapes) {
    params.push_back(randn(s, gen).set_requires_grad());
    refs.push_back(params.back().detach().clone());
    rm.push_back(zeros(s));
    rv.push_back(zeros(s));
  }
  kernels::AdamWParams hp{.lr = 0.05, .weight_decay = 0.1};
  AdamW opt(params, hp);
  opt.decay[1] = 0.0;
  EXPECT_EQ(opt.m[0].storage(), opt.m[4].storage());
  for (int64_t step = 1; step <= 3; ++step) {
    opt.zero_grad();
    for (size_t i = 0; i < params.size(); ++i) {
      if (i == 2) continue;  // no gradient: skipped
      Tensor g = i == 4 ? transpose(randn({250, 150}, gen), 0, 1) : randn(shapes[i], gen);
      params[i].set_grad(g);
      kernels::AdamWParams h = hp;
      h.weight_decay = opt.decay[i];
      kernels::adamw(refs[i], g, rm[i], rv[i], h, step);
    }
    opt.step();
  }
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(params[i].detach().to_vector<float>(), refs[i].to_vector<float>()) << "param " << i;
    EXPECT_EQ(opt.m[i].to_vector<float>(), rm[i].to_vector<float>()) << "m " << i;
    EXPECT_EQ(opt.v[i].to_vector<float>(), rv[i].to_vector<float>()) << "v " << i;
  }
  EXPECT_EQ(opt.m[2].to_vector<float>(), std::vector<float>(99, 0.0f));
  std::vector<Tensor> grads;
  double by_hand = 0;
  for (size_t i : {0, 1, 3, 4}) {
    grads.push_back(params[i].grad());
    by_hand += kernels::sum_squares(params[i].grad());
  }
  EXPECT_NEAR(kernels::sum_squares(grads), by_hand, 1e-12 * by_hand);
  Tensor small = zeros({3}), wrong = zeros({4});
  EXPECT_THROW_MSG(kernels::adamw({{small, small, 2, 0.0}}, wrong, wrong, hp, 1), "fall outside the flat buffer");
  EXPECT_THROW_MSG(kernels::adamw({{small, wrong, 0, 0.0}}, wrong, wrong, hp, 1), "must match");
}

// Clipping inside the step (opt.step(clip_scale(norm, max))) gives the bits of scaling the
// gradients first (clip_grad_norm, then step()), at steps that clip and steps that do not,
// and leaves the gradients as they were.
TEST(Kernels, ClippingInsideTheStepHasTheBitsOfClipThenStep) {
  Generator gen(13);
  std::vector<Tensor> fused, apart;
  for (const Shape& s : {Shape{7}, Shape{150, 250}}) {
    fused.push_back(randn(s, gen).set_requires_grad());
    apart.push_back(fused.back().detach().clone().set_requires_grad());
  }
  kernels::AdamWParams hp{.lr = 0.05, .weight_decay = 0.1};
  AdamW opt_fused(fused, hp), opt_apart(apart, hp);
  for (double max_norm : {1.0, 1e9, 3.0}) {
    for (size_t i = 0; i < fused.size(); ++i) {
      Tensor g = randn(fused[i].shape(), gen);
      fused[i].set_grad(g.clone());
      apart[i].set_grad(g.clone());
    }
    std::vector<float> g_before = fused[1].grad().to_vector<float>();
    double norm = grad_norm(fused);
    EXPECT_EQ(clip_scale(norm, max_norm) == 1.0, norm <= max_norm);
    opt_fused.step(clip_scale(norm, max_norm));
    EXPECT_EQ(clip_grad_norm(apart, max_norm), norm);
    opt_apart.step();
    EXPECT_EQ(fused[1].grad().to_vector<float>(), g_before) << "the gradient is read, not rewritten";
    for (size_t i = 0; i < fused.size(); ++i) {
      EXPECT_EQ(fused[i].detach().to_vector<float>(), apart[i].detach().to_vector<float>()) << "max " << max_norm;
      EXPECT_EQ(opt_fused.v[i].to_vector<float>(), opt_apart.v[i].to_vector<float>()) << "max " << max_norm;
    }
  }
  EXPECT_THROW_MSG(clip_scale(NAN, 1.0), "NaN/Inf");
}

TEST(Kernels, ClipGradNormScalesToTheLimit) {
  Tensor a = zeros({2}, DType::F64).set_requires_grad(), b = zeros({1}, DType::F64).set_requires_grad();
  a.set_grad(from_vector<double>({3, 0}, {2}));
  b.set_grad(from_vector<double>({4}, {1}));
  EXPECT_DOUBLE_EQ(clip_grad_norm({a, b}, 1.0), 5.0);
  EXPECT_NEAR(grad_norm({a, b}), 1.0, 1e-6);
  EXPECT_NEAR(b.grad().item(), 0.8, 1e-6);
  b.set_grad(from_vector<double>({NAN}, {1}));
  EXPECT_THROW_MSG(clip_grad_norm({a, b}, 1.0), "NaN/Inf");
}

// Every reduction that crosses rows (norm weight gradients, squared norms, column sums) gives
// bitwise the same result at 1 and at 2 threads. Matmuls large enough for the BLAS to split
// across threads (f32 through OpenBLAS, bf16 through oneDNN) do not: at 384 x 512 x 320 the
// two counts differ by about 5e-7 of the largest output, so they are compared to rounding.
// Whole training runs and prunes of the tiny models are compared in test_prune.cpp.
TEST(Kernels, ResultsDoNotDependOnThreadCount) {
  auto run = [] {
    Generator g(5);
    Tensor x = randn({64, 300}, g).set_requires_grad(), w = randn({300}, g).set_requires_grad();
    Tensor r = randn({300}, g).set_requires_grad(), b = randn({300}, g).set_requires_grad();
    Tensor a = randn({384, 512}, g), m = randn({512, 320}, g), wt = randn({320, 512}, g);
    Tensor y = sum(mul(layer_norm(x, w, Tensor()), softmax(x, 0)));
    y = add(y, sum(mul(rms_norm(x, r), softmax(x, 1))));
    y = add(y, sum(mul(sum(add(x, b), {0}), sum(x, {0}))));  // column sums, forward and backward
    backward(y);
    std::vector<std::vector<float>> out = {{float(y.item())}, w.grad().to_vector<float>(), r.grad().to_vector<float>(),
                                           b.grad().to_vector<float>(), x.grad().to_vector<float>(),
                                           matmul(a, m).to_vector<float>(),
                                           linear(a, wt.to(DType::BF16)).to_vector<float>()};
    out.push_back({float(kernels::sum_squares(std::vector<Tensor>{x.grad(), a, m}))});
    return out;
  };
  auto one = test::at_threads(1, run), two = test::at_threads(2, run);
  ASSERT_EQ(one.size(), two.size());
  for (size_t i = 0; i < one.size(); ++i) {
    if (i == 5 || i == 6) {  // the matmuls (outputs up to ~100): the same to rounding, not bitwise
      Shape s{int64_t(one[i].size())};
      EXPECT_TRUE(test::all_close(from_vector(one[i], s), from_vector(two[i], s), 1e-3, 0)) << "result " << i;
    } else {
      EXPECT_TRUE(one[i] == two[i]) << "result " << i;
    }
  }
}

// On AVX-512 CPUs float exp and erf run 16 lanes at a time (kernels/cpu/vmath.h); every
// lane computes the same operations as in 8 lanes and the sums are added in the 8-lane
// order, so every op that uses them gives the same bits in both widths (NaN stays NaN, its
// sign bit may differ, as it may between lanes and scalar tails). On any CPU: the 16-lane
// formulas (compiled here for the baseline) against the 8-lane ones. On AVX-512 CPUs also
// the kernels as they run: each elementwise op and its gradient (lengths with 16-, 8-lane
// and scalar tails, special values at every position mod 16), softmax, log_softmax, cross
// entropy and attention.
TEST(Kernels, SixteenLanesGiveTheBitsOfEight) {
  auto same = [](float a, float b) {
    return (std::isnan(a) && std::isnan(b)) || std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b);
  };
  {
    Generator g(2);
    std::vector<float> v = mul(randn({1024}, g), 40.0).to_vector<float>();
    const float special[] = {NAN, INFINITY, -INFINITY, 88.5f, -87.5f, 89.0f, -104.0f, 1e-30f, -0.0f, 0.0f};
    for (size_t i = 0; i < std::size(special); ++i) v[i * 17] = special[i];
    for (size_t i = 0; i < v.size(); i += 16) {
      kernels::f32x16 x16;
      kernels::f32x8 lo, hi;
      std::memcpy(&x16, &v[i], sizeof x16);
      std::memcpy(&lo, &v[i], sizeof lo);
      std::memcpy(&hi, &v[i + 8], sizeof hi);
      kernels::f32x16 e16 = kernels::exp_v(x16), r16 = kernels::erf_v(x16);
      kernels::f32x8 e[2] = {kernels::exp_v(lo), kernels::exp_v(hi)}, r[2] = {kernels::erf_v(lo), kernels::erf_v(hi)};
      for (int k = 0; k < 16; ++k) {
        ASSERT_TRUE(same(e16[k], e[k / 8][k % 8])) << "exp(" << v[i + size_t(k)] << "): " << e16[k] << " in 16 lanes";
        ASSERT_TRUE(same(r16[k], r[k / 8][k % 8])) << "erf(" << v[i + size_t(k)] << "): " << r16[k] << " in 16 lanes";
      }
    }
  }
  kernels::set_wide_lanes(true);
  if (!kernels::wide_lanes()) return;  // no AVX-512: the kernels run 8 lanes only, checked above and everywhere
  struct Restore {
    ~Restore() { kernels::set_wide_lanes(true); }
  } restore;
  auto run = [](bool wide) {
    kernels::set_wide_lanes(wide);
    std::vector<std::vector<float>> out;
    Generator g(3);
    for (int64_t n : {int64_t(16 * 37 + 13), int64_t(7), int64_t(24), int64_t(70000)}) {
      Tensor x = mul(randn({n}, g), 6.0);
      const float special[] = {NAN, INFINITY, -INFINITY, 88.5f, -87.5f, 89.0f, -104.0f, 1e-30f, -0.0f, 0.0f, 30.0f, -30.0f};
      for (int64_t i = 0; i < n; i += 5) x.data<float>()[i] = special[size_t(i / 5) % std::size(special)];
      Tensor pos = add(abs(x), 0.5), dy = randn({n}, g);
      for (int op = 0; op < int(std::size(kernels::kUnaryNames)); ++op) {
        auto u = kernels::UnaryOp(op);
        Tensor in = (u == kernels::UnaryOp::Log || u == kernels::UnaryOp::Sqrt || u == kernels::UnaryOp::Rsqrt ||
                     u == kernels::UnaryOp::Pow)
                        ? pos
                        : x;
        Tensor y = Tensor::empty({n}), dx = Tensor::empty({n});
        kernels::unary(u, in, y, 1.5);
        kernels::unary_backward(u, in, y, dy, dx, 1.5);
        out.push_back(y.to_vector<float>());
        out.push_back(dx.to_vector<float>());
      }
    }
    Tensor s = mul(randn({64, 300}, g), 5.0);
    std::vector<int64_t> targets(64);
    for (int64_t i = 0; i < 64; ++i) targets[size_t(i)] = (i * 37) % 300;
    Tensor t = from_vector<int64_t>(targets, {64});
    out.push_back(softmax(s, 1).to_vector<float>());
    out.push_back(log_softmax(s, 1).to_vector<float>());
    Tensor sg = s.detach().set_requires_grad();
    Tensor l = cross_entropy(sg, t);
    backward(l);
    out.push_back({float(l.item())});
    out.push_back(sg.grad().to_vector<float>());
    Tensor q = randn({2, 4, 37, 16}, g), k = randn({2, 2, 37, 16}, g), v = randn({2, 2, 37, 16}, g);
    out.push_back(scaled_dot_product_attention(q, k, v, true).to_vector<float>());
    return out;
  };
  auto eight = run(false), sixteen = run(true);
  ASSERT_EQ(eight.size(), sixteen.size());
  for (size_t i = 0; i < eight.size(); ++i) {
    ASSERT_EQ(eight[i].size(), sixteen[i].size());
    for (size_t j = 0; j < eight[i].size(); ++j)
      ASSERT_TRUE(same(eight[i][j], sixteen[i][j]))
          << "result " << i << " element " << j << ": " << eight[i][j] << " in 8 lanes, " << sixteen[i][j] << " in 16";
  }
}

// f32 softmax over rows shorter than a vector (the learned method's soft mask, groups of
// M = 4) runs chunks of rows as one vector run: every length 1-7, over several chunks,
// with masked entries, against the f64 softmax, and the same bits at 1 and 2 threads.
TEST(Kernels, SoftmaxOfShortRowsMatchesFloat64AtAnyThreadCount) {
  for (int64_t K = 1; K < 8; ++K) {
    Generator g(static_cast<uint64_t>(K));
    Tensor x = mul(randn({1100, K}, g), 4.0);
    if (K > 1) x.data<float>()[5 * K] = -INFINITY;  // one masked entry: exactly 0 out
    auto run = [&] { return softmax(x, 1).to_vector<float>(); };
    std::vector<float> one = test::at_threads(1, run), two = test::at_threads(2, run);
    EXPECT_EQ(one, two) << K;
    Tensor want = softmax(x.to(DType::F64), 1);
    EXPECT_TRUE(all_close(from_vector(one, {1100, K}).to(DType::F64), want, 1e-7, 1e-6)) << K;
    if (K > 1) {
      EXPECT_EQ(one[size_t(5 * K)], 0.0f) << K;
    }
  }
}

TEST(Kernels, IndexErrorsNameTheBadIndex) {
  Tensor w = zeros({5, 3});
  EXPECT_THROW_MSG(embedding(w, from_vector<int64_t>({0, 5}, {2})), "index 5 out of range [0, 5)");
  EXPECT_THROW_MSG(cross_entropy(zeros({2, 3}), from_vector<int64_t>({0, 3}, {2})), "target 3 at row 1");
  EXPECT_THROW_MSG(index_select(w, 0, zeros({2})), "indices must be i32 or i64");
}

}  // namespace
}  // namespace nmperm

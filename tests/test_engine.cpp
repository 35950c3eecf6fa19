// The autograd engine's contract: fan-in sums, broadcast gradients reduce to the input
// shape, gradients accumulate until zeroed, no_grad records nothing, a freed graph
// refuses a second backward, seeds for non-scalar roots.
#include "helpers.h"

namespace nmperm {
namespace {

using test::all_close;

Tensor vec(std::vector<double> v) { return from_vector(v, {int64_t(v.size())}); }

TEST(Engine, FanInSumsGradients) {
  Tensor x = vec({1, 2, 3}).set_requires_grad();
  Tensor y = add(mul(x, x), mul(x, 3.0));  // dy/dx = 2x + 3
  backward(sum(y));
  EXPECT_TRUE(all_close(x.grad(), vec({5, 7, 9}), 0, 1e-12));
}

TEST(Engine, DiamondGraphVisitsEachNodeOnce) {
  Tensor x = vec({0.5, -1}).set_requires_grad();
  Tensor a = exp(x);
  Tensor y = add(mul(a, a), a);  // d/dx = 2 e^{2x} + e^x
  backward(sum(y));
  auto g = x.grad().to_vector<double>();
  EXPECT_NEAR(g[0], 2 * std::exp(1.0) + std::exp(0.5), 1e-12);
  EXPECT_NEAR(g[1], 2 * std::exp(-2.0) + std::exp(-1.0), 1e-12);
}

TEST(Engine, BroadcastGradientReducesToInputShape) {
  Tensor a = ones({3, 4}, DType::F64).set_requires_grad();
  Tensor b = full({4}, 2.0, DType::F64).set_requires_grad();
  Tensor c = full({3, 1}, 5.0, DType::F64).set_requires_grad();
  backward(sum(mul(add(a, b), c)));
  EXPECT_EQ(b.grad().shape(), Shape({4}));
  EXPECT_EQ(c.grad().shape(), Shape({3, 1}));
  EXPECT_TRUE(all_close(b.grad(), full({4}, 15.0, DType::F64), 0, 1e-12));  // sum over 3 rows of c = 5
  EXPECT_TRUE(all_close(c.grad(), full({3, 1}, 12.0, DType::F64), 0, 1e-12));  // 4 columns of (a + b) = 3
}

TEST(Engine, GradientsAccumulateUntilZeroed) {
  Tensor x = vec({1, 2}).set_requires_grad();
  backward(sum(mul(x, 2.0)));
  backward(sum(mul(x, 3.0)));
  EXPECT_TRUE(all_close(x.grad(), vec({5, 5}), 0, 1e-12));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
  backward(sum(x));
  EXPECT_TRUE(all_close(x.grad(), vec({1, 1}), 0, 1e-12));
}

TEST(Engine, NoGradRecordsNothing) {
  Tensor x = vec({1, 2}).set_requires_grad();
  Tensor y;
  {
    NoGradGuard ng;
    y = mul(x, x);
    EXPECT_FALSE(GradMode::enabled());
  }
  EXPECT_TRUE(GradMode::enabled());
  EXPECT_FALSE(y.requires_grad());
  EXPECT_THROW_MSG(backward(sum(y)), "does not require grad");
}

TEST(Engine, DetachCutsTheGraph) {
  Tensor x = vec({1, 2}).set_requires_grad();
  Tensor y = add(mul(x, x), mul(x, x).detach());
  backward(sum(y));
  EXPECT_TRUE(all_close(x.grad(), vec({2, 4}), 0, 1e-12));
  EXPECT_TRUE(x.detach().same_data(x));
  EXPECT_FALSE(x.detach().requires_grad());
}

TEST(Engine, FreedGraphRefusesSecondBackward) {
  Tensor x = vec({1, 2}).set_requires_grad();
  Tensor y = sum(exp(x));
  backward(y);
  EXPECT_THROW_MSG(backward(y), "retain_graph");
}

TEST(Engine, RetainGraphAllowsSecondBackward) {
  Tensor x = vec({1, 2}).set_requires_grad();
  Tensor y = sum(mul(x, x));
  backward(y, Tensor(), true);
  backward(y);
  EXPECT_TRUE(all_close(x.grad(), vec({4, 8}), 0, 1e-12));
}

TEST(Engine, NonScalarRootNeedsASeed) {
  Tensor x = vec({1, 2, 3}).set_requires_grad();
  Tensor y = mul(x, 2.0);
  EXPECT_THROW_MSG(backward(y), "seed");
  backward(y, vec({1, 0, -1}));
  EXPECT_TRUE(all_close(x.grad(), vec({2, 0, -2}), 0, 1e-12));
  EXPECT_THROW_MSG(backward(mul(x, 2.0), vec({1, 2})), "does not match");
}

TEST(Engine, LeafRootGetsTheSeed) {
  Tensor x = vec({3}).set_requires_grad();
  backward(x);
  EXPECT_TRUE(all_close(x.grad(), vec({1}), 0, 0));
}

TEST(Engine, SharedGradientTensorsDoNotAlias) {
  // add() hands the same gradient to both leaves; clipping one must not touch the other.
  Tensor a = vec({1}).set_requires_grad(), b = vec({1}).set_requires_grad();
  backward(sum(add(a, b)));
  EXPECT_FALSE(a.grad().same_data(b.grad()));
}

TEST(Engine, IntegerInputsAndComparisonsCarryNoGradient) {
  Tensor x = vec({1, 2}).set_requires_grad();
  EXPECT_FALSE(gt(x, vec({0, 5})).requires_grad());
  EXPECT_FALSE(argmax(x, 0).requires_grad());
  EXPECT_THROW_MSG(arange(0, 3).set_requires_grad(), "only floating tensors");
}

TEST(Engine, CastIsDifferentiable) {
  Tensor x = vec({1, 2}).set_requires_grad();
  Tensor y = cast(x, DType::F32);
  EXPECT_EQ(y.dtype(), DType::F32);
  backward(sum(mul(y, 3.0)));
  EXPECT_EQ(x.grad().dtype(), DType::F64);
  EXPECT_TRUE(all_close(x.grad(), vec({3, 3}), 0, 1e-7));
}

TEST(Engine, TrainsATinyRegression) {
  // y = 2x - 1 learned by gradient descent through the engine.
  Tensor xs = vec({-1, 0, 1, 2}), ys = vec({-3, -1, 1, 3});
  Tensor w = vec({0}).set_requires_grad(), b = vec({0}).set_requires_grad();
  for (int i = 0; i < 300; ++i) {
    Tensor loss = mean(square(sub(add(mul(xs, w), b), ys)));
    w.zero_grad();
    b.zero_grad();
    backward(loss);
    NoGradGuard ng;
    w.copy_from(sub(w, mul(w.grad(), 0.1)));
    b.copy_from(sub(b, mul(b.grad(), 0.1)));
  }
  EXPECT_NEAR(w.item(), 2.0, 1e-4);
  EXPECT_NEAR(b.item(), -1.0, 1e-4);
}

}  // namespace
}  // namespace nmperm

// Every differentiable op of tests/op_table.h gradchecked in f64, and fed hostile inputs.
#include <functional>

#include "autograd/gradcheck.h"
#include "kernels/elementwise.h"
#include "helpers.h"
#include "op_table.h"

namespace nmperm {
namespace {

using test::randn64;
using namespace test;  // the op table

class OpGrad : public ::testing::TestWithParam<OpCase> {};

TEST_P(OpGrad, MatchesCentralDifferences) {
  const OpCase& c = GetParam();
  std::vector<Tensor> xs;
  for (size_t i = 0; i < c.inputs.size(); ++i) xs.push_back(make(c.inputs[i], 1000 + i));
  GradcheckResult r = gradcheck(c.fn, xs);
  EXPECT_TRUE(r.ok) << c.name << ": " << r.message;
  EXPECT_GT(r.checked, 0);
}

INSTANTIATE_TEST_SUITE_P(AllOps, OpGrad, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

// A new unary op cannot skip the gradient check, nor the CUDA parity tests that run the
// same table: its name (or its name and a suffix that is not another op's name) must be
// in the table.
TEST(OpTable, HasAnEntryForEveryUnaryOp) {
  using namespace kernels;
  auto is_op_name = [](const std::string& s) {
    for (int i = 0; i < kUnaryOpCount; ++i)
      if (s == unary_name(UnaryOp(i))) return true;
    return false;
  };
  std::vector<OpCase> table = cases();
  for (int i = 0; i < kUnaryOpCount; ++i) {
    std::string name = unary_name(UnaryOp(i));
    bool found = false;
    for (const OpCase& c : table)
      found |= c.name == name || (c.name.rfind(name + "_", 0) == 0 && !is_op_name(c.name));
    EXPECT_TRUE(found) << name << " has no entry in tests/op_table.h";
  }
}

// gradcheck itself must catch a wrong backward, and say where.
struct WrongNode : Node {
  const char* name() const override { return "wrong"; }
  std::vector<Tensor> backward(const Tensor& g) override { return {mul(g, 2.5)}; }  // true derivative: 3
};
TEST(Gradcheck, ReportsAWrongGradient) {
  auto fn = [](V x) {
    Tensor y;
    {
      NoGradGuard ng;
      y = mul(x[0], 3.0);
    }
    attach(y, std::make_shared<WrongNode>(), {&x[0]});
    return y;
  };
  GradcheckResult r = gradcheck(fn, {randn64({4, 3}, 1).set_requires_grad()});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.input, 0);
  EXPECT_EQ(r.index.size(), 2u);
  EXPECT_NE(r.message.find("analytic"), std::string::npos);
  EXPECT_NE(r.message.find("numeric"), std::string::npos);
}

TEST(Gradcheck, ChecksASeededSubsetAboveTheLimit) {
  GradcheckOptions opt;
  opt.max_elements = 50;
  GradcheckResult r = gradcheck([](V x) { return tanh(x[0]); }, {randn64({40, 40}, 2).set_requires_grad()}, opt);
  EXPECT_TRUE(r.ok) << r.message;
  EXPECT_EQ(r.checked, 50);
}

TEST(Gradcheck, RefusesFloat32Inputs) {
  Generator g(0);
  Tensor x = randn({3}, g).set_requires_grad();
  EXPECT_THROW_MSG(gradcheck([](V v) { return exp(v[0]); }, {x}), "must be f64");
}

}  // namespace
}  // namespace nmperm

namespace nmperm {
namespace {

// The same table fed hostile inputs: each input in turn gets the wrong dtype, the wrong
// rank, a mismatched or empty shape, or (for index inputs) ids out of range. Every call
// (and its backward) must either work or throw nmperm::Error; a crash, another exception
// type or, under the sanitizers, an out-of-bounds access fails the test.
std::vector<std::pair<std::string, In>> mutations(const In& in) {
  std::vector<std::pair<std::string, In>> out;
  Shape s = in.shape;
  auto with = [&](std::string what, Shape shape, Kind kind, int64_t high) {
    out.push_back({std::move(what), In{kind, std::move(shape), high}});
  };
  with("scalar", {}, in.kind, in.high);
  if (!s.empty()) {
    Shape longer = s, empty = s;
    longer.back() += 1;
    empty.front() = 0;
    with("last dim + 1", longer, in.kind, in.high);
    with("empty", empty, in.kind, in.high);
  }
  Shape extra = s;
  extra.insert(extra.begin(), 2);
  with("extra leading dim", extra, in.kind, in.high);
  if (in.kind == Kind::Index) {
    with("ids past the end", s, Kind::Index, in.high + 1000);
    with("float ids", s, Kind::Normal, 0);
  } else {
    with("integer values", s, Kind::Index, 3);
  }
  return out;
}

Tensor make_hostile(const In& in, uint64_t seed, bool f32) {
  Tensor t = make(in, seed);
  if (in.kind == Kind::Index && in.high > 0 && t.numel() > 0) t.data<int64_t>()[0] = -1;  // a negative id too
  if (f32 && is_floating(t.dtype())) t = t.detach().to(DType::F32).set_requires_grad(t.requires_grad());
  return t;
}

class OpHostile : public ::testing::TestWithParam<OpCase> {};

TEST_P(OpHostile, BadInputsGiveErrorsNotCrashes) {
  const OpCase& c = GetParam();
  auto attempt = [&](const std::vector<Tensor>& xs, const std::string& what) {
    try {
      Tensor y = c.fn(xs);
      if (y.requires_grad()) backward(sum(y));
    } catch (const Error&) {
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.name << " with " << what << ": escaped as " << typeid(e).name() << ": " << e.what();
    }
  };
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    auto base = [&](bool f32_at_i) {
      std::vector<Tensor> xs;
      for (size_t j = 0; j < c.inputs.size(); ++j) xs.push_back(make_hostile(c.inputs[j], 1000 + j, f32_at_i && j == i));
      return xs;
    };
    if (c.inputs.size() > 1) attempt(base(true), fmt::format("input {} in f32, the rest f64", i));
    for (auto& [what, in] : mutations(c.inputs[i])) {
      std::vector<Tensor> xs = base(false);
      xs[i] = make_hostile(in, 77, false);
      attempt(xs, fmt::format("input {}: {}", i, what));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllOps, OpHostile, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

// Out-of-range ids must be refused, never read past the table.
TEST(OpHostile, OutOfRangeIdsAreRefusedByName) {
  Tensor table = randn64({5, 3}, 1);
  EXPECT_THROW_MSG(embedding(table, from_vector<int64_t>({0, 5}, {2})), "5");
  EXPECT_THROW_MSG(embedding(table, from_vector<int64_t>({-1}, {1})), "-1");
  EXPECT_THROW_MSG(index_select(table, 0, from_vector<int64_t>({7}, {1})), "7");
  EXPECT_THROW_MSG(cross_entropy(table, from_vector<int64_t>({0, 1, 2, 2, 9}, {5})), "target 9");
}

}  // namespace
}  // namespace nmperm

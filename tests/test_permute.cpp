// Assignment solver optimality (brute force for n <= 8, SciPy fixtures for ties and
// adversarial costs), N:M masks and importance scores.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/safetensors.h"
#include "helpers.h"
#include "permute/assignment.h"
#include "permute/nm.h"

namespace nmperm {
namespace {

double brute_force(const std::vector<double>& c, int64_t n, bool maximize) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), 0);
  double best = maximize ? -INFINITY : INFINITY;
  do {
    double s = assignment_cost(c.data(), n, p);
    best = maximize ? std::max(best, s) : std::min(best, s);
  } while (std::next_permutation(p.begin(), p.end()));
  return best;
}

bool is_permutation(const std::vector<int64_t>& p) {
  std::vector<int64_t> s = p;
  std::sort(s.begin(), s.end());
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] != int64_t(i)) return false;
  return true;
}

TEST(Assignment, OptimalAgainstBruteForce) {
  Generator g(1);
  for (int64_t n = 1; n <= 8; ++n)
    for (int trial = 0; trial < 6; ++trial) {
      std::vector<double> c(size_t(n * n));
      for (auto& x : c) x = trial % 2 ? double(g.randint(4)) : g.uniform() * 10 - 5;  // odd trials: many ties
      for (bool maximize : {false, true}) {
        auto p = linear_assignment(c.data(), n, maximize);
        ASSERT_TRUE(is_permutation(p));
        EXPECT_NEAR(assignment_cost(c.data(), n, p), brute_force(c, n, maximize), 1e-9)
            << "n " << n << " trial " << trial << (maximize ? " max" : " min");
      }
    }
}

TEST(Assignment, MatchesScipyOnRandomTiedAndAdversarialCosts) {
  SafeTensors ref = load_safetensors(std::string(NMPERM_FIXTURES) + "/assignment_reference.safetensors");
  int checked = 0;
  for (auto& [name, t] : ref.tensors) {
    if (!name.ends_with(".cost")) continue;
    std::string base = name.substr(0, name.size() - 5);
    Tensor c = t;
    int64_t n = c.shape(0);
    for (bool maximize : {false, true}) {
      auto p = linear_assignment(c, maximize);
      ASSERT_TRUE(is_permutation(p)) << base;
      double want = ref.at(base + (maximize ? ".max" : ".min")).item();
      EXPECT_NEAR(assignment_cost(c.data<double>(), n, p), want, 1e-9 * std::max(1.0, std::abs(want)))
          << base << (maximize ? " max" : " min");
    }
    ++checked;
  }
  EXPECT_GE(checked, 10);
}

// Adding a constant to a row or a column adds it to every assignment, so the optimum moves
// by the sum of the offsets. Large row offsets (one channel better than another for every
// group, as in RIA's gains) are where column reduction alone matches few rows and the
// augmenting row reduction does most of the work; small integer noise adds ties.
TEST(Assignment, RowAndColumnOffsetsShiftTheOptimumByTheirSum) {
  Generator g(3);
  for (int64_t n : {2, 3, 17, 64, 200})
    for (bool ties : {false, true}) {
      std::vector<double> noise(size_t(n * n)), shifted(size_t(n * n)), r(static_cast<size_t>(n)), c(static_cast<size_t>(n));
      for (auto& x : noise) x = ties ? double(g.randint(3)) : g.uniform();
      for (auto& x : r) x = g.uniform() * 1000;
      for (auto& x : c) x = g.uniform() * 10;
      double offsets = std::accumulate(r.begin(), r.end(), 0.0) + std::accumulate(c.begin(), c.end(), 0.0);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) shifted[size_t(i * n + j)] = noise[size_t(i * n + j)] + r[size_t(i)] + c[size_t(j)];
      for (bool maximize : {false, true}) {
        auto p = linear_assignment(noise.data(), n, maximize), q = linear_assignment(shifted.data(), n, maximize);
        ASSERT_TRUE(is_permutation(q));
        EXPECT_NEAR(assignment_cost(shifted.data(), n, q), assignment_cost(noise.data(), n, p) + offsets, 1e-9 * offsets)
            << "n " << n << (ties ? " tied" : "") << (maximize ? " max" : " min");
        if (n <= 8) {
          EXPECT_NEAR(assignment_cost(noise.data(), n, p), brute_force(noise, n, maximize), 1e-9);
        }
      }
    }
}

// A solve started from the row potentials of an earlier one (rows moved as RIA moves
// them, some columns changed, cheaper and dearer) finds an optimum of the new problem, as
// does one started from arbitrary potentials; non-finite ones are ignored.
TEST(Assignment, AWarmStartFindsAnOptimumOfTheChangedProblem) {
  Generator g(5);
  for (int64_t n : {1, 2, 5, 17, 64, 200})
    for (bool ties : {false, true})
      for (bool maximize : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "n " << n << (ties ? " tied" : "") << (maximize ? " max" : " min"));
        std::vector<double> a(size_t(n * n));
        for (int64_t i = 0; i < n; ++i) {
          double offset = g.uniform() * 1000;  // rows differ by large offsets, as RIA's channels do
          for (int64_t j = 0; j < n; ++j) a[size_t(i * n + j)] = offset + (ties ? double(g.randint(3)) : g.uniform());
        }
        std::vector<double> duals;
        std::vector<int64_t> to = linear_assignment(a.data(), n, maximize, &duals);
        ASSERT_EQ(int64_t(duals.size()), n);
        // Rows follow their assignment, a third of the columns change.
        std::vector<double> b(a.size()), moved(duals.size());
        for (int64_t i = 0; i < n; ++i) {
          std::copy_n(a.data() + i * n, n, b.data() + to[size_t(i)] * n);
          moved[size_t(to[size_t(i)])] = duals[size_t(i)];
        }
        for (int64_t j = 0; j < n; j += 3) {
          double shift = (g.uniform() - 0.5) * 4;
          for (int64_t i = 0; i < n; ++i) b[size_t(i * n + j)] += shift + (ties ? double(g.randint(2)) : g.uniform());
        }
        const double best = assignment_cost(b.data(), n, linear_assignment(b.data(), n, maximize));
        if (n <= 8) {
          EXPECT_NEAR(best, brute_force(b, n, maximize), 1e-9);
        }
        std::vector<double> arbitrary(static_cast<size_t>(n)), bad(static_cast<size_t>(n), 0.0);
        for (auto& x : arbitrary) x = (g.uniform() - 0.5) * 1e4;
        bad[0] = NAN;
        for (std::vector<double>* start : {&moved, &arbitrary, &bad}) {
          std::vector<int64_t> p = linear_assignment(b.data(), n, maximize, start);
          ASSERT_TRUE(is_permutation(p));
          EXPECT_NEAR(assignment_cost(b.data(), n, p), best, 1e-9 * std::max(1.0, std::abs(best)));
          EXPECT_EQ(int64_t(start->size()), n);
        }
      }
}

TEST(Assignment, BatchedEqualsOneByOne) {
  Generator g(2);
  Tensor costs = randn({5, 13, 13}, g, DType::F64);
  Tensor p = linear_assignment_batched(costs, true);
  for (int64_t b = 0; b < 5; ++b) {
    auto one = linear_assignment(reshape(narrow(costs, 0, b, 1), {13, 13}), true);
    auto got = reshape(narrow(p, 0, b, 1), {13}).to_vector<int64_t>();
    EXPECT_EQ(got, one);
  }
  Tensor bad = zeros({1, 2, 2}, DType::F64);
  bad.data<double>()[3] = NAN;
  EXPECT_THROW_MSG(linear_assignment_batched(bad), "non-finite");
}

TEST(NM, MaskKeepsExactlyNPerGroup) {
  Generator g(3);
  Tensor s = abs(randn({7, 24}, g));
  for (auto [n, m] : std::vector<std::pair<int64_t, int64_t>>{{2, 4}, {1, 4}, {3, 8}, {1, 2}}) {
    Tensor mask = nm_mask(s, {n, m});
    auto mv = mask.to_vector<float>(), sv = s.to_vector<float>();
    for (int64_t o = 0; o < 7; ++o)
      for (int64_t gi = 0; gi < 24; gi += m) {
        float kept_min = INFINITY, dropped_max = -INFINITY;
        int64_t count = 0;
        for (int64_t k = 0; k < m; ++k) {
          size_t e = size_t(o * 24 + gi + k);
          if (mv[e] == 1.0f) {
            ++count;
            kept_min = std::min(kept_min, sv[e]);
          } else {
            dropped_max = std::max(dropped_max, sv[e]);
          }
        }
        EXPECT_EQ(count, n);
        EXPECT_GE(kept_min, dropped_max);  // the N kept are the N largest
      }
  }
  EXPECT_THROW_MSG(nm_mask(s, {2, 5}), "24 input channels are not a multiple of M = 5");
  EXPECT_THROW_MSG(NMPattern::parse("4:4"), "needs 0 < N < M");
  EXPECT_THROW_MSG(NMPattern::parse("2-4"), "must look like 2:4");
}

// Ties keep the lower index and NaN ranks below every number, in the counting path for
// short groups (M <= 8) and the sorting path for longer ones alike.
TEST(NM, TiesKeepTheLowerIndexAndNaNRanksLast) {
  Generator g(5);
  const int64_t R = 9, I = 48;
  std::vector<float> v = mul(rand({R, I}, g), 3.0).to_vector<float>();
  for (size_t e = 0; e < v.size(); ++e) v[e] = e % 7 == 3 ? NAN : std::floor(v[e]);  // values 0, 1, 2: many ties
  Tensor s = from_vector(v, {R, I});
  for (auto [n, m] : std::vector<std::pair<int64_t, int64_t>>{{2, 4}, {1, 4}, {3, 8}, {1, 2}, {2, 6}, {5, 16}}) {
    auto mv = nm_mask(s, {n, m}).to_vector<float>();
    for (int64_t gi = 0; gi < R * I; gi += m) {
      std::vector<int64_t> order(static_cast<size_t>(m));
      std::iota(order.begin(), order.end(), 0);
      auto key = [&](int64_t k) { float x = v[size_t(gi + k)]; return x != x ? -INFINITY : x; };
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return key(a) > key(b); });
      std::vector<float> want(static_cast<size_t>(m), 0.0f);
      for (int64_t k = 0; k < n; ++k) want[size_t(order[size_t(k)])] = 1.0f;
      EXPECT_EQ(std::vector<float>(mv.begin() + gi, mv.begin() + gi + m), want) << n << ":" << m << " group at " << gi;
    }
  }
}

TEST(NM, UnstructuredBoundsStructured) {
  Generator g(4);
  Tensor s = abs(randn({16, 32}, g));
  double nm = kept_fraction(s, nm_mask(s, {2, 4})), un = kept_fraction(s, unstructured_mask(s, {2, 4}));
  EXPECT_LE(nm, un + 1e-12);
  EXPECT_GT(nm, 0.5);  // keeping the top half of each group keeps more than half the mass
  EXPECT_NEAR(sum(unstructured_mask(s, {2, 4})).item(), 16 * 16, 0);
}

TEST(NM, ScoresFollowTheirDefinitions) {
  Tensor w = from_vector<float>({1, -2, 3, -4}, {2, 2});
  Tensor a = from_vector<float>({4, 9}, {2});
  EXPECT_EQ(importance(w, Tensor(), Score::Magnitude).to_vector<float>(), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(importance(w, a, Score::Wanda).to_vector<float>(), (std::vector<float>{4, 18, 12, 36}));
  // RIA: (|w|/rowsum + |w|/colsum) * sqrt(a); rows sum 3, 7; columns sum 4, 6.
  auto r = importance(w, a, Score::RIA).to_vector<float>();
  EXPECT_NEAR(r[0], (1.0 / 3 + 1.0 / 4) * 2, 1e-6);
  EXPECT_NEAR(r[3], (4.0 / 7 + 4.0 / 6) * 3, 1e-6);
  EXPECT_THROW_MSG(importance(w, Tensor(), Score::Wanda), "needs activation norms");
  EXPECT_THROW_MSG(parse_score("l1"), "unknown score 'l1'");
}

}  // namespace
}  // namespace nmperm

#include "autograd/gradcheck.h"
#include "permute/sinkhorn.h"

namespace nmperm {
namespace {

TEST(Sinkhorn, FusedGradientMatchesCentralDifferences) {
  Generator g(5);
  Tensor l = randn({3, 5, 5}, g, DType::F64).set_requires_grad();
  GradcheckResult r = gradcheck([](const std::vector<Tensor>& x) { return sinkhorn(x[0], 4); }, {l});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(Sinkhorn, UnrolledGradientMatchesCentralDifferences) {
  Generator g(6);
  Tensor l = randn({2, 4, 4}, g, DType::F64).set_requires_grad();
  GradcheckResult r = gradcheck([](const std::vector<Tensor>& x) { return sinkhorn_unrolled(x[0], 3); }, {l});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(Sinkhorn, FusedMatchesUnrolledValuesAndGradients) {
  Generator g(7);
  Tensor base = mul(randn({4, 9, 9}, g, DType::F64), 3.0);
  Tensor u = randn({4, 9, 9}, g, DType::F64);
  Tensor a = base.clone().set_requires_grad(), b = base.clone().set_requires_grad();
  Tensor pa = sinkhorn(a, 20), pb = sinkhorn_unrolled(b, 20);
  EXPECT_TRUE(test::all_close(pa, pb, 1e-12, 1e-10));
  backward(pa, u);
  backward(pb, u);
  EXPECT_TRUE(test::all_close(a.grad(), b.grad(), 1e-10, 1e-8));
}

// Blocks wide enough for the kernel to split rows and columns among threads (n^2 >= 2^16),
// with a width that leaves a tail after the 8-lane vectors: f32 and f64 follow the
// unrolled form, and the results are bitwise the same at 1 and 2 threads.
TEST(Sinkhorn, WideBlocksSplitAmongThreadsFollowTheUnrolledFormAtAnyThreadCount) {
  for (DType dt : {DType::F32, DType::F64}) {
    Generator g(9);
    Tensor base = mul(randn({2, 261, 261}, g, dt), 2.0), u = randn({2, 261, 261}, g, dt);
    auto run = [&] {
      Tensor a = base.clone().set_requires_grad();
      Tensor p = sinkhorn(a, 7);
      backward(p, u);
      return std::pair{p.to_vector<double>(), a.grad().to_vector<double>()};
    };
    auto one = test::at_threads(1, run), two = test::at_threads(2, run);
    EXPECT_EQ(one.first, two.first) << dtype_name(dt);
    EXPECT_EQ(one.second, two.second) << dtype_name(dt);
    Tensor b = base.clone().set_requires_grad();
    Tensor pb = sinkhorn_unrolled(b, 7);
    backward(pb, u);
    const double tol = dt == DType::F32 ? 1e-5 : 1e-12;
    EXPECT_TRUE(test::all_close(test::at_threads(2, [&] { return sinkhorn(base, 7); }), pb, tol, tol)) << dtype_name(dt);
    Tensor a = base.clone().set_requires_grad();
    test::at_threads(2, [&] {
      backward(sinkhorn(a, 7), u);
      return 0;
    });
    EXPECT_TRUE(test::all_close(a.grad(), b.grad(), 100 * tol, 100 * tol)) << dtype_name(dt);
  }
}

// Sharp logits (a small epsilon): rows and columns whose every entry lies far below the
// others, where a sum without a shift underflows and the kernel must shift by the max.
// f32 at 1 and 2 threads against the unrolled form in f64.
TEST(Sinkhorn, SharpLogitsFollowTheUnrolledFormWhereSumsUnderflow) {
  for (int64_t n : {20, 261}) {
    Generator g(10);
    Tensor base = mul(randn({2, n, n}, g), 60.0), u = randn({2, n, n}, g);
    float* bp = base.data<float>();
    for (int64_t i = 0; i < 2 * n; ++i) bp[i * n + 3] -= 300.0f;  // a column far below the rest
    Tensor b = base.to(DType::F64).set_requires_grad();
    Tensor pb = sinkhorn_unrolled(b, 10);
    backward(pb, u.to(DType::F64));
    for (int threads : {1, 2}) {
      Tensor a = base.clone().set_requires_grad();
      Tensor pa = test::at_threads(threads, [&] {
        Tensor p = sinkhorn(a, 10);
        backward(p, u);
        return p;
      });
      EXPECT_TRUE(std::isfinite(sum(pa).item()) && std::isfinite(sum(a.grad()).item())) << n;
      EXPECT_TRUE(test::all_close(pa.to(DType::F64), pb, 1e-4, 1e-4)) << n << " at " << threads;
      EXPECT_TRUE(test::all_close(a.grad().to(DType::F64), b.grad(), 1e-3, 1e-3)) << n << " at " << threads;
    }
  }
}

TEST(Sinkhorn, ReachesDoublyStochastic) {
  Generator g(8);
  Tensor l = randn({2, 16, 16}, g);
  SinkhornError e1 = sinkhorn_error(sinkhorn(l, 1)), e30 = sinkhorn_error(sinkhorn(l, 30));
  EXPECT_LT(e1.col, 1e-5);  // each iteration ends with the column step
  EXPECT_LT(e30.row, e1.row);
  EXPECT_LT(e30.row, 1e-4);
  // Small epsilon (large logits) stays finite and near a permutation.
  Tensor sharp = sinkhorn(mul(l, 100.0), 50);
  EXPECT_TRUE(std::isfinite(sum(sharp).item()));
  EXPECT_GT(max(sharp).item(), 0.99);
  EXPECT_THROW_MSG(sinkhorn(zeros({3, 4}), 5), "square blocks");
}

}  // namespace
}  // namespace nmperm

#include "permute/baselines.h"

namespace nmperm {
namespace {

bool is_perm_of(const Perm& p, int64_t n) {
  Perm s = p;
  std::sort(s.begin(), s.end());
  return s == identity_perm(n);
}

TEST(Baselines, EveryMethodReturnsAPermutationAndSearchesBeatIdentity) {
  Generator g(9);
  // Wanda-like scores with strong channel structure, so the order matters.
  Tensor col = mul(abs(randn({1, 48}, g)), 3.0);
  Tensor s = abs(mul(randn({24, 48}, g), col));
  NMPattern pat{2, 4};
  SearchOptions opt;
  double none = kept_fraction(s, identity_perm(48), pat);
  for (const char* m : {"none", "random", "channel-swap", "ria"}) {
    Perm p = search_permutation(m, s, pat, opt);
    EXPECT_TRUE(is_perm_of(p, 48)) << m;
  }
  double swap = kept_fraction(s, channel_swap(s, pat, opt), pat);
  double ria = kept_fraction(s, ria_permutation(s, pat, opt), pat);
  double bound = kept_fraction(s, unstructured_mask(s, pat));
  EXPECT_GT(swap, none);
  EXPECT_GT(ria, none);
  EXPECT_LE(swap, bound + 1e-9);
  EXPECT_LE(ria, bound + 1e-9);
  EXPECT_EQ(random_perm(48, 3), random_perm(48, 3));
  EXPECT_NE(random_perm(48, 3), random_perm(48, 4));
  EXPECT_THROW_MSG(search_permutation("magic", s, pat, opt), "unknown permutation method 'magic'");
  EXPECT_THROW_MSG(search_permutation("ria", s, {2, 5}, opt), "not a multiple of M = 5");
}

TEST(Baselines, ChannelSwapIsOptimalOnASmallCase) {
  // 8 channels, 2:4: brute force over all permutations (grouping is what matters).
  Generator g(10);
  Tensor s = abs(randn({5, 8}, g));
  NMPattern pat{2, 4};
  Perm p = identity_perm(8);
  double best = 0;
  do best = std::max(best, kept_fraction(s, p, pat));
  while (std::next_permutation(p.begin(), p.end()));
  EXPECT_NEAR(kept_fraction(s, channel_swap(s, pat, {}), pat), best, 1e-6);
}

// Scores with ties (small integers) or without, for the search tests below.
Tensor search_scores(int64_t rows, int64_t cols, bool ties, uint64_t seed) {
  Generator g(seed);
  Tensor s = abs(mul(randn({rows, cols}, g), mul(abs(randn({1, cols}, g)), 3.0)));
  if (!ties) return s;
  std::vector<float> v = s.to_vector<float>();
  for (float& x : v) x = std::floor(x);
  return from_vector(v, {rows, cols});
}

// Kept score of one group of channels, straight from the definition.
double group_kept(const Tensor& s, const std::vector<int64_t>& ch, NMPattern pat) {
  double total = 0;
  for (int64_t o = 0; o < s.shape(0); ++o) {
    std::vector<float> v;
    for (int64_t c : ch) v.push_back(s.data<float>()[o * s.shape(1) + c]);
    std::sort(v.begin(), v.end(), std::greater<float>());
    for (int64_t k = 0; k < pat.n; ++k) total += v[size_t(k)];
  }
  return total;
}

// Channel swap stops at a local optimum: no single swap between two groups gains more than
// its stopping threshold, for every N:M shape and with tied scores. The search evaluates
// swaps incrementally; this checks it against the definition.
TEST(Baselines, ChannelSwapEndsAtALocalOptimum) {
  for (NMPattern pat : {NMPattern{1, 4}, NMPattern{2, 4}, NMPattern{3, 4}, NMPattern{2, 8}, NMPattern{6, 8}})
    for (bool ties : {false, true}) {
      SCOPED_TRACE(::testing::Message() << pat.n << ":" << pat.m << (ties ? " tied" : ""));
      int64_t I = pat.m * 6;
      Tensor s = search_scores(9, I, ties, uint64_t(pat.n * 10 + pat.m));
      Perm p = channel_swap(s, pat, {.escapes = 3, .window = 0});
      ASSERT_TRUE(is_perm_of(p, I));
      double total = kept_fraction(s, p, pat) * sum(s).item();
      for (int64_t i = 0; i < I; ++i)
        for (int64_t j = i + 1; j < I; ++j) {
          if (i / pat.m == j / pat.m) continue;
          Perm q = p;
          std::swap(q[size_t(i)], q[size_t(j)]);
          double swapped = kept_fraction(s, q, pat) * sum(s).item();
          EXPECT_LE(swapped, total + 1e-5 * total + 1e-9) << "swap " << i << " <-> " << j;
        }
    }
}

// RIA ends with every slot optimally dealt: re-solving any slot's assignment with gains
// computed from the definition finds nothing better.
TEST(Baselines, RiaEndsWithEverySlotOptimallyDealt) {
  for (NMPattern pat : {NMPattern{2, 4}, NMPattern{1, 4}, NMPattern{3, 8}})
    for (bool ties : {false, true}) {
      SCOPED_TRACE(::testing::Message() << pat.n << ":" << pat.m << (ties ? " tied" : ""));
      int64_t G = 7, M = pat.m;
      Tensor s = search_scores(11, G * M, ties, uint64_t(pat.n * 100 + pat.m));
      Perm p = ria_permutation(s, pat, {});
      ASSERT_TRUE(is_perm_of(p, G * M));
      for (int64_t m = 0; m < M; ++m) {
        std::vector<double> gain(size_t(G * G));
        double now = 0;
        for (int64_t g = 0; g < G; ++g) {
          std::vector<int64_t> grp(p.begin() + g * M, p.begin() + (g + 1) * M);
          now += group_kept(s, grp, pat);
          for (int64_t k = 0; k < G; ++k) {
            grp[size_t(m)] = p[size_t(k * M + m)];
            gain[size_t(k * G + g)] = group_kept(s, grp, pat);
          }
        }
        std::vector<int64_t> to = linear_assignment(gain.data(), G, true);
        double best = 0;
        for (int64_t k = 0; k < G; ++k) best += gain[size_t(k * G + to[size_t(k)])];
        EXPECT_LE(best, now + 1e-9 * now) << "slot " << m;
      }
    }
}

// RIA keeps each slot's hinge sums from round to round and recomputes only what the
// moves since its last visit changed; that must give exactly the permutation of
// recomputing them all, on problems that take many rounds.
TEST(Baselines, RiaReusingHingeSumsEqualsRecomputingThem) {
  for (NMPattern pat : {NMPattern{2, 4}, NMPattern{1, 4}, NMPattern{4, 8}})
    for (bool ties : {false, true}) {
      SCOPED_TRACE(::testing::Message() << pat.n << ":" << pat.m << (ties ? " tied" : ""));
      Tensor s = search_scores(37, 61 * pat.m, ties, uint64_t(pat.n * 1000 + pat.m));
      SearchOptions reuse, recompute;
      recompute.ria_cache_bytes = 0;
      Perm a = ria_permutation(s, pat, reuse), b = ria_permutation(s, pat, recompute);
      EXPECT_EQ(a, b);
      EXPECT_GT(kept_fraction(s, a, pat), kept_fraction(s, identity_perm(61 * pat.m), pat));
    }
}

}  // namespace
}  // namespace nmperm

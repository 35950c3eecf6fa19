// Whole-model permutations: folding leaves the dense model's function unchanged, a pruned
// permuted model computes the original model with the back-mapped mask, checkpoints and
// permutation files round-trip, and the learned methods' straight-through ops carry the
// gradients they promise.
#include <filesystem>

#include "autograd/gradcheck.h"
#include "helpers.h"
#include "models/calibrate.h"
#include "permute/learned.h"
#include "permute/nm.h"
#include "permute/prune.h"
#include "permute/sinkhorn.h"
#include "tiny_models.h"

namespace nmperm {
namespace {

namespace fs = std::filesystem;
using test::tiny_data;
using test::tiny_llama;
using test::tiny_vit;

std::string tmp(const std::string& name) {
  return test::scratch_path("prune_" + name).string();
}

Tensor sample_input(const Model& m, uint64_t seed) {
  Generator g(seed);
  if (m.network->takes_images()) return rand({3, 1, 8, 8}, g);
  std::vector<int64_t> ids(24);
  for (auto& i : ids) i = g.randint(32);
  return from_vector(ids, {3, 8});
}

Tensor run(const Model& m, const Tensor& x) {
  NoGradGuard ng;
  return m.forward(x);
}

// A permutation that keeps every channel in its head and moves channels the same way in
// all heads: foldable into the value projection.
Perm head_respecting(int64_t channels, int64_t D, uint64_t seed) {
  Perm within = random_perm(D, seed), p;
  for (int64_t h = 0; h < channels / D; ++h)
    for (int64_t d = 0; d < D; ++d) p.push_back(h * D + within[size_t(d)]);
  return p;
}

class PermuteModel : public ::testing::TestWithParam<const char*> {
 protected:
  Model make(uint64_t seed) { return std::string(GetParam()) == "vit" ? tiny_vit(seed) : tiny_llama(seed); }
};

TEST_P(PermuteModel, FoldingAndGatheringKeepTheDenseFunction) {
  Model m = make(1);
  Tensor x = sample_input(m, 2), before = run(m, x);
  std::vector<Site> sites = permutation_sites(m);
  ASSERT_EQ(sites.size(), 4 * m.num_blocks());
  int folded = 0, gathered = 0;
  for (size_t i = 0; i < sites.size(); ++i) {
    Site& s = sites[i];
    Perm p = s.head_dim > 0 && i % 8 == 1 ? head_respecting(s.channels, s.head_dim, i) : random_perm(s.channels, i + 7);
    bool f = apply_permutation(s, p);
    EXPECT_EQ(f, foldable(s, p)) << s.name;
    (f ? folded : gathered)++;
  }
  // Each block folds the MLP output site; the first block's attention output too.
  EXPECT_EQ(folded, int(m.num_blocks()) + 1);
  EXPECT_GT(gathered, 0);
  EXPECT_TRUE(test::all_close(run(m, x), before, 1e-6, 1e-5));

  // The permuted model (with its gathers) survives a save and a load.
  std::string dir = tmp(std::string("fold_") + GetParam());
  save_checkpoint(m, dir);
  Model back = load_checkpoint(dir);
  EXPECT_TRUE(test::all_close(run(back, x), before, 1e-6, 1e-5));
  fs::remove_all(dir);
}

TEST_P(PermuteModel, GroupedQueryFoldNeedsOnePermutationPerKeyValueHead) {
  Model m = make(3);
  std::vector<Site> sites = permutation_sites(m);
  Site& o = sites[1];
  ASSERT_GT(o.head_dim, 0);
  Perm p = head_respecting(o.channels, o.head_dim, 5);
  EXPECT_TRUE(foldable(o, p));
  if (o.heads_per_kv > 1) {
    // Different within-head permutations for two query heads sharing a value head.
    Perm q = p;
    std::swap(q[size_t(o.head_dim)], q[size_t(o.head_dim) + 1]);
    EXPECT_FALSE(foldable(o, q));
  }
  Perm cross = identity_perm(o.channels);
  std::swap(cross[0], cross[size_t(o.head_dim)]);  // moves a channel to another head
  EXPECT_FALSE(foldable(o, cross));
}

// Wanda scores from a real calibration pass of the tiny model.
std::map<std::string, Tensor> norms_of(Model& m, const TrainData& d) {
  return activation_norms(m, d, {.batches = 2, .batch = 8});
}

TEST_P(PermuteModel, PrunedPermutedModelEqualsOriginalWithBackMappedMask) {
  Model m = make(4), ref = make(4);
  TrainData d = tiny_data(m, 5);
  auto norms = norms_of(m, d);
  PruneOptions o;
  o.method = "random";
  o.seed = 3;
  o.progress = false;
  PruneResult r = prune_model(m, d, norms, o);
  // The reference: the original model with W * mask, the mask taken on S[:, p] and mapped back.
  std::vector<Site> sites = permutation_sites(ref);
  SiteScores scores = site_scores(sites, norms, o.score);
  for (Site& s : sites) {
    const Perm& p = r.perms.at(s.name);
    Perm inv = inverse_permutation(p);
    Tensor pt = from_vector(p, {int64_t(p.size())}), it = from_vector(inv, {int64_t(inv.size())});
    for (size_t c = 0; c < s.consumers.size(); ++c) {
      Tensor mask = index_select(nm_mask(index_select(scores[s.name][c], 1, pt), o.pattern), 1, it);
      NoGradGuard ng;
      s.consumers[c]->weight.copy_from(mul(s.consumers[c]->weight, mask));
    }
  }
  Tensor x = sample_input(m, 6);
  Tensor want = run(ref, x);
  EXPECT_TRUE(test::all_close(run(m, x), want, 1e-6, 1e-5));
  // Every run of 4 consecutive input channels of every pruned weight keeps at most 2.
  for (Site& s : permutation_sites(m))
    for (Linear* l : s.consumers) {
      auto w = l->weight.to_vector<float>();
      int64_t in = l->in();
      for (int64_t r0 = 0; r0 < l->out(); ++r0)
        for (int64_t g = 0; g < in; g += 4) {
          int nz = 0;
          for (int64_t j = g; j < g + 4; ++j) nz += w[size_t(r0 * in + j)] != 0.0f;
          ASSERT_LE(nz, 2) << s.name;
        }
    }
  // And the pruned model differs from the dense one (the test can tell).
  EXPECT_FALSE(test::all_close(want, run(make(4), x), 1e-6, 1e-5));
  EXPECT_GT(r.mean_kept, 0.4);
  EXPECT_LE(r.mean_kept, r.mean_kept_bound + 1e-9);
  // The sparsity report says the same: exactly half of the pruned weights are zero (random
  // weights have no zeros of their own), no run of 4 keeps more than 2.
  EXPECT_EQ(r.nm_violations, 0);
  EXPECT_NEAR(r.sparsity, 0.5, 1e-12);
  for (const auto& layer : r.layers) EXPECT_NEAR(layer["zeros"].get<double>(), 0.5, 1e-12) << layer["layer"];
}

TEST(Sparsity, MeasuresZerosAndRunsThatKeepTooMany) {
  Tensor w = from_vector<float>({1, 0, 2, 0, /**/ 1, 1, 1, 0, /**/ 0, 0, 0, 0, /**/ 3, 0, 0, 4}, {2, 8});
  Sparsity s = measure_sparsity(w, NMPattern{2, 4});
  EXPECT_EQ(s.total, 16);
  EXPECT_EQ(s.zeros, 9);
  EXPECT_EQ(s.violations, 1);  // 1 1 1 0 keeps three
}

TEST_P(PermuteModel, LearnedMethodsReturnValidPermutationsAndKeepTheBest) {
  for (const char* method : {"learned", "permllm"}) {
    Model m = make(7);
    TrainData d = tiny_data(m, 8);
    auto norms = norms_of(m, d);
    PruneOptions o;
    o.method = method;
    o.progress = false;
    o.learn = learn_defaults(method);
    o.learn.steps = 6;
    o.learn.eval_every = 2;
    o.learn.batch = 8;
    o.learn.holdout = m.network->takes_images() ? 64 : 8;
    o.learn.lr = 0.5;
    o.warm_start = std::string(method) == "learned" ? "ria" : "none";
    if (std::string(method) == "learned") o.learn.alpha = 0;  // the held-out objective is then the plain loss
    PruneResult r = prune_model(m, d, norms, o);
    ASSERT_TRUE(std::isfinite(r.learn.best_holdout));
    // The best is the minimum of the recorded checks, found at the step it names...
    double lowest = INFINITY;
    for (auto& rec : r.learn.curve)
      if (rec.contains("holdout")) {
        lowest = std::min(lowest, rec["holdout"].get<double>());
        if (rec["step"] == r.learn.best_step) {
          EXPECT_EQ(rec["holdout"].get<double>(), r.learn.best_holdout) << method;
        }
      }
    EXPECT_EQ(r.learn.best_holdout, lowest) << method;
    // ...and the returned permutations re-score, from scratch, to it: a fresh copy pruned
    // with them (masks in the original order give the same model as pruning permuted)
    // scores best_holdout on the held-out examples, spread over the training data.
    if (std::string(method) == "learned") {
      Model fresh = make(7);
      std::vector<Site> sites = permutation_sites(fresh);
      SiteScores sc = site_scores(sites, norms, o.score);
      NoGradGuard ng;
      for (Site& s : sites) {
        const Perm& p = r.perms.at(s.name);
        Tensor pt = from_vector(p, {s.channels}), inv = from_vector(inverse_permutation(p), {s.channels});
        for (size_t c = 0; c < s.consumers.size(); ++c)
          s.consumers[c]->weight.copy_from(
              mul(s.consumers[c]->weight, index_select(nm_mask(index_select(sc[s.name][c], 1, pt), o.pattern), 1, inv)));
      }
      double loss = 0;
      if (fresh.network->takes_images()) {
        auto at = spread_indices(d.train_images.size(), o.learn.holdout);
        Tensor ix = from_vector(at, {int64_t(at.size())});
        Tensor logits = fresh.as<ViT>().forward(fresh.preprocess.apply(index_select(d.train_images.images, 0, ix)));
        loss = cross_entropy(logits, index_select(d.train_images.labels, 0, ix)).item();
      } else {
        int64_t T = context_of(fresh, d), W = T + 1;
        auto at = spread_indices(int64_t(d.tokens.train.size()) / W, o.learn.holdout);
        std::vector<int64_t> in, tg;
        for (int64_t k : at)
          for (int64_t t = 0; t < T; ++t) {
            in.push_back(d.tokens.train[size_t(k * W + t)]);
            tg.push_back(d.tokens.train[size_t(k * W + t + 1)]);
          }
        int64_t H = int64_t(at.size());
        Tensor logits = fresh.as<Llama>().forward(from_vector(in, {H, T}));
        loss = cross_entropy(reshape(logits, {H * T, -1}), from_vector(tg, {H * T})).item();
      }
      EXPECT_NEAR(loss, r.learn.best_holdout, 1e-5 * std::max(1.0, loss)) << fresh.arch();
    }
    for (const Site& s : permutation_sites(m)) {
      const Perm& p = r.perms.at(s.name);
      check_permutation(p, s.channels, s.name);
      if (o.warm_start != "none") continue;  // then p = warm[q] with a block-diagonal q
      int64_t B = s.channels / site_groups(s.channels, o.learn, o.pattern);
      for (int64_t j = 0; j < s.channels; ++j) EXPECT_EQ(p[size_t(j)] / B, j / B) << s.name << " crosses a group";
    }
    EXPECT_EQ(r.learn.soft_block.ndim(), 2);
  }
}

// permute-matrix's learned methods: the objective is the expected relative output error
// of the pruned matrix for uncorrelated inputs with the given norms. On a matrix whose
// large columns sit together (the identity prunes half of them) learning finds a better
// permutation, keeps the best, is deterministic, and a warm start is where it begins.
TEST(Prune, LearnedMatrixPermutationImprovesItsObjective) {
  const int64_t R = 8, C = 16;
  Generator g(5);
  Tensor noise = rand({R, C}, g);
  std::vector<double> wv(size_t(R * C));
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) wv[size_t(r * C + c)] = (c < 8 ? 10.0 : 0.1) + 0.01 * noise.data<float>()[r * C + c];
  Tensor w = from_vector(wv, {R, C}).to(DType::F32), norms = ones({C});
  NMPattern pat = NMPattern::parse("2:4");
  Tensor s = importance(w, norms, Score::Wanda);
  // The closed form: the pruned share of sum_j a_j^2 W_ij^2 under permutation p.
  auto error_of = [&](const Perm& p) {
    Tensor pt = from_vector(p, {C});
    Tensor wp = index_select(w, 1, pt), mask = nm_mask(index_select(s, 1, pt), pat);
    return sum(square(mul(wp, sub(ones({R, C}), mask)))).item() / sum(square(w)).item();
  };
  for (const char* method : {"learned", "permllm"}) {
    LearnOptions o = learn_defaults(method);
    o.groups = 1;
    o.block_size = 0;
    o.steps = 60;
    o.eval_every = 5;
    o.lr = std::string(method) == "learned" ? 2.0 : 0.05;
    o.progress = false;
    LearnResult a = learn_matrix_permutation("w", w, norms, s, pat, o), b = learn_matrix_permutation("w", w, norms, s, pat, o);
    const Perm& p = a.perms.at("w");
    check_permutation(p, C, method);
    EXPECT_EQ(p, b.perms.at("w")) << method << " is not deterministic";
    double lowest = INFINITY;
    for (auto& rec : a.curve)
      if (rec.contains("holdout")) lowest = std::min(lowest, rec["holdout"].get<double>());
    EXPECT_EQ(a.best_holdout, lowest) << method;  // the best of the recorded checks
    if (std::string(method) != "learned") continue;
    EXPECT_NEAR(a.start_holdout, error_of(identity_perm(C)), 1e-6);  // learning starts at the identity
    EXPECT_NEAR(a.best_holdout, error_of(p), 1e-6);                   // and reports what it returns
    EXPECT_LT(a.best_holdout, 0.85 * a.start_holdout) << "learning did not move large columns apart";
    EXPECT_GT(kept_fraction(s, p, pat), kept_fraction(s, identity_perm(C), pat) + 0.05);
    Perm warm = ria_permutation(s, pat, {});
    LearnResult c = learn_matrix_permutation("w", w, norms, s, pat, o, warm);
    EXPECT_NEAR(c.start_holdout, error_of(warm), 1e-6);
    EXPECT_NEAR(c.best_holdout, error_of(c.perms.at("w")), 1e-6);
  }
  // Wrong shapes and norms are named.
  LearnOptions o = learn_defaults("learned");
  EXPECT_THROW(learn_matrix_permutation("w", w, ones({C + 1}), s, pat, o), Error);
  EXPECT_THROW(learn_matrix_permutation("w", w, norms, transpose(s, 0, 1), pat, o), Error);
}

// Same seed: the same permutations and bitwise the same pruned weights, at 1 thread and at 2
// (the tiny models' matmuls are too small for the BLAS to split; larger ones round
// differently at another thread count, see Kernels.ResultsDoNotDependOnThreadCount).
TEST_P(PermuteModel, EveryMethodIsDeterministic) {
  for (const PermuteMethod& method : permute_methods()) {
    std::vector<std::vector<float>> weights[2];
    std::map<std::string, Perm> perms[2];
    for (int rep = 0; rep < 2; ++rep) test::at_threads(rep + 1, [&] {
      Model m = make(11);
      TrainData d = tiny_data(m, 12);
      PruneOptions o;
      o.method = method.name;
      o.seed = 5;
      o.progress = false;
      o.learn = learn_defaults(method.name);
      o.learn.steps = 3;
      o.learn.batch = 8;
      o.learn.holdout = m.network->takes_images() ? 64 : 8;
      o.search.escapes = 3;
      perms[rep] = prune_model(m, d, norms_of(m, d), o).perms;
      m.visit([&](const std::string&, Tensor& t) { weights[rep].push_back(t.to_vector<float>()); });
    });
    EXPECT_EQ(perms[0], perms[1]) << method.name;
    EXPECT_TRUE(weights[0] == weights[1]) << method.name;
  }
}

// Training and calibration are bitwise repeatable for a seed, at 1 thread and at 2 (for
// these tiny models, as above; the permutation methods are checked above; the killed-and-resumed run in test_crash.cpp
// checks training across processes).
TEST_P(PermuteModel, TrainingAndCalibrationAreDeterministic) {
  std::vector<std::vector<float>> weights[2];
  std::map<std::string, Tensor> norms[2];
  double loss[2];
  for (int rep = 0; rep < 2; ++rep) test::at_threads(rep + 1, [&] {
    Model m = make(21);
    TrainData d = tiny_data(m, 22);
    TrainConfig cfg;
    cfg.arch = m.arch();
    cfg.steps = 6;
    cfg.batch = 8;
    cfg.warmup = 2;
    cfg.eval_every = 3;
    cfg.ckpt_every = 100;
    cfg.seed = 4;
    cfg.out_dir = tmp(fmt::format("determinism_{}", rep));
    loss[rep] = train(m, cfg, d, false, false).loss;
    fs::remove_all(cfg.out_dir);
    m.visit([&](const std::string&, Tensor& t) { weights[rep].push_back(t.to_vector<float>()); });
    norms[rep] = norms_of(m, d);
  });
  EXPECT_EQ(loss[0], loss[1]);
  EXPECT_TRUE(weights[0] == weights[1]);
  ASSERT_EQ(norms[0].size(), norms[1].size());
  for (auto& [name, t] : norms[0]) EXPECT_EQ(t.to_vector<float>(), norms[1].at(name).to_vector<float>()) << name;
}

// With a warm start the costs refine the warm permutation: before they move (lr 0) the
// learned method returns exactly the warm start's permutations, across groups too.
TEST_P(PermuteModel, WarmStartIsWhereLearningBegins) {
  Model m = make(13), r = make(13);
  TrainData d = tiny_data(m, 14);
  auto norms = norms_of(m, d);
  PruneOptions o;
  o.progress = false;
  o.method = "ria";
  std::map<std::string, Perm> ria = prune_model(r, d, norms, o).perms;
  o.method = "learned";
  o.warm_start = "ria";
  o.learn.steps = 2;
  o.learn.batch = 8;
  o.learn.holdout = m.network->takes_images() ? 64 : 8;
  o.learn.lr = 0.0;
  EXPECT_EQ(prune_model(m, d, norms, o).perms, ria);
}

INSTANTIATE_TEST_SUITE_P(Models, PermuteModel, ::testing::Values("vit", "llama"));

TEST(Prune, BlockObjectiveTrainsEveryBlockInTurn) {
  Model m = tiny_llama(9);
  TrainData d = tiny_data(m, 10);
  std::vector<Site> sites = permutation_sites(m);
  SiteScores scores = site_scores(sites, norms_of(m, d), Score::Wanda);
  LearnOptions o;
  o.objective = Objective::Block;
  o.steps = 3;
  o.eval_every = 3;
  o.batch = 4;
  o.holdout = 8;
  o.progress = false;
  LearnResult r = learn_permutations(m, sites, scores, {}, d, o);
  EXPECT_EQ(r.perms.size(), sites.size());
  EXPECT_EQ(r.curve.size(), size_t(2 * (1 + 3)));  // per block: the start point and 3 steps
  // The held-out objectives are sums over the blocks, as block by block: each block's
  // start (step 0) and its best.
  std::map<int64_t, std::vector<double>> held;
  int64_t stage = -1;
  for (const nlohmann::json& p : r.curve) {
    if (p.contains("stage")) stage = p["stage"];  // a block's first point names it
    if (p.contains("holdout")) held[stage].push_back(p["holdout"]);
  }
  ASSERT_EQ(held.size(), 2u);
  double start = 0, best = 0;
  for (auto& [b, h] : held) {
    start += h.front();
    best += *std::min_element(h.begin(), h.end());
  }
  EXPECT_DOUBLE_EQ(r.start_holdout, start);
  EXPECT_DOUBLE_EQ(r.best_holdout, best);
}

TEST(Prune, PatternThatDoesNotFitIsAnError) {
  Model m = tiny_vit(1);
  TrainData d = tiny_data(m, 2);
  PruneOptions o;
  o.pattern = NMPattern::parse("2:5");
  o.score = Score::Magnitude;
  EXPECT_THROW_MSG(prune_model(m, d, {}, o), "16 input channels are not a multiple of M = 5");
  o.pattern = NMPattern::parse("2:4");
  o.method = "hungarian";
  EXPECT_THROW_MSG(prune_model(m, d, {}, o), "unknown permutation method");
  o.method = "none";
  o.score = Score::Wanda;
  EXPECT_THROW_MSG(prune_model(m, d, {}, o), "needs the activation norms");
}

TEST(Prune, SiteGroupsFitTheChannels) {
  LearnOptions o;
  NMPattern p;
  EXPECT_EQ(site_groups(128, o, p), 4);
  EXPECT_EQ(site_groups(24, o, p), 3);  // 4 groups of 6 would split N:M groups
  o.block_size = 64;
  EXPECT_EQ(site_groups(128, o, p), 2);
  EXPECT_EQ(site_groups(24, o, p), 1);
  EXPECT_EQ(site_groups(96, o, p), 2);  // blocks of 48
}

TEST(Prune, PermutationFilesRoundTripAndRejectNonPermutations) {
  std::string path = tmp("perms.safetensors");
  std::map<std::string, Perm> perms = {{"a.qkv", random_perm(12, 1)}, {"b.down_proj", identity_perm(8)}};
  save_permutations(path, perms, {{"method", "random"}});
  EXPECT_EQ(load_permutations(path), perms);
  save_safetensors(path, {{"bad", from_vector(std::vector<int32_t>{0, 2, 2}, {3})}});
  EXPECT_THROW_MSG(load_permutations(path), "not a permutation");
  fs::remove(path);
}

// The straight-through ops: the value is the hard permutation; the gradient of the soft
// matrix is what x @ blockdiag(soft) (or its transpose) would give, checked against that
// composition, which the op gradcheck table covers.
TEST(Prune, PermuteChannelsStraightThroughGradients) {
  int64_t R = 5, G = 2, B = 4, n = G * B;
  Tensor x = test::randn64({R, n}, 1), soft = test::randn64({G, B, B}, 2), up = test::randn64({R, n}, 3);
  Perm p = {2, 0, 3, 1, 5, 7, 4, 6};
  Tensor pt = from_vector(p, {n});
  for (bool inverse : {false, true}) {
    Tensor xs = x.clone().set_requires_grad(), ss = soft.clone().set_requires_grad();
    Tensor y = permute_channels_ste(xs, pt, ss, inverse);
    // Value: a gather by p (or its inverse).
    Tensor want = index_select(x, 1, inverse ? from_vector(inverse_permutation(p), {n}) : pt);
    EXPECT_TRUE(test::all_close(y.detach(), want, 0, 0));
    backward(sum(mul(y, up)));
    // Reference: the same loss through x @ blockdiag(soft)^(T).
    Tensor xr = x.clone().set_requires_grad(), sr = soft.clone().set_requires_grad();
    Tensor xg = transpose(reshape(xr, {R, G, B}), 0, 1);  // (G, R, B)
    Tensor yr = matmul(xg, inverse ? transpose(sr, 1, 2) : sr);
    backward(sum(mul(reshape(transpose(yr, 0, 1), {R, n}), up)));
    EXPECT_TRUE(test::all_close(ss.grad(), sr.grad(), 1e-12, 1e-10)) << "inverse " << inverse;
    // The x gradient is that of the hard gather: the upstream gradient moved back.
    Tensor gx = index_select(up, 1, inverse ? pt : from_vector(inverse_permutation(p), {n}));
    EXPECT_TRUE(test::all_close(xs.grad(), gx, 0, 0));
  }
  EXPECT_THROW_MSG(permute_channels_ste(x, from_vector(Perm{4, 0, 3, 1, 5, 7, 2, 6}, {n}), soft, false), "across groups");
}

// The effective weight keeps its inputs' dtype (f64 here, as in gradient checks): the
// hard N:M mask used to come back f32 and the straight-through step refused the f64 soft
// mask (found by the CUDA learning-step test, which runs the CPU side in f64).
TEST(Prune, EffectiveWeightInF64IsTheMaskedWeightWithACostGradient) {
  int64_t R = 6, G = 2, B = 8, n = G * B;
  Tensor w = test::randn64({R, n}, 11), scores = abs(test::randn64({R, n}, 12));
  Tensor cost = test::randn64({G, B, B}, 13).set_requires_grad();
  Perm p = assignment_permutation(cost, false);
  // Value: W masked by the N:M mask of the permuted scores, mapped back to the original
  // order, for both gradient formulations.
  Tensor pt = from_vector(p, {n}), inv = from_vector(inverse_permutation(p), {n});
  Tensor mask = index_select(nm_mask(index_select(scores, 1, pt), NMPattern{}).to(DType::F64), 1, inv);
  for (bool mask_only : {false, true}) {
    Tensor weff = effective_weight(w, scores, p, sinkhorn(mul(cost, -2.0), 10), NMPattern{}, mean(scores).item(),
                                   mask_only);
    ASSERT_EQ(weff.dtype(), DType::F64);
    EXPECT_TRUE(test::all_close(weff.detach(), mul(w, mask), 0, 0)) << mask_only;
    cost.zero_grad();
    backward(sum(mul(weff, test::randn64({R, n}, 14))));
    ASSERT_TRUE(cost.grad().defined());
    EXPECT_GT(max(abs(cost.grad())).item(), 0.0) << mask_only;
  }
}

// The two straight-through formulations differ only in the path through W P. With a loss
// whose gradient is zero wherever W is non-zero, no change of the mask can change the loss:
// the mask-only gradient is exactly zero, while the full one still blends weight columns.
TEST(Prune, MaskOnlyGradientReachesThePermutationOnlyThroughTheMask) {
  int64_t R = 6, G = 2, B = 8, n = G * B;
  Tensor w = test::randn64({R, n}, 21), up = test::randn64({R, n}, 22);
  double* wp = w.data<double>();
  double* upp = up.data<double>();
  for (int64_t i = 0; i < R * n; ++i) (i % 3 == 0 ? wp[i] : upp[i]) = 0.0;  // disjoint supports
  Tensor scores = abs(test::randn64({R, n}, 23));
  Tensor cost = test::randn64({G, B, B}, 24).set_requires_grad();
  Perm p = assignment_permutation(cost, false);
  double grad[2];
  for (bool mask_only : {false, true}) {
    cost.zero_grad();
    Tensor weff = effective_weight(w, scores, p, sinkhorn(mul(cost, -2.0), 10), NMPattern{}, mean(scores).item(),
                                   mask_only);
    backward(sum(mul(weff, up)));
    grad[mask_only] = max(abs(cost.grad())).item();
  }
  EXPECT_EQ(grad[1], 0.0);
  EXPECT_GT(grad[0], 1e-3);
}

TEST(Prune, StraightThroughAndSmoothL1) {
  Tensor hard = test::randn64({3, 4}, 4), soft = test::randn64({3, 4}, 5).set_requires_grad();
  Tensor y = straight_through(hard, soft);
  EXPECT_TRUE(test::all_close(y.detach(), hard, 0, 0));
  Tensor up = test::randn64({3, 4}, 6);
  backward(sum(mul(y, up)));
  EXPECT_TRUE(test::all_close(soft.grad(), up, 0, 0));

  Tensor a = mul(test::randn64({4, 5}, 7), 2.0), b = test::randn64({4, 5}, 8);
  double want = 0;
  auto av = a.to_vector<double>(), bv = b.to_vector<double>();
  for (size_t i = 0; i < av.size(); ++i) {
    double d = std::abs(av[i] - bv[i]);
    want += d < 1 ? 0.5 * d * d : d - 0.5;
  }
  EXPECT_NEAR(smooth_l1(a, b).item(), want / double(av.size()), 1e-12);
  auto r = gradcheck([&](const std::vector<Tensor>& in) { return smooth_l1(in[0], in[1]); },
                       {a.clone().set_requires_grad(), b.clone().set_requires_grad()});
  EXPECT_TRUE(r.ok) << r.message;
}

}  // namespace
}  // namespace nmperm

#include "permute/learned.h"

#include <cmath>
#include <unordered_map>

#include "core/progress.h"
#include "models/optim.h"
#include "permute/assignment.h"
#include "permute/sinkhorn.h"

namespace nmperm {

using json = nlohmann::json;

namespace {

template <class E> struct Named {
  E value;
  const char* name;
};
constexpr Named<Objective> kObjectives[] = {{Objective::Task, "task"},
                                            {Objective::Block, "block"},
                                            {Objective::LayerCosine, "layer-cosine"},
                                            {Objective::OutputCosine, "output-cosine"}};
constexpr Named<CostParam> kParams[] = {{CostParam::Cost, "cost"}, {CostParam::Logits, "logits"}};
constexpr Named<Anneal> kAnneals[] = {{Anneal::Geometric, "geometric"}, {Anneal::Linear, "linear"}};
constexpr Named<PermGradient> kGradients[] = {{PermGradient::Mask, "mask"}, {PermGradient::Full, "full"}};

template <class E, size_t K> const char* name_in(const Named<E> (&table)[K], E v) {
  for (const auto& n : table)
    if (n.value == v) return n.name;
  NMPERM_FAIL("learned permutations: option value {} has no name", int(v));
}
template <class E, size_t K> E parse_in(const Named<E> (&table)[K], const std::string& s, const char* what) {
  std::string choices;
  for (const auto& n : table) {
    if (s == n.name) return n.value;
    choices += (choices.empty() ? "" : ", ") + std::string(n.name);
  }
  NMPERM_FAIL("learned permutations: unknown {} '{}' ({})", what, s, choices);
}

}  // namespace

const char* name_of(Objective v) { return name_in(kObjectives, v); }
const char* name_of(CostParam v) { return name_in(kParams, v); }
const char* name_of(Anneal v) { return name_in(kAnneals, v); }
const char* name_of(PermGradient v) { return name_in(kGradients, v); }
Objective parse_objective(const std::string& s) { return parse_in(kObjectives, s, "objective"); }
CostParam parse_cost_param(const std::string& s) { return parse_in(kParams, s, "param"); }
Anneal parse_anneal(const std::string& s) { return parse_in(kAnneals, s, "anneal"); }
PermGradient parse_gradient(const std::string& s) { return parse_in(kGradients, s, "gradient"); }

json LearnOptions::to_json() const {
  return {{"objective", name_of(objective)},
          {"groups", groups},
          {"block_size", block_size},
          {"steps", steps},
          {"batch", batch},
          {"lr", lr},
          {"weight_decay", weight_decay},
          {"sinkhorn_iters", sinkhorn_iters},
          {"eps_start", eps_start},
          {"eps_end", eps_end},
          {"alpha", alpha},
          {"task_weight", task_weight},
          {"mask_temperature", mask_temperature},
          {"harden_soft", harden_soft},
          {"init_scale", init_scale},
          {"init_noise", init_noise},
          {"eval_every", eval_every},
          {"gradient", name_of(gradient)},
          {"param", name_of(param)},
          {"anneal", name_of(anneal)},
          {"raw_mask_scores", raw_mask_scores},
          {"holdout", holdout},
          {"seed", seed}};
}

namespace {

// Per group: (R, G*B) viewed as (G, R, B).
Tensor group_view(const Tensor& x, int64_t G) {
  int64_t R = x.shape(0), B = x.shape(1) / G;
  return transpose(reshape(x, {R, G, B}), 0, 1);
}

struct PermuteSTENode : Node {
  Tensor x, perm, inv;
  bool inverse;
  int64_t G;
  PermuteSTENode(Tensor x_, Tensor p, Tensor i, bool inv_, int64_t g)
      : x(std::move(x_)), perm(std::move(p)), inv(std::move(i)), inverse(inv_), G(g) {}
  const char* name() const override { return "permute_channels_ste"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    NoGradGuard ng;
    Tensor gx, gs;
    // Value path: the exact gradient of the hard gather.
    if (needs(0)) gx = index_select(g, 1, inverse ? perm : inv);
    // Soft path: y = x P (dP = x^T dy) or y = x P^T (dP = dy^T x), per group.
    if (needs(2)) {
      Tensor xg = group_view(x, G), gg = group_view(g.contiguous(), G);
      gs = inverse ? matmul(transpose(gg, 1, 2), xg) : matmul(transpose(xg, 1, 2), gg);
    }
    return {gx, Tensor(), gs};
  }
  void release() override { x = perm = inv = Tensor(); }
};

struct StraightThroughNode : Node {
  const char* name() const override { return "straight_through"; }
  std::vector<Tensor> backward(const Tensor& g) override { return {Tensor(), g}; }
};

// The learnable part of one site (or one matrix): G blocks of B channels, the costs (or
// PermLLM's logits and scale), the hard permutation now and the best one seen.
struct Costs {
  int64_t G = 1, B = 0;
  Tensor cost;   // (G, B, B), trained
  Tensor scale;  // PermLLM's scale (param = logits), trained; else undefined
  Perm hard, best;
};

// Learning state of one site.
struct SiteState : Costs {
  Site* site = nullptr;
  std::vector<Tensor> dense;   // the consumers' dense weights (detached)
  // The costs permute the channels after a fixed base permutation (the warm start, or the
  // identity): the site's permutation is base[q] for the learned block-diagonal q.
  Perm base;
  Tensor base_inverse;         // i64, maps base order back to the original channels
  std::vector<Tensor> weight, scores;  // dense weights and scores in base order
  std::vector<double> score_mean;
  Perm permutation(const Perm& q) const {
    Perm p(q.size());
    for (size_t j = 0; j < q.size(); ++j) p[j] = base[size_t(q[j])];
    return p;
  }
};

// Runs `f` when the scope ends, however it ends (weight swaps, observers, gradient flags).
template <class F> struct OnExit {
  F f;
  ~OnExit() { f(); }
};
template <class F> OnExit(F) -> OnExit<F>;

// The rows 0..N-1 that are not in `held` (ascending, as spread_indices gives them).
std::vector<int64_t> rows_not_held(int64_t N, const std::vector<int64_t>& held) {
  std::vector<int64_t> rest;
  for (int64_t i = 0, k = 0; i < N; ++i)
    if (k < int64_t(held.size()) && held[size_t(k)] == i) ++k;
    else rest.push_back(i);
  return rest;
}

// Every seed a learned method derives from its own: the initial costs, and the training
// batches of stage (block) `stage`.
uint64_t costs_seed(const LearnOptions& opt) { return opt.seed * 7919 + 17; }
uint64_t batch_seed(const LearnOptions& opt, size_t stage) { return opt.seed + 1000003 * (stage + 1); }

void check_blocks(const Tensor& perm, int64_t n, int64_t G) {
  NMPERM_CHECK(perm.ndim() == 1 && perm.shape(0) == n && !is_floating(perm.dtype()),
               "permute_channels_ste: perm must be an integer vector of {} entries", n);
  NMPERM_CHECK(G > 0 && n % G == 0, "permute_channels_ste: {} channels do not split into {} groups", n, G);
  int64_t B = n / G;
  auto p = perm.to(DType::I64).to_vector<int64_t>();
  check_permutation(p, n, "permute_channels_ste: perm");
  for (int64_t j = 0; j < n; ++j)
    NMPERM_CHECK(p[size_t(j)] / B == j / B, "permute_channels_ste: perm moves channel {} to position {} across groups of {}",
                 p[size_t(j)], j, B);
}

Tensor perm_tensor(const Perm& p) { return from_vector(p, {int64_t(p.size())}); }

// Cosine similarity of every row of a with the same row of b (R, D) -> (R).
Tensor row_cosine(const Tensor& a, const Tensor& b) {
  return div(sum(mul(a, b), {1}), add(sqrt(mul(sum(square(a), {1}), sum(square(b), {1}))), 1e-12));
}

void check_options(const LearnOptions& opt) {
  NMPERM_CHECK(opt.task_weight > 0 || opt.alpha > 0,
               "learned permutations: the task objective needs task_weight > 0 or alpha > 0");
  NMPERM_CHECK(opt.steps > 0 && opt.sinkhorn_iters > 0 && opt.eps_start > 0 && opt.eps_end > 0 && opt.eval_every > 0,
               "learned permutations: steps, Sinkhorn iterations, epsilons and eval_every must be positive");
}

// C = -init_scale on the diagonal of every (B, B) block (q starts at the identity: the
// base permutation), plus noise that breaks ties.
Tensor initial_cost(int64_t G, int64_t B, const LearnOptions& opt, Generator& gen) {
  Tensor c = randn({G, B, B}, gen);
  float* cp = c.data<float>();
  for (int64_t i = 0; i < c.numel(); ++i) cp[i] *= float(opt.init_noise);
  for (int64_t j = 0; j < G * B; ++j) {
    int64_t g = j / B, i = j - g * B;
    cp[(g * B + i) * B + i] -= float(opt.init_scale);
  }
  return c.set_requires_grad();
}

// PermLLM's logits: uniform in +-1/sqrt(B) (their scale starts at sqrt(B)).
Tensor initial_logits(int64_t G, int64_t B, Generator& gen) {
  Tensor l = rand({G, B, B}, gen);
  float* lp = l.data<float>();
  const float r = float(1.0 / std::sqrt(double(B)));
  for (int64_t i = 0; i < l.numel(); ++i) lp[i] = (2 * lp[i] - 1) * r;
  return l;
}

// Sinkhorn epsilon, annealed from eps_start to eps_end (geometrically or linearly), and
// the cosine lr.
double eps_at(const LearnOptions& opt, int64_t step) {
  double t = opt.steps > 1 ? double(step) / double(opt.steps - 1) : 1.0;
  if (opt.anneal == Anneal::Linear) return opt.eps_start + (opt.eps_end - opt.eps_start) * t;
  return opt.eps_start * std::pow(opt.eps_end / opt.eps_start, t);
}
double lr_at(const LearnOptions& opt, int64_t step) {
  return opt.lr * 0.5 * (1 + std::cos(M_PI * double(step) / double(opt.steps)));
}

// P~ at eps: Sinkhorn(-C / eps) of costs, or PermLLM's Sinkhorn(clamp(L * s, -1, 1) / eps)
// of logits L with scale s (the clamp passes its gradient straight through).
Tensor soft_of(const Tensor& cost, const Tensor& scale, double eps, const LearnOptions& opt) {
  if (!scale.defined()) return sinkhorn(mul(cost, -1.0 / eps), opt.sinkhorn_iters);
  Tensor x = mul(cost, scale);
  Tensor clamped = maximum(minimum(x.detach(), ones({}, x.dtype(), x.device())), full({}, -1.0, x.dtype(), x.device()));
  return sinkhorn(mul(straight_through(clamped, x), 1.0 / eps), opt.sinkhorn_iters);
}

// Logits are hardened on P~ (maximising it), as PermLLM does.
bool hardens_soft(const LearnOptions& opt) { return opt.harden_soft || opt.param == CostParam::Logits; }

// The hard block-diagonal permutation of costs `cost` (G, B, B): by assignment on the
// costs, or on the soft permutation at eps when `harden_soft` (PermLLM).
Perm harden_costs(const Tensor& cost, const Tensor& soft, bool harden_soft) {
  return harden_soft && soft.defined() ? assignment_permutation(soft, true) : assignment_permutation(cost, false);
}


// Fresh learnable costs of G blocks of B channels on device d: costs at the identity, or
// PermLLM's logits and scale.
Costs make_costs(int64_t G, int64_t B, const LearnOptions& opt, Generator& gen, Device d) {
  Costs c;
  c.G = G, c.B = B;
  if (opt.param == CostParam::Logits) {
    c.cost = initial_logits(G, B, gen).to(d).set_requires_grad();
    c.scale = full({}, std::sqrt(double(B)), DType::F32, d).set_requires_grad();
  } else {
    c.cost = initial_cost(G, B, opt, gen).detach().to(d).set_requires_grad();
  }
  return c;
}

// The hard permutation the costs give at eps.
Perm harden_at(const Costs& c, double eps, const LearnOptions& opt) {
  if (!hardens_soft(opt)) return harden_costs(c.cost, Tensor(), false);
  NoGradGuard ng;
  return harden_costs(c.cost, soft_of(c.cost, c.scale, eps, opt), true);
}

// What a learned method optimises; the costs' hard permutations are set before each call.
struct LearnTask {
  virtual ~LearnTask() = default;
  // The objective of training step `step` with soft[i] the soft permutation of costs i.
  virtual Tensor loss(int64_t step, const std::vector<Tensor>& soft) = 0;
  virtual double holdout() = 0;  // the objective of the hard permutations on held-out data
  virtual double kept() = 0;     // their mean kept score fraction
};

// The one learning loop of every learned method (learned, permllm, permute-matrix): the
// costs train with AdamW (cosine lr, Sinkhorn eps annealed) on task.loss; their hard
// permutations are scored by task.holdout() at the start and every eval_every steps, and
// each Costs::best ends as the best seen (also left in Costs::hard). Appends to r.curve,
// counting steps from `done`; returns the best held-out value.
double train_costs(const std::vector<Costs*>& costs, LearnTask& task, const LearnOptions& opt, LearnResult& r,
                   Progress& bar, int64_t& done, int64_t total, const std::string& label, size_t stage) {
  std::vector<Tensor> params;
  for (Costs* c : costs) {
    params.push_back(c->cost);
    if (c->scale.defined()) params.push_back(c->scale);
  }
  AdamW adam(params, {.lr = opt.lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = opt.weight_decay});
  double best = INFINITY;
  auto check = [&](double eps, int64_t step, json& rec) {
    for (Costs* c : costs) c->hard = harden_at(*c, eps, opt);
    double h = task.holdout(), k = task.kept();
    if (r.curve.empty()) r.start_holdout = h;
    if (h < best) {
      best = h;
      for (Costs* c : costs) c->best = c->hard;
      r.best_step = step;
    }
    rec["holdout"] = h;
    rec["kept"] = k;
  };
  json start = {{"step", done}, {"stage", stage}};
  check(opt.eps_start, 0, start);
  r.curve.push_back(start);
  for (int64_t step = 0; step < opt.steps; ++step, ++done) {
    double eps = eps_at(opt, step);
    adam.hp.lr = lr_at(opt, step);
    adam.zero_grad();
    std::vector<Tensor> soft;
    for (Costs* c : costs) {
      soft.push_back(soft_of(c->cost, c->scale, eps, opt));
      c->hard = harden_costs(c->cost, soft.back(), hardens_soft(opt));
    }
    Tensor loss = task.loss(step, soft);
    double l = loss.item();
    NMPERM_CHECK(std::isfinite(l), "learned permutations ({}): the loss is {} at step {} (try a lower --lr)", label, l,
                 step);
    backward(loss);
    adam.step();
    json rec = {{"step", done + 1}, {"loss", l}, {"eps", eps}};
    bool eval_now = (step + 1) % opt.eval_every == 0 || step + 1 == opt.steps;
    if (eval_now) check(eps, step + 1, rec);
    r.curve.push_back(rec);
    bar.show(fmt::format("  {} step {:>4}/{}  loss {:.5f}  eps {:.3f}  held-out best {:.5f}  ETA {}", label, done + 1,
                         total, l, eps, best, bar.eta(double(done + 1), double(total))),
             eval_now && step + 1 == opt.steps);
  }
  for (Costs* c : costs) c->hard = c->best;
  return best;
}

}  // namespace

Tensor permute_channels_ste(const Tensor& x, const Tensor& perm, const Tensor& soft, bool inverse) {
  NMPERM_CHECK(x.ndim() == 2, "permute_channels_ste: x must be (rows, channels), got {}", describe(x));
  int64_t n = x.shape(1), G = soft.defined() ? soft.shape(0) : 1;
  if (soft.defined())
    NMPERM_CHECK(soft.ndim() == 3 && soft.shape(1) * G == n && soft.shape(2) == soft.shape(1) && soft.dtype() == x.dtype(),
                 "permute_channels_ste: soft must be (G, B, B) with G * B = {} channels of {}, got {}", n, describe(x),
                 describe(soft));
  check_blocks(perm, n, G);
  Tensor p = perm.to(DType::I64).to(x.device()).contiguous();
  Tensor inv = perm_tensor(inverse_permutation(p.to_vector<int64_t>())).to(x.device());
  Tensor out;
  {
    NoGradGuard ng;
    out = index_select(x, 1, inverse ? inv : p);
  }
  if (soft.defined() && any_requires_grad({&x, &soft}))
    attach(out, std::make_shared<PermuteSTENode>(x.detach().contiguous(), p, inv, inverse, G), {&x, &perm, &soft});
  return out;
}

Tensor straight_through(const Tensor& hard, const Tensor& soft) {
  NMPERM_CHECK(hard.shape() == soft.shape() && hard.dtype() == soft.dtype(),
               "straight_through: hard {} and soft {} must match", describe(hard), describe(soft));
  Tensor out = hard.detach();
  if (any_requires_grad({&soft})) attach(out, std::make_shared<StraightThroughNode>(), {&hard, &soft});
  return out;
}

Tensor smooth_l1(const Tensor& a, const Tensor& b) {
  Tensor d = abs(sub(a, b));
  return mean(where(lt(d, ones({}, d.dtype(), d.device())), mul(square(d), 0.5), add(d, -0.5)));
}

Perm assignment_permutation(const Tensor& blocks, bool maximize) {
  NMPERM_CHECK(blocks.ndim() == 3 && blocks.shape(1) == blocks.shape(2),
               "assignment_permutation: expects (G, B, B) blocks, got {}", describe(blocks));
  Tensor assign;
  {
    NoGradGuard ng;
    assign = linear_assignment_batched(blocks.detach().to(Device::CPU), maximize);  // a host solver
  }
  const int64_t* a = assign.data<int64_t>();  // (G, B): row i (channel) -> column (position)
  int64_t G = blocks.shape(0), B = blocks.shape(1);
  Perm p(static_cast<size_t>(G * B));
  for (int64_t g = 0; g < G; ++g)
    for (int64_t i = 0; i < B; ++i) p[size_t(g * B + a[g * B + i])] = g * B + i;
  return p;
}

Tensor effective_weight(const Tensor& w, const Tensor& scores, const Perm& hard, const Tensor& soft,
                        NMPattern pattern, double score_scale, bool mask_only) {
  Tensor pt = perm_tensor(hard);
  Tensor sp = permute_channels_ste(scores, pt, soft, false);
  Tensor mask = nm_mask(sp.detach(), pattern).to(sp.dtype());  // f64 in gradient checks
  if (soft.defined()) {
    int64_t R = w.shape(0), C = w.shape(1), M = pattern.m;
    Tensor z = reshape(mul(sp, 1.0 / score_scale), {R, C / M, M});
    mask = straight_through(mask, reshape(mul(softmax(z, -1), double(pattern.n)), {R, C}));
  }
  // (W P * mask) P^T = W * (mask P^T): the same value either way; they differ in the
  // gradient the soft P~ gets through W P.
  if (mask_only) return mul(w, permute_channels_ste(mask, pt, soft, true));
  return permute_channels_ste(mul(permute_channels_ste(w, pt, soft, false), mask), pt, soft, true);
}

int64_t site_groups(int64_t channels, const LearnOptions& opt, NMPattern pattern) {
  pattern.check_fits(channels, "site");
  if (opt.block_size > 0) {
    // The largest block no bigger than asked that divides the channels into whole N:M groups.
    for (int64_t b = std::min(opt.block_size, channels); b >= pattern.m; --b)
      if (channels % b == 0 && b % pattern.m == 0) return channels / b;
    return channels / pattern.m;
  }
  for (int64_t g = std::max<int64_t>(opt.groups, 1); g > 1; --g)
    if (channels % g == 0 && (channels / g) % pattern.m == 0) return g;
  return 1;
}

namespace {

class Learner : LearnTask {
 public:
  // Against the whole model, learning from the training split of `data`.
  Learner(Model& model, std::vector<Site>& sites, const SiteScores& scores, NMPattern pattern, const TrainData& data,
          const LearnOptions& opt, const std::map<std::string, Perm>& warm)
      : Learner(model, sites, scores, pattern, opt, warm, costs_seed(opt)) {
    split_data(data);
  }
  // Against block `block` alone, learning from its input states (N, T, hidden).
  Learner(Model& model, size_t block, std::vector<Site>& sites, const SiteScores& scores, NMPattern pattern,
          const Tensor& inputs, const LearnOptions& opt, const std::map<std::string, Perm>& warm)
      : Learner(model, sites, scores, pattern, opt, warm, costs_seed(opt) + 1000003 * (block + 1)) {
    by_block_ = true;
    block_ = block;
    split_states(inputs);
  }

 private:
  Learner(Model& model, std::vector<Site>& sites, const SiteScores& scores, NMPattern pattern, const LearnOptions& opt,
          const std::map<std::string, Perm>& warm, uint64_t seed)
      : model_(model), pattern_(pattern), opt_(opt) {
    check_options(opt);
    Generator gen(seed);
    for (Site& s : sites) {
      SiteState st;
      st.site = &s;
      const int64_t G = site_groups(s.channels, opt, pattern);
      auto it = scores.find(s.name);
      NMPERM_CHECK(it != scores.end() && it->second.size() == s.consumers.size(),
                   "learned permutations: no scores for site '{}'", s.name);
      st.base = identity_perm(s.channels);
      if (auto w = warm.find(s.name); w != warm.end()) {
        check_permutation(w->second, s.channels, "warm start for site '" + s.name + "'");
        st.base = w->second;
      }
      // Everything of the site lives where the model does.
      Device d = model.device();
      Tensor base = from_vector(st.base, {s.channels}).to(d);
      st.base_inverse = from_vector(inverse_permutation(st.base), {s.channels}).to(d);
      for (size_t c = 0; c < s.consumers.size(); ++c) {
        NoGradGuard ng;
        st.dense.push_back(s.consumers[c]->weight.detach());
        st.weight.push_back(index_select(st.dense.back(), 1, base));
        st.scores.push_back(index_select(it->second[c].detach().to(d), 1, base));
        st.score_mean.push_back(std::max(mean(it->second[c]).item(), 1e-30));
      }
      static_cast<Costs&>(st) = make_costs(G, s.channels / G, opt, gen, d);
      states_.push_back(std::move(st));
    }
  }

 public:
  LearnResult run() {
    LearnResult r;
    Progress bar(opt_.progress);
    std::vector<std::vector<SiteState*>> stages;
    if (opt_.objective == Objective::Block && !by_block_) {
      for (size_t b = 0; b < model_.num_blocks(); ++b) {
        std::vector<SiteState*> st;
        for (auto& s : states_)
          if (s.site->block == b) st.push_back(&s);
        if (!st.empty()) stages.push_back(st);
      }
    } else {
      std::vector<SiteState*> st;
      for (auto& s : states_) st.push_back(&s);
      stages.push_back(st);
    }
    // Weights are frozen: nothing but the costs may collect gradients.
    std::vector<Tensor> params = model_.parameters();
    std::vector<bool> had_grad;
    for (Tensor& p : params) {
      had_grad.push_back(p.requires_grad());
      p.set_requires_grad(false);
    }
    OnExit thaw{[&] {
      for (size_t i = 0; i < params.size(); ++i) params[i].set_requires_grad(had_grad[i]);
    }};
    int64_t total = opt_.steps * int64_t(stages.size()), done = 0;
    // Stage by stage (the block objective), start_holdout and best_holdout are sums over the
    // stages, as the block pipeline reports them.
    double start_sum = 0, best_sum = 0;
    for (size_t si = 0; si < stages.size(); ++si) {
      stage_ = stages[si];
      block_ = stage_[0]->site->block;
      stage_index_ = by_block_ ? block_ : si;  // a block's batches do not depend on where a run starts
      std::vector<Costs*> costs(stage_.begin(), stage_.end());
      std::string label = stages.size() > 1 || by_block_ ? fmt::format("block {}", block_) : std::string("learn");
      const size_t first = r.curve.size();
      best_sum += train_costs(costs, *this, opt_, r, bar, done, total, label, stage_index_);
      start_sum += r.curve[first].at("holdout").get<double>();
    }
    r.start_holdout = start_sum;
    r.best_holdout = best_sum;
    for (auto& s : states_) r.perms[s.site->name] = s.permutation(s.best);
    if (!states_.empty()) {
      NoGradGuard ng;
      Tensor soft = soft_of(states_[0].cost, states_[0].scale, opt_.eps_end, opt_);
      r.soft_block = contiguous(reshape(narrow(soft, 0, 0, 1), {states_[0].B, states_[0].B}));
    }
    r.seconds = bar.elapsed();
    return r;
  }

 private:
  Model& model_;
  NMPattern pattern_;
  LearnOptions opt_;
  TrainData fit_;
  std::vector<Batch> holdout_;
  std::vector<SiteState> states_;
  std::vector<SiteState*> stage_;
  size_t stage_index_ = 0, block_ = 0;
  // Block by block: the block's input states and its dense outputs on them (N, T, hidden),
  // and which of the N windows make the learning batches (the rest are held out).
  bool by_block_ = false;
  Tensor inputs_, targets_;
  std::vector<int64_t> fit_rows_;

  // LearnTask: the stage's consumers hold W_eff (with the soft paths) for one step.
  Tensor loss(int64_t step, const std::vector<Tensor>& soft) override {
    Batch b = by_block_ ? state_batch(fit_batch(step))
                        : train_batch(model_, fit_, batch_size(), batch_seed(opt_, stage_index_), step);
    OnExit restore{[&] { restore_weights(); }};
    for (size_t i = 0; i < stage_.size(); ++i) set_effective(*stage_[i], soft[i]);
    return objective(b);
  }
  double holdout() override { return holdout_objective(); }
  double kept() override { return mean_kept(); }

  int64_t batch_size() const {
    int64_t b = opt_.batch > 0 ? opt_.batch : model_.network->takes_images() ? 128 : 16;
    return by_block_ ? std::min<int64_t>(b, int64_t(fit_rows_.size())) : b;
  }

  // Block by block: `holdout` windows of the N (spread evenly; by default a quarter) score
  // the hard permutations, the rest make the learning batches. The targets are the dense
  // block's outputs, computed once.
  void split_states(const Tensor& inputs) {
    NMPERM_CHECK(opt_.objective == Objective::Block || opt_.objective == Objective::LayerCosine,
                 "learned permutations block by block: the '{}' objective needs the whole model; learn with the "
                 "block or layer-cosine objective, or against the whole model",
                 name_of(opt_.objective));
    NMPERM_CHECK(inputs.ndim() == 3, "learned permutations block by block: inputs must be (windows, tokens, hidden), got {}",
                 describe(inputs));
    const int64_t N = inputs.shape(0), H = opt_.holdout > 0 ? opt_.holdout : N / 4;
    NMPERM_CHECK(H >= 1 && H < N,
                 "learned permutations block by block hold out {} of the {} calibration windows to choose the best "
                 "permutation and learn from the rest: give at least 2 windows (--nsamples) and a holdout below their "
                 "number",
                 H, N);
    std::vector<int64_t> held = spread_indices(N, H);
    fit_rows_ = rows_not_held(N, held);
    inputs_ = inputs;
    if (opt_.objective == Objective::Block) {
      NoGradGuard ng;
      std::vector<Tensor> out;
      for (int64_t at = 0; at < N; at += batch_size())
        out.push_back(model_.block(block_, narrow(inputs, 0, at, std::min(batch_size(), N - at))));
      targets_ = cat(out, 0);
    }
    for (int64_t at = 0; at < H; at += batch_size())
      holdout_.push_back(state_batch(std::vector<int64_t>(held.begin() + at, held.begin() + std::min(H, at + batch_size()))));
  }

  // Rows of the learning batch of step `step`.
  std::vector<int64_t> fit_batch(int64_t step) const {
    std::vector<int64_t> rows = epoch_batch(int64_t(fit_rows_.size()), batch_size(), batch_seed(opt_, block_), step);
    for (int64_t& r : rows) r = fit_rows_[size_t(r)];
    return rows;
  }

  // The input states of windows `rows` and their targets (when the objective has them).
  Batch state_batch(const std::vector<int64_t>& rows) const {
    Tensor ix = from_vector(rows, {int64_t(rows.size())}).to(inputs_.device());
    return {index_select(inputs_, 0, ix), targets_.defined() ? index_select(targets_, 0, ix) : Tensor()};
  }

  // The held-out examples that score the hard permutations are spread evenly over the
  // whole training split (images, or windows of the context); the learning batches come
  // from the rest.
  void split_data(const TrainData& data) {
    fit_ = data;
    if (model_.network->takes_images()) {
      const ImageSet& s = data.train_images;
      int64_t H = opt_.holdout > 0 ? opt_.holdout : 1024;
      NMPERM_CHECK(s.size() >= H + batch_size(), "learned permutations need {} training images, the data has {}",
                   H + batch_size(), s.size());
      std::vector<int64_t> held = spread_indices(s.size(), H), rest = rows_not_held(s.size(), held);
      Tensor ri = from_vector(rest, {int64_t(rest.size())});
      fit_.train_images = {index_select(s.images, 0, ri), index_select(s.labels, 0, ri)};
      for (int64_t at = 0; at < H; at += 256) {
        int64_t n = std::min<int64_t>(256, H - at);
        Tensor ix = from_vector(std::vector<int64_t>(held.begin() + at, held.begin() + at + n), {n});
        holdout_.push_back({model_.preprocess.apply(index_select(s.images, 0, ix).to(model_.device())),
                            index_select(s.labels, 0, ix).to(model_.device())});
      }
      return;
    }
    const auto& tok = data.tokens.train;
    const int64_t T = context_of(model_, data), W = T + 1, H = opt_.holdout > 0 ? opt_.holdout : 128;
    const int64_t slots = int64_t(tok.size()) / W;
    NMPERM_CHECK(slots >= H + 4, "learned permutations need {} windows of {} training tokens, the data has {} tokens",
                 H + 4, W, tok.size());
    std::vector<int64_t> held = spread_indices(slots, H);
    fit_.tokens.train.clear();
    size_t from = 0;  // the learning stream: everything between the held-out windows
    for (int64_t k : held) {
      fit_.tokens.train.insert(fit_.tokens.train.end(), tok.begin() + long(from), tok.begin() + long(k * W));
      from = size_t((k + 1) * W);
    }
    fit_.tokens.train.insert(fit_.tokens.train.end(), tok.begin() + long(from), tok.end());
    for (int64_t w0 = 0; w0 < H; w0 += 16) {
      int64_t n = std::min<int64_t>(16, H - w0);
      Tensor in = Tensor::empty({n, T}, DType::I64), tg = Tensor::empty({n, T}, DType::I64);
      for (int64_t b = 0; b < n; ++b)
        for (int64_t t = 0; t < T; ++t) {
          size_t at = size_t(held[size_t(w0 + b)] * W + t);
          in.data<int64_t>()[b * T + t] = tok[at];
          tg.data<int64_t>()[b * T + t] = tok[at + 1];
        }
      holdout_.push_back({in.to(model_.device()), tg.to(model_.device())});
    }
  }


  // Installs W_eff in the site's consumers: with the soft paths when `soft` is defined,
  // else the plain pruned weight (hard permutation, hard mask).
  void set_effective(SiteState& s, const Tensor& soft) {
    for (size_t c = 0; c < s.weight.size(); ++c)
      s.site->consumers[c]->weight = index_select(effective_weight(s.weight[c], s.scores[c], s.hard, soft, pattern_,
                                                                   opt_.raw_mask_scores ? 1.0
                                                                   : opt_.mask_temperature * s.score_mean[c],
                                                                   opt_.gradient == PermGradient::Mask),
                                                  1, s.base_inverse);
  }

  void restore_weights() {
    for (auto& s : states_)
      for (size_t c = 0; c < s.dense.size(); ++c) s.site->consumers[c]->weight = s.dense[c];
  }

  // The objective on one batch; the stage's consumers hold W_eff, everything else is dense.
  Tensor objective(const Batch& b) {
    // The dense reference needs the dense weights: swap them in, then back.
    std::vector<Tensor> eff;
    for (SiteState* s : stage_)
      for (Linear* c : s->site->consumers) eff.push_back(c->weight);
    auto dense = [&](auto&& fn) {
      NoGradGuard ng;
      OnExit back{[&] {
        size_t k = 0;
        for (SiteState* s : stage_)
          for (Linear* c : s->site->consumers) c->weight = eff[k++];
      }};
      for (SiteState* s : stage_)
        for (size_t c = 0; c < s->dense.size(); ++c) s->site->consumers[c]->weight = s->dense[c];
      fn();
    };
    if (opt_.objective == Objective::LayerCosine) return layer_cosine(b, dense);
    if (opt_.objective == Objective::OutputCosine) {
      Tensor ref;
      dense([&] {
        Tensor x = model_.embed(b.input);
        for (size_t i = 0; i < model_.num_blocks(); ++i) x = model_.block(i, x);
        ref = x;
      });
      Tensor x = model_.embed(b.input);
      for (size_t i = 0; i < model_.num_blocks(); ++i) x = model_.block(i, x);
      return sub(ones({}, x.dtype(), x.device()), mean(row_cosine(reshape(x, {-1, x.shape(-1)}),
                                                                  reshape(ref, {-1, ref.shape(-1)}))));
    }
    if (by_block_ && opt_.objective == Objective::Block) return smooth_l1(model_.block(block_, b.input), b.target);
    if (opt_.objective == Objective::Block) {
      Tensor in, target;
      dense([&] {
        Tensor x = model_.embed(b.input);
        for (size_t i = 0; i < block_; ++i) x = model_.block(i, x);
        in = x;
        target = model_.block(block_, x);
      });
      return smooth_l1(model_.block(block_, in), target);
    }
    std::vector<Tensor> ref;
    dense([&] {
      Tensor x = model_.embed(b.input);
      for (size_t i = 0; i < model_.num_blocks(); ++i) ref.push_back(x = model_.block(i, x));
    });
    // Distillation: per block the squared error of the pruned output relative to the dense
    // output's energy, averaged over blocks, so alpha does not depend on width or depth.
    Tensor x = model_.embed(b.input), distill;
    const double blocks = double(model_.num_blocks());
    for (size_t i = 0; i < model_.num_blocks(); ++i) {
      x = model_.block(i, x);
      if (opt_.alpha == 0) continue;
      double energy = std::max(mean(square(ref[i])).item(), 1e-30);
      Tensor d = mul(mean(square(sub(x, ref[i]))), 1.0 / (energy * blocks));
      distill = distill.defined() ? add(distill, d) : d;
    }
    if (opt_.task_weight == 0) return mul(distill, opt_.alpha);
    Tensor ce = mul(task_loss(model_.head(x), b), opt_.task_weight);
    return distill.defined() ? add(ce, mul(distill, opt_.alpha)) : ce;
  }

  // PermLLM's loss: per layer, 1 - cosine similarity of dense and pruned outputs on the
  // layer's dense input, averaged over rows and summed over layers.
  template <class Dense> Tensor layer_cosine(const Batch& b, Dense&& dense) {
    struct Capture : LinearObserver {
      std::unordered_map<const void*, Tensor> inputs;
      void observe(const Tensor& w, const Tensor& x) override { inputs[w.storage().get()] = x.detach(); }
    } cap;
    dense([&] {
      set_linear_observer(&cap);
      OnExit detach{[] { set_linear_observer(nullptr); }};
      if (by_block_) model_.block(block_, b.input);
      else model_.forward(b.input);
    });
    Tensor total;
    for (SiteState* s : stage_)
      for (size_t c = 0; c < s->weight.size(); ++c) {
        const Tensor& x = cap.inputs.at(s->dense[c].storage().get());
        Tensor rows = reshape(x, {-1, x.shape(-1)});
        Tensor cos = row_cosine(linear(rows, s->dense[c]), linear(rows, s->site->consumers[c]->weight));
        Tensor l = sub(ones({}, cos.dtype(), cos.device()), mean(cos));
        total = total.defined() ? add(total, l) : l;
      }
    return total;
  }

  double holdout_objective() {
    NoGradGuard ng;
    OnExit restore{[&] { restore_weights(); }};
    for (SiteState* s : stage_) set_effective(*s, Tensor());
    double sum = 0;
    int64_t n = 0;
    for (const Batch& b : holdout_) {
      int64_t rows = by_block_ ? b.input.shape(0) : b.target.numel();
      sum += objective(b).item() * double(rows);
      n += rows;
    }
    return sum / double(n);
  }

  double mean_kept() const {
    double k = 0;
    int64_t n = 0;
    for (const SiteState* s : stage_)
      for (const Tensor& sc : s->scores) {
        k += kept_fraction(sc, s->hard, pattern_);
        ++n;
      }
    return k / double(n);
  }
};

}  // namespace

LearnResult learn_permutations(Model& model, std::vector<Site>& sites, const SiteScores& scores, NMPattern pattern,
                               const TrainData& data, const LearnOptions& opt, const std::map<std::string, Perm>& warm) {
  NMPERM_CHECK(!sites.empty(), "learned permutations: no sites to learn");
  return Learner(model, sites, scores, pattern, data, opt, warm).run();
}

LearnResult learn_block_permutations(Model& model, size_t block, std::vector<Site>& sites, const SiteScores& scores,
                                     NMPattern pattern, const Tensor& inputs, const LearnOptions& opt,
                                     const std::map<std::string, Perm>& warm) {
  NMPERM_CHECK(!sites.empty(), "learned permutations: no sites to learn in block {}", block);
  return Learner(model, block, sites, scores, pattern, inputs, opt, warm).run();
}

namespace {

// The matrix objective of learn_matrix_permutation for W_eff against W (both in base
// order); a2 (1, C) holds the squared input norms.
Tensor matrix_objective(const Tensor& w, const Tensor& weff, const Tensor& a2, bool cosine, double dense_energy) {
  if (cosine) {
    Tensor num = sum(mul(mul(w, weff), a2), {1});
    Tensor den = add(sqrt(mul(sum(mul(square(w), a2), {1}), sum(mul(square(weff), a2), {1}))), 1e-12);
    return sub(ones({}, w.dtype(), w.device()), mean(div(num, den)));
  }
  return mul(sum(mul(square(sub(w, weff)), a2)), 1.0 / dense_energy);
}

}  // namespace

LearnResult learn_matrix_permutation(const std::string& name, const Tensor& weight, const Tensor& act_norms,
                                     const Tensor& scores, NMPattern pattern, const LearnOptions& opt,
                                     const Perm& warm) {
  check_options(opt);
  NMPERM_CHECK(weight.ndim() == 2 && scores.shape() == weight.shape(),
               "learned permutation of '{}': weight {} and scores {} must be one (out, in) shape", name,
               describe(weight), describe(scores));
  const int64_t C = weight.shape(1);
  NMPERM_CHECK(!act_norms.defined() || act_norms.numel() == C,
               "learned permutation of '{}': {} activation norms for {} input channels", name,
               act_norms.defined() ? act_norms.numel() : 0, C);
  const int64_t G = site_groups(C, opt, pattern), B = C / G;
  Perm base = warm.empty() ? identity_perm(C) : warm;
  check_permutation(base, C, "warm start for '" + name + "'");
  const bool cosine = opt.objective == Objective::LayerCosine || opt.objective == Objective::OutputCosine;
  Tensor w, s, a2;
  double dense_energy = 0, score_scale = 0;
  {
    NoGradGuard ng;
    Tensor b = perm_tensor(base);
    w = index_select(weight.detach().to(DType::F32), 1, b);
    s = index_select(scores.detach().to(DType::F32), 1, b);
    a2 = act_norms.defined() ? reshape(index_select(square(act_norms.detach().to(DType::F32)), 0, b), {1, C})
                             : ones({1, C});
    dense_energy = std::max(sum(mul(square(w), a2)).item(), 1e-30);
    score_scale = opt.raw_mask_scores ? 1.0 : opt.mask_temperature * std::max(mean(s).item(), 1e-30);
  }
  Generator gen(costs_seed(opt));
  Costs costs = make_costs(G, B, opt, gen, Device::CPU);
  // The one matrix's objective: W_eff against W for inputs with the given norms.
  struct MatrixTask : LearnTask {
    const Tensor &w, &s, &a2;
    Costs& c;
    NMPattern pattern;
    double score_scale, dense_energy;
    bool cosine, mask_only;
    MatrixTask(const Tensor& w_, const Tensor& s_, const Tensor& a2_, Costs& c_, NMPattern p, double ss, double de,
               bool cos, bool mo)
        : w(w_), s(s_), a2(a2_), c(c_), pattern(p), score_scale(ss), dense_energy(de), cosine(cos), mask_only(mo) {}
    Tensor loss(int64_t, const std::vector<Tensor>& soft) override {
      return matrix_objective(w, effective_weight(w, s, c.hard, soft[0], pattern, score_scale, mask_only), a2, cosine,
                              dense_energy);
    }
    double holdout() override {
      NoGradGuard ng;
      return matrix_objective(w, effective_weight(w, s, c.hard, Tensor(), pattern, score_scale, false), a2, cosine,
                              dense_energy)
          .item();
    }
    double kept() override { return kept_fraction(s, c.hard, pattern); }
  } task(w, s, a2, costs, pattern, score_scale, dense_energy, cosine, opt.gradient == PermGradient::Mask);

  LearnResult r;
  Progress bar(opt.progress);
  int64_t done = 0;
  r.best_holdout = train_costs({&costs}, task, opt, r, bar, done, opt.steps, "learn", 0);
  Perm p(costs.best.size());
  for (size_t j = 0; j < p.size(); ++j) p[j] = base[size_t(costs.best[j])];
  r.perms[name] = p;
  {
    NoGradGuard ng;
    Tensor soft = soft_of(costs.cost, costs.scale, opt.eps_end, opt);
    r.soft_block = contiguous(reshape(narrow(soft, 0, 0, 1), {B, B}));
  }
  r.seconds = bar.elapsed();
  return r;
}

}  // namespace nmperm

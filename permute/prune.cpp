#include "permute/prune.h"

#include <chrono>

#include "core/progress.h"

namespace nmperm {

using json = nlohmann::json;

const char* const kPermuteMethods[] = {"none", "random", "channel-swap", "ria", "permllm", "learned", nullptr};

LearnOptions learn_defaults(const std::string& method) {
  LearnOptions o;
  if (method == "permllm") {
    // PermLLM's published code: blocks of 64 channels, logits uniform in +-1/sqrt(64)
    // times a learned scale starting at sqrt(64), clamped to [-1, 1]; 5 Sinkhorn
    // iterations at a temperature annealed linearly 1 -> 0.1; the hard permutation by
    // assignment on P~; the weights masked in their own order (the gradient reaches P~
    // through the soft mask softmax(S P) of the raw scores); all blocks trained jointly
    // against 1 - cos of the last block's output; AdamW lr 1e-3, weight decay 0.1, 400
    // steps. Differences: our batches (16 windows of the context or 128 images a step,
    // not 128 x 1024 tokens) and the best hard permutation on held-out data is kept.
    o.objective = Objective::OutputCosine;
    o.block_size = 64;
    o.param = CostParam::Logits;
    o.sinkhorn_iters = 5;
    o.eps_start = 1.0;
    o.eps_end = 0.1;
    o.anneal = Anneal::Linear;
    o.lr = 1e-3;
    o.weight_decay = 0.1;
    o.steps = 400;
    o.harden_soft = true;
    o.gradient = PermGradient::Mask;
    o.raw_mask_scores = true;
    o.init_scale = 0.0;
    o.init_noise = 0.0;
  }
  return o;
}

// RIA on both embedded models: on the Llama the RIA start was ahead of the identity on
// validation by 0.011 +- 0.003, on the ViT by 0.005 +- 0.009 (README, ablations).
std::string default_warm_start(const std::string&) { return "ria"; }

SiteScores site_scores(const std::vector<Site>& sites, const std::map<std::string, Tensor>& act_norms, Score score) {
  SiteScores out;
  for (const Site& s : sites)
    for (const std::string& name : s.consumer_names) {
      Tensor norms;
      if (score != Score::Magnitude) {
        auto it = act_norms.find(name + ".weight");
        NMPERM_CHECK(it != act_norms.end(), "score '{}' needs the activation norms of '{}.weight' (calibrate first)",
                     score_name(score), name);
        norms = it->second;
      }
      const Linear* l = s.consumers[out[s.name].size()];
      out[s.name].push_back(importance(l->weight.detach(), norms, score));
    }
  return out;
}

namespace {

Tensor stacked(const std::vector<Tensor>& scores) { return scores.size() == 1 ? scores[0] : cat(scores, 0); }

bool is_learned(const std::string& m) { return m == "permllm" || m == "learned"; }

}  // namespace

PruneResult prune_model(Model& model, const TrainData& data, const std::map<std::string, Tensor>& act_norms,
                        const PruneOptions& opt) {
  bool known = false;
  for (const char* const* m = kPermuteMethods; *m; ++m) known |= opt.method == *m;
  NMPERM_CHECK(known, "unknown permutation method '{}' (none, random, channel-swap, ria, permllm, learned)", opt.method);
  std::vector<Site> sites = permutation_sites(model);
  for (const Site& s : sites) opt.pattern.check_fits(s.channels, "site '" + s.name + "'");
  SiteScores scores = site_scores(sites, act_norms, opt.score);
  PruneResult r;
  auto t0 = std::chrono::steady_clock::now();
  // A search method on every site, each with its own seed.
  auto search_all = [&](const std::string& method) {
    std::map<std::string, Perm> perms;
    Progress bar(opt.progress);
    for (size_t i = 0; i < sites.size(); ++i) {
      SearchOptions so = opt.search;
      so.seed = opt.seed * 1000 + i;
      perms[sites[i].name] = search_permutation(method, stacked(scores[sites[i].name]), opt.pattern, so);
      bar.show(fmt::format("  {}: site {}/{}  ETA {}", method, i + 1, sites.size(),
                           bar.eta(double(i + 1), double(sites.size()))),
               i + 1 == sites.size());
    }
    return perms;
  };
  if (is_learned(opt.method)) {
    std::map<std::string, Perm> warm;
    if (opt.warm_start != "none") {
      NMPERM_CHECK(!is_learned(opt.warm_start), "--warm-start must be a search method, got '{}'", opt.warm_start);
      warm = search_all(opt.warm_start);
    }
    LearnOptions lo = opt.learn;
    lo.seed = opt.seed;
    lo.progress = opt.progress;
    r.learn = learn_permutations(model, sites, scores, opt.pattern, data, lo, warm);
    r.perms = r.learn.perms;
  } else {
    r.perms = search_all(opt.method);
  }
  r.search_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Prune in the original channel order with the back-mapped masks, then permute.
  NoGradGuard ng;
  int64_t layers = 0;
  for (Site& s : sites) {
    const Perm& p = r.perms.at(s.name);
    Device d = model.device();
    Tensor pt = from_vector(p, {int64_t(p.size())}).to(d);
    Tensor inv = from_vector(inverse_permutation(p), {int64_t(p.size())}).to(d);
    for (size_t c = 0; c < s.consumers.size(); ++c) {
      const Tensor& sc = scores[s.name][c];
      Tensor mask = index_select(nm_mask(index_select(sc, 1, pt), opt.pattern), 1, inv);
      Linear* l = s.consumers[c];
      l->weight.copy_from(mul(l->weight, mask));
      json layer = {{"layer", s.consumer_names[c]},
                    {"site", s.name},
                    {"kept", kept_fraction(sc, mask)},
                    {"kept_identity", kept_fraction(sc, identity_perm(s.channels), opt.pattern)},
                    {"kept_unstructured", kept_fraction(sc, unstructured_mask(sc, opt.pattern))}};
      r.mean_kept += layer["kept"].get<double>();
      r.mean_kept_identity += layer["kept_identity"].get<double>();
      r.mean_kept_bound += layer["kept_unstructured"].get<double>();
      r.layers.push_back(layer);
      ++layers;
    }
    bool folded = apply_permutation(s, p);
    r.sites.push_back({{"site", s.name}, {"channels", s.channels}, {"deployment", folded ? "folded" : "gathered"}});
  }
  // The sparsity sanity check, on the weights as they are stored now.
  size_t li = 0;
  int64_t zeros_all = 0, total = 0;
  for (Site& s : sites)
    for (Linear* l : s.consumers) {
      Sparsity sp = measure_sparsity(l->weight, opt.pattern);
      r.layers[li]["zeros"] = double(sp.zeros) / double(sp.total);
      r.layers[li++]["nm_violations"] = sp.violations;
      zeros_all += sp.zeros, total += sp.total, r.nm_violations += sp.violations;
    }
  r.sparsity = double(zeros_all) / double(total);
  r.mean_kept /= double(layers);
  r.mean_kept_identity /= double(layers);
  r.mean_kept_bound /= double(layers);
  return r;
}

}  // namespace nmperm

// Pruning a whole model to N:M with one permutation method:
//   1. scores of every consumer layer of every site (magnitude, Wanda or RIA; the
//      activation norms come from calibration of the dense model);
//   2. one permutation per site from the method (search methods see the scores of all
//      the site's consumers stacked row-wise; learned methods train on data);
//   3. per consumer, the N:M mask of the permuted scores, mapped back to the original
//      channels, zeroes the weight; then the permutation is applied (folded or gathered,
//      permute/sites.h), so the saved weights have their N:M structure on consecutive
//      channels.
// Pruned layers: q, k, v, attention output and both MLP layers of every block; patch
// embedding, classifier and lm_head stay dense (as in Wanda and RIA).
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "permute/learned.h"
#include "permute/methods.h"

namespace nmperm {

struct PruneOptions {
  NMPattern pattern;
  Score score = Score::Wanda;
  std::string method = "none";
  uint64_t seed = 0;
  SearchOptions search;  // channel-swap, ria
  LearnOptions learn;    // permllm, learned (see learn_defaults)
  std::string warm_start = "none";  // learned: the method whose permutation starts training
  bool progress = true;
};

// Settings of the learned methods: "permllm" (PermLLM's published code, see prune.cpp)
// or "learned" (the LearnOptions defaults).
LearnOptions learn_defaults(const std::string& method);
// The search method whose permutation the learned costs start from by default.
std::string default_warm_start();

struct PruneResult {
  std::map<std::string, Perm> perms;  // by site
  nlohmann::json layers = nlohmann::json::array();  // per consumer: kept fractions, fraction of zeros
  nlohmann::json sites = nlohmann::json::array();   // per site: folded or gathered, groups
  double mean_kept = 0, mean_kept_identity = 0, mean_kept_bound = 0;
  // Measured on the pruned model's weights as stored (permuted order): zeros over all
  // pruned layers, and runs of M inputs keeping more than N (must be 0).
  double sparsity = 0;
  int64_t nm_violations = 0;
  int64_t zero_weights = 0, pruned_weights = 0;  // the counts behind sparsity
  double search_seconds = 0;
  LearnResult learn;  // learned methods only
};

// Scores of every site's consumers; act_norms by weight name ("<layer>.weight").
SiteScores site_scores(const std::vector<Site>& sites, const std::map<std::string, Tensor>& act_norms, Score score);

// The pieces of prune_model, which block-by-block pruning (permute/blockwise.h) runs one
// block's sites at a time.
// A search method's permutation of every site; sites[0] is site number first_site of the
// model's total_sites (0: just these), which fixes each site's seed and the progress line.
std::map<std::string, Perm> search_sites(const std::string& method, const std::vector<Site>& sites,
                                         const SiteScores& scores, const PruneOptions& opt, size_t first_site = 0,
                                         size_t total_sites = 0);
// Masks every consumer of `sites` to N:M under its site's permutation, applies the
// permutations, and adds the layers' and sites' records and sparsity counts to r.
void prune_sites(std::vector<Site>& sites, const SiteScores& scores, const std::map<std::string, Perm>& perms,
                 const PruneOptions& opt, PruneResult& r);
void finish_result(PruneResult& r);  // the means and the sparsity from the records

// Finds the permutations (data: training data for the learned methods), prunes and
// permutes `model` in place.
PruneResult prune_model(Model& model, const TrainData& data, const std::map<std::string, Tensor>& act_norms,
                        const PruneOptions& opt);

}  // namespace nmperm

// Learned permutations: the learnable-cost method (Li et al., AAAI 2026) and PermLLM
// (Zou et al., NeurIPS 2025) share one trainer; they differ in objective and settings.
//
// Per site and per group g of B channels (block-diagonal permutations), a learnable
// cost C_g (B, B), C_g[i, j] = cost of putting channel i at position j.
//   soft  P~_g = Sinkhorn(-C_g / eps)             (log domain, eps annealed geometrically)
//   hard  P_g  = argmin_P <C_g, P>                (exact assignment solver)
//   S'   = S P      the importance scores permuted, with the forward value of the hard P
//                   and the gradient of P~ (straight-through)
//   mask = top-N of every M of S' (hard) with the gradient of N * softmax(S' / (tau * mean S))
//          within the group (the mean is detached: score scales differ between layers)
//   W_eff = W * (mask P^T)     the weights masked in their own order (gradient = mask, the
//          default); gradient = full computes the same value as (W P * mask) P^T and
//          also sends P~ the gradient of W P
// The model runs with W_eff in place of every consumer's weight; only the costs train
// (AdamW), the weights stay frozen. Objectives:
//   task          end to end: cross-entropy of the pruned model + alpha * mean over blocks
//                 of |pruned block output - dense|^2 / |dense|^2                (learned)
//   block         block by block: Smooth-L1 between the pruned and the dense output of
//                 one block given the dense input, blocks trained in order
//   layer-cosine  per layer: 1 - cos(x W^T, x W_eff^T) over rows, x the dense input of
//                 that layer
//   output-cosine 1 - cos(pruned, dense) of the last block's output per token, all
//                 blocks jointly (PermLLM's code)                               (permllm)
// The hard permutations are scored on held-out training data (spread over the training
// split; never validation or test) at the start and every eval_every steps, and the best
// ones are kept, not the last. One loop (train_costs in learned.cpp) trains every method.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/train.h"
#include "permute/sites.h"

namespace nmperm {

// What the costs are trained against (see the top of this file).
enum class Objective { Task, Block, LayerCosine, OutputCosine };
// How P~ is parameterised: costs C (P~ = Sinkhorn(-C / eps)) or PermLLM's scaled logits.
enum class CostParam { Cost, Logits };
enum class Anneal { Geometric, Linear };  // of the Sinkhorn epsilon
// Where the straight-through gradient reaches P~: through the mask only, or also through W P.
enum class PermGradient { Mask, Full };
// Their names in options and reports ("task", "layer-cosine", ...); parse_* fail naming
// the choices.
const char* name_of(Objective v);
const char* name_of(CostParam v);
const char* name_of(Anneal v);
const char* name_of(PermGradient v);
Objective parse_objective(const std::string& s);
CostParam parse_cost_param(const std::string& s);
Anneal parse_anneal(const std::string& s);
PermGradient parse_gradient(const std::string& s);

struct LearnOptions {
  Objective objective = Objective::Task;
  int64_t groups = 4;              // G groups per site, reduced when G does not fit the channels
  int64_t block_size = 0;          // channels per group instead of a group count (PermLLM: 64)
  int64_t steps = 300;             // per block in block mode
  int64_t batch = 0;               // 0: 128 images or 16 token windows
  double lr = 0.1, weight_decay = 0.0;
  int64_t sinkhorn_iters = 20;
  double eps_start = 1.0, eps_end = 0.05;
  double alpha = 1.0;   // task objective: weight of the distillation term (relative squared error per block)
  double task_weight = 1.0;  // task objective: weight of the cross-entropy (0: distillation only)
  double mask_temperature = 1.0;  // tau of the soft mask
  bool harden_soft = false;       // hard permutation by assignment on P~ (PermLLM) instead of on C
  double init_scale = 1.0;        // initial cost: -init_scale at the warm-start permutation
  double init_noise = 0.01;       // plus this much Gaussian noise
  int64_t eval_every = 25;
  PermGradient gradient = PermGradient::Mask;
  // Cost: P~ = Sinkhorn(-C / eps) of a learned cost C; Logits (PermLLM's code): P~ =
  // Sinkhorn(clamp(L * s, -1, 1) / eps) of learned logits L, uniform in +-1/sqrt(B) at
  // the start, and a learned scale s per site starting at sqrt(B) (the clamp passes its
  // gradient straight through); the hard permutation is then the assignment on P~.
  CostParam param = CostParam::Cost;
  Anneal anneal = Anneal::Geometric;  // eps from eps_start to eps_end
  bool raw_mask_scores = false;      // soft mask softmax(S P) of the raw scores (PermLLM), not S P / mean S
  int64_t holdout = 0;  // held-out images (ViT) or windows (Llama); 0: 1024 images or 128 windows (block by block: a quarter of the calibration windows)
  uint64_t seed = 0;
  bool progress = true;
  nlohmann::json to_json() const;
};

// Straight-through ops (value from the hard permutation, gradient of the soft one).
// x (R, G * B), perm (G * B) i64 block-diagonal (perm[j] in j's group), soft (G, B, B):
//   inverse = false: value x[:, perm],          gradient as for x @ blockdiag(soft)
//   inverse = true:  value y with y[:, perm] = x, gradient as for x @ blockdiag(soft)^T
Tensor permute_channels_ste(const Tensor& x, const Tensor& perm, const Tensor& soft, bool inverse);
// Value of `hard`, gradient passed unchanged to `soft` (same shape).
Tensor straight_through(const Tensor& hard, const Tensor& soft);
// The hard permutation of G blocks (G, B, B) by exact assignment: minimising costs, or
// maximising soft permutation matrices. Position j of the result holds channel p[j].
Perm assignment_permutation(const Tensor& blocks, bool maximize);
// W_eff = (W P * mask(S P)) P^T = W * (mask(S P) P^T) for one consumer: W (out, in),
// scores S like W, hard p; with soft = P~ (G, B, B) the straight-through paths are
// recorded, the soft mask being N * softmax(S P / score_scale) within each group of M.
// mask_only: P~ gets gradient only through the mask (the weights stay in their own order,
// as in PermLLM); else also through W P, the derivative of blending weight columns across
// channels, which no permutation can realise. Without soft: the pruned weight.
Tensor effective_weight(const Tensor& w, const Tensor& scores, const Perm& hard, const Tensor& soft,
                        NMPattern pattern, double score_scale, bool mask_only);
// Mean Smooth-L1 (Huber with beta 1) distance.
Tensor smooth_l1(const Tensor& a, const Tensor& b);

// Scores of every consumer of every site, keyed by site name, in consumer order.
using SiteScores = std::map<std::string, std::vector<Tensor>>;

struct LearnResult {
  std::map<std::string, Perm> perms;  // the best hard permutations seen
  int64_t best_step = 0;
  double best_holdout = 0, start_holdout = 0;
  nlohmann::json curve = nlohmann::json::array();  // {step, loss, eps, [holdout, kept]}
  Tensor soft_block;  // (B, B) P~ of the first site's first group after the last step
  double seconds = 0;
};

// Learns permutations for `sites` of `model` (weights unchanged on return). warm: a
// starting permutation per site (identity where absent); the costs then learn a
// block-diagonal refinement q applied after it, and the site's permutation is warm[q].
LearnResult learn_permutations(Model& model, std::vector<Site>& sites, const SiteScores& scores, NMPattern pattern,
                               const TrainData& data, const LearnOptions& opt,
                               const std::map<std::string, Perm>& warm = {});

// Learns permutations for the sites of block `block` alone (block-by-block pruning,
// permute/blockwise.h), from the block's input states `inputs` (N windows, T, hidden): a
// holdout of them (LearnOptions::holdout windows, spread evenly; 0: a quarter) scores the
// hard permutations, the rest make the learning batches. The objective is the block's own:
// block (Smooth-L1 between the block's output with W_eff and the dense block's output on
// the same input) or layer-cosine; the others need the whole model and are refused.
LearnResult learn_block_permutations(Model& model, size_t block, std::vector<Site>& sites, const SiteScores& scores,
                                     NMPattern pattern, const Tensor& inputs, const LearnOptions& opt,
                                     const std::map<std::string, Perm>& warm = {});

// One matrix without a model or data (nmperm permute-matrix): the costs learn against
// the expected output error of the pruned matrix for inputs whose channels have the
// norms `act_norms` (all ones when undefined) and are uncorrelated, so only the weights
// and the norms are needed. With a_j the norm of input j:
//   objective task/block (learned):   sum_ij a_j^2 (W - W_eff)_ij^2 / sum_ij a_j^2 W_ij^2
//   objective layer-cosine (permllm): mean over outputs i of 1 - cos_i, cos_i the cosine
//     between the dense and pruned outputs of neuron i, sum_j a_j^2 W_ij W_eff,ij over
//     the product of the norms
// The best hard permutation by that objective is kept (best_holdout; perms[name]).
LearnResult learn_matrix_permutation(const std::string& name, const Tensor& weight, const Tensor& act_norms,
                                     const Tensor& scores, NMPattern pattern, const LearnOptions& opt,
                                     const Perm& warm = {});
// Groups actually used for a site of `channels` inputs (see LearnOptions::groups/block_size).
int64_t site_groups(int64_t channels, const LearnOptions& opt, NMPattern pattern);

}  // namespace nmperm

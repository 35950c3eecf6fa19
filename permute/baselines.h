// Permutation baselines for one weight matrix, searched on its importance scores S (out, in).
// A permutation p of the input channels gives W' = W[:, p]; the N:M mask is taken on
// S[:, p]. All methods maximise the kept score sum(S[:, p] * mask) and return p.
//   none          identity
//   random        a seeded random permutation (the control)
//   channel-swap  greedy swaps of two channels between groups that raise the kept score,
//                 with a bounded number of random escapes from local optima, keeping the
//                 best permutation seen (Pool & Yu 2021, NVIDIA Apex ASP); on wide layers
//                 each sweep tries the pairs within windows of groups, like Apex's stripe
//                 groups, since all pairs cost O(in^2 * out) per sweep
//   ria           RIA's channel reallocation (channels sorted by total score, dealt to
//                 the groups in turn) followed by per-position linear sum assignment of
//                 channels to groups, iterated (Zhang et al. 2024)
#pragma once
#include <string>
#include <vector>

#include "permute/nm.h"

namespace nmperm {

struct SearchOptions {
  uint64_t seed = 0;
  int64_t max_sweeps = 100;  // channel-swap: improving sweeps; ria: assignment rounds
  int64_t escapes = 20;      // channel-swap: random perturbations after a local optimum
  int64_t window = 64;       // channel-swap: with more groups, pairs only within windows of this
                             // many groups (reshuffled every sweep); 0 = all pairs
  int64_t ria_cache_bytes = int64_t(2) << 30;  // ria: memory for hinge sums kept from round to
                                               // round (same result; 0 recomputes them all)
};

using Perm = std::vector<int64_t>;

Perm identity_perm(int64_t n);
Perm random_perm(int64_t n, uint64_t seed);
Perm channel_swap(const Tensor& scores, NMPattern pattern, const SearchOptions& opt);
Perm ria_permutation(const Tensor& scores, NMPattern pattern, const SearchOptions& opt);
Perm search_permutation(const std::string& method, const Tensor& scores, NMPattern pattern, const SearchOptions& opt);

// Kept fraction of sum(S) when the N:M mask is taken after permuting by p.
double kept_fraction(const Tensor& scores, const Perm& p, NMPattern pattern);

}  // namespace nmperm

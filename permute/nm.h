// Importance scores and N:M masks along the input dimension of a linear weight W (out, in).
//   magnitude: |W|
//   Wanda:     |W| * ||X_j||_2                      (Sun et al. 2024)
//   RIA:       (|W| / rowsum|W| + |W| / colsum|W|) * ||X_j||_2^0.5   (Zhang et al. 2024)
// ||X_j|| is the per-input-channel activation norm from calibration.
// An N:M mask keeps the N highest scores in every run of M consecutive input channels of
// every row; ties keep the lower index.
#pragma once
#include <string>

#include "core/tensor.h"

namespace nmperm {

enum class Score { Magnitude, Wanda, RIA };
Score parse_score(const std::string& name);  // "magnitude", "wanda", "ria"
const char* score_name(Score s);

struct NMPattern {
  int64_t n = 2, m = 4;
  static NMPattern parse(const std::string& text);  // "2:4"
  void check_fits(int64_t in_channels, const std::string& what) const;
};

// (out, in) f32 scores; act_norms (in) is required for Wanda and RIA.
Tensor importance(const Tensor& weight, const Tensor& act_norms, Score score);
// 0/1 f32 mask (out, in) keeping N of every M consecutive inputs per row.
Tensor nm_mask(const Tensor& scores, NMPattern pattern);
// The sparsity check of a stored weight (out, in): how many of its values are zero, and how
// many runs of M consecutive inputs (per row) keep more than N non-zeros.
struct Sparsity {
  int64_t zeros = 0, total = 0, violations = 0;
};
Sparsity measure_sparsity(const Tensor& weight, NMPattern pattern);
// Per-row unstructured mask at the same density N/M: the upper bound any permutation can reach.
Tensor unstructured_mask(const Tensor& scores, NMPattern pattern);
// sum(scores * mask) / sum(scores): the fraction of importance a mask keeps.
double kept_fraction(const Tensor& scores, const Tensor& mask);

}  // namespace nmperm

// Linear assignment: a permutation p minimising sum_i cost[i, p[i]] over a dense square
// cost matrix, exactly, by shortest augmenting paths with dual potentials (the
// Jonker-Volgenant / Hungarian family, O(n^3) worst case, float64 accumulation).
// Ties are broken deterministically (lowest column index first).
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace nmperm {

// cost: n x n row-major. Returns p with p[row] = assigned column.
std::vector<int64_t> linear_assignment(const double* cost, int64_t n, bool maximize = false);
std::vector<int64_t> linear_assignment(const Tensor& cost, bool maximize = false);  // (n, n), any float dtype
// Many independent (n, n) problems, (G, n, n) -> (G, n) i64, solved on all threads.
Tensor linear_assignment_batched(const Tensor& costs, bool maximize = false);
double assignment_cost(const double* cost, int64_t n, const std::vector<int64_t>& p);

}  // namespace nmperm

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
// row_duals, when given, returns the solve's row potentials (of the minimisation; with
// maximize, of the negated costs); when it comes in holding n finite ones, from an earlier
// solve with the same maximize and its rows in this problem's order, the solve starts from
// them instead of a row reduction, and every column whose costs did not change goes back to
// the row it had. A problem that differs from the earlier one in a few columns then needs
// only a few augmenting paths. The result is an optimum either way (among equal optima,
// which one may differ).
std::vector<int64_t> linear_assignment(const double* cost, int64_t n, bool maximize = false,
                                       std::vector<double>* row_duals = nullptr);
std::vector<int64_t> linear_assignment(const Tensor& cost, bool maximize = false);  // (n, n), any float dtype
// Many independent (n, n) problems, (G, n, n) -> (G, n) i64, solved on all threads.
Tensor linear_assignment_batched(const Tensor& costs, bool maximize = false);
double assignment_cost(const double* cost, int64_t n, const std::vector<int64_t>& p);

}  // namespace nmperm

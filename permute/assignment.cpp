#include "permute/assignment.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace nmperm {

namespace {

// Jonker and Volgenant's augmenting row reduction, two passes: every free row takes the
// column where its reduced cost a[i][j] - v[j] is lowest and lowers that column's v by the
// gap to its second lowest, so it keeps the column against any later bid by less; the
// row it displaces bids next (at once when it lost by a gap, later on a tie). Each
// matched row stays at a column of lowest reduced cost (v only falls on the column just
// taken), which is all the augmenting phase needs, and most rows that column reduction
// left free end up matched for O(n) each instead of a shortest-path search.
void augmenting_row_reduction(const double* a, int64_t n, std::vector<double>& v, std::vector<int64_t>& row_of,
                              std::vector<int64_t>& col_of) {
  if (n < 2) return;
  const double kInf = std::numeric_limits<double>::infinity();
  std::vector<int64_t> free_rows;
  for (int64_t i = 0; i < n; ++i)
    if (col_of[size_t(i)] < 0) free_rows.push_back(i);
  int64_t steps = 0;
  for (int pass = 0; pass < 2; ++pass) {
    const int64_t before = int64_t(free_rows.size());
    int64_t k = 0, kept = 0;  // free_rows[0..kept): still free after this pass
    while (k < before) {
      const int64_t i = free_rows[size_t(k++)];
      const double* row = a + i * n;
      double lo = kInf, second = kInf;
      int64_t j1 = -1, j2 = -1;
      for (int64_t j = 0; j < n; ++j) {
        const double h = row[j] - v[size_t(j)];
        if (h < second) {
          if (h >= lo) {
            second = h, j2 = j;
          } else {
            second = lo, j2 = j1;
            lo = h, j1 = j;
          }
        }
      }
      int64_t displaced = row_of[size_t(j1)];
      const bool gap = lo < second;
      if (gap) {
        v[size_t(j1)] -= second - lo;
      } else if (displaced >= 0) {  // a tie: take the second column, which may be free
        j1 = j2;
        displaced = row_of[size_t(j1)];
      }
      row_of[size_t(j1)] = i;
      col_of[size_t(i)] = j1;
      if (displaced < 0) continue;
      col_of[size_t(displaced)] = -1;
      // The displaced row bids at once after a gap (a bounded number of times, so a chain of
      // tiny gaps cannot run long), else after the others.
      if (gap && ++steps < 8 * n) free_rows[size_t(--k)] = displaced;
      else free_rows[size_t(kept++)] = displaced;
    }
    free_rows.resize(size_t(kept));
    if (free_rows.empty()) break;
  }
}

void column_reduction(const double* a, int64_t n, const std::vector<double>& u, std::vector<double>& v,
                      std::vector<int64_t>& row_of, std::vector<int64_t>& col_of) {
  // Column reduction (Jonker and Volgenant 1987) against row potentials u: v[j] = the
  // smallest a[i][j] - u[i] in column j, and the column goes to that row if the row is still
  // free. Every reduced cost a - u - v is then >= 0 and those pairs cost 0, so the
  // augmenting phase starts from a feasible dual with many rows already matched. With u
  // from a row reduction (u[i] = the smallest cost in row i) that is about 1 - 1/e of them
  // on random costs, and as many when rows differ by large offsets (one channel better than
  // another everywhere, as in RIA's gains), where column minima alone would crowd onto the
  // few best rows. With u from an earlier solve of a nearby problem, every column whose
  // costs did not change goes back to the row it had. Rows are read in order, so the pass
  // streams through memory.
  const size_t N = static_cast<size_t>(n);
  std::vector<int64_t> argmin(N, 0);
  for (size_t j = 0; j < N; ++j) v[j] = a[j] - u[0];
  for (int64_t i = 1; i < n; ++i) {
    const double* row = a + i * n;
    const double ui = u[size_t(i)];
    for (size_t j = 0; j < N; ++j)
      if (row[j] - ui < v[j]) {
        v[j] = row[j] - ui;
        argmin[j] = i;
      }
  }
  for (size_t j = N; j-- > 0;)
    if (col_of[size_t(argmin[j])] < 0) {
      col_of[size_t(argmin[j])] = int64_t(j);
      row_of[j] = argmin[j];
    }
}

}  // namespace

std::vector<int64_t> linear_assignment(const double* a, int64_t n, bool maximize, std::vector<double>* row_duals) {
  // Shortest augmenting paths with dual potentials u (rows) and v (columns) (the
  // Jonker-Volgenant family, in the form Crouse 2016 describes): each new row grows a
  // Dijkstra tree over reduced costs a[i][j] - u[i] - v[j] >= 0, scanning only the columns
  // not yet in the tree, until it reaches a free column; potentials are updated once per
  // row from the path lengths, then the path is flipped. Only the rows that the
  // reductions below leave free need a path.
  const double kInf = std::numeric_limits<double>::infinity();
  for (int64_t k = 0; k < n * n; ++k)
    NMPERM_CHECK(std::isfinite(a[k]), "linear_assignment: cost[{}, {}] is {}", k / n, k % n, a[k]);
  std::vector<double> negated;
  if (maximize) {  // maximise by minimising -cost (a copy keeps the inner loop a plain read)
    negated.assign(a, a + n * n);
    for (double& x : negated) x = -x;
    a = negated.data();
  }
  const size_t N = static_cast<size_t>(n);
  std::vector<double> u(N, 0.0), v(N, 0.0), dist(N);
  std::vector<int64_t> row_of(N, -1), col_of(N, -1), path(N, -1), remaining(N);
  std::vector<char> in_tree_row(N), in_tree_col(N);
  const bool warm = row_duals && row_duals->size() == N &&
                    std::all_of(row_duals->begin(), row_duals->end(), [](double x) { return std::isfinite(x); });
  if (warm) u = *row_duals;
  else
    for (size_t i = 0; i < N; ++i) u[i] = *std::min_element(a + i * N, a + (i + 1) * N);
  column_reduction(a, n, u, v, row_of, col_of);
  augmenting_row_reduction(a, n, v, row_of, col_of);
  // Row potentials for the augmenting phase: u[i] = min_j a[i][j] - v[j], so every reduced
  // cost a - u - v is >= 0, and 0 on the pairs matched so far.
  for (int64_t i = 0; i < n; ++i) {
    const double* row = a + i * n;
    double lo = kInf;
    for (size_t j = 0; j < N; ++j) lo = std::min(lo, row[j] - v[j]);
    u[size_t(i)] = lo;
  }
  for (int64_t cur = 0; cur < n; ++cur) {
    if (col_of[size_t(cur)] >= 0) continue;
    std::fill(dist.begin(), dist.end(), kInf);
    std::fill(in_tree_row.begin(), in_tree_row.end(), 0);
    std::fill(in_tree_col.begin(), in_tree_col.end(), 0);
    int64_t left = n;
    for (int64_t k = 0; k < n; ++k) remaining[size_t(k)] = n - 1 - k;
    double min_val = 0;
    int64_t i = cur, sink = -1;
    while (sink < 0) {
      in_tree_row[size_t(i)] = 1;
      const double* row = a + i * n;
      const double base = min_val - u[size_t(i)];
      const int64_t* rem = remaining.data();
      const double* vp = v.data();
      const int64_t* rowp = row_of.data();
      double* dp = dist.data();
      int64_t* pp = path.data();
      double lowest = kInf;
      int64_t pick = -1;
      for (int64_t k = 0; k < left; ++k) {
        int64_t j = rem[k];
        double r = base + row[j] - vp[j], d = dp[j];
        if (r < d) {
          pp[j] = i;
          dp[j] = d = r;
        }
        // Ties prefer a free column: the path ends there.
        if (d < lowest || (d == lowest && rowp[j] < 0)) {
          lowest = d;
          pick = k;
        }
      }
      min_val = lowest;
      int64_t j = remaining[size_t(pick)];
      if (row_of[size_t(j)] < 0) sink = j;
      else i = row_of[size_t(j)];
      in_tree_col[size_t(j)] = 1;
      remaining[size_t(pick)] = remaining[size_t(--left)];
    }
    u[size_t(cur)] += min_val;
    for (int64_t r = 0; r < n; ++r)
      if (in_tree_row[size_t(r)] && r != cur) u[size_t(r)] += min_val - dist[size_t(col_of[size_t(r)])];
    for (int64_t c = 0; c < n; ++c)
      if (in_tree_col[size_t(c)]) v[size_t(c)] -= min_val - dist[size_t(c)];
    for (int64_t j = sink;;) {  // flip the path
      int64_t r = path[size_t(j)];
      row_of[size_t(j)] = r;
      std::swap(col_of[size_t(r)], j);
      if (r == cur) break;
    }
  }
  if (row_duals) *row_duals = std::move(u);
  return col_of;
}

std::vector<int64_t> linear_assignment(const Tensor& cost, bool maximize) {
  NMPERM_CHECK(cost.ndim() == 2 && cost.shape(0) == cost.shape(1) && is_floating(cost.dtype()),
               "linear_assignment: cost must be a square floating matrix, got {}", describe(cost));
  Tensor c = cost.to(DType::F64).contiguous();
  return linear_assignment(c.data<double>(), c.shape(0), maximize);
}

Tensor linear_assignment_batched(const Tensor& costs, bool maximize) {
  NMPERM_CHECK(costs.ndim() == 3 && costs.shape(1) == costs.shape(2) && is_floating(costs.dtype()),
               "linear_assignment_batched: costs must be (G, n, n), got {}", describe(costs));
  Tensor c = costs.to(DType::F64).contiguous();
  int64_t G = c.shape(0), n = c.shape(1);
  const double* all = c.data<double>();
  for (int64_t k = 0; k < c.numel(); ++k)  // checked here: an exception may not leave the parallel loop
    NMPERM_CHECK(std::isfinite(all[k]), "linear_assignment_batched: block {} has a non-finite cost {}", k / (n * n),
                 all[k]);
  Tensor out = Tensor::empty({G, n}, DType::I64);
  const double* cp = c.data<double>();
  int64_t* op = out.data<int64_t>();
#pragma omp parallel for schedule(dynamic)
  for (int64_t g = 0; g < G; ++g) {
    std::vector<int64_t> p = linear_assignment(cp + g * n * n, n, maximize);
    std::copy(p.begin(), p.end(), op + g * n);
  }
  return out;
}

double assignment_cost(const double* cost, int64_t n, const std::vector<int64_t>& p) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += cost[i * n + p[size_t(i)]];
  return s;
}

}  // namespace nmperm

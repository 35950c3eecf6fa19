#include "permute/assignment.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace nmperm {

std::vector<int64_t> linear_assignment(const double* a, int64_t n, bool maximize) {
  // Shortest augmenting paths with dual potentials u (rows) and v (columns) (the
  // Jonker-Volgenant family, in the form Crouse 2016 describes): each new row grows a
  // Dijkstra tree over reduced costs a[i][j] - u[i] - v[j] >= 0, scanning only the columns
  // not yet in the tree, until it reaches a free column; potentials are updated once per
  // row from the path lengths, then the path is flipped. Only the rows that column
  // reduction leaves free need a path.
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
  // Column reduction (Jonker and Volgenant 1987): v[j] = the smallest cost in column j, and
  // the column goes to that row if the row is still free. With u = 0 every reduced cost is
  // then >= 0 and those pairs cost 0, so the augmenting phase starts from a feasible dual
  // with most rows (about 1 - 1/e of them on random costs) already matched. Rows are read
  // in order, so the column minima stream through memory.
  std::vector<int64_t> argmin(N, 0);
  std::copy(a, a + n, v.begin());
  for (int64_t i = 1; i < n; ++i) {
    const double* row = a + i * n;
    for (size_t j = 0; j < N; ++j)
      if (row[j] < v[j]) {
        v[j] = row[j];
        argmin[j] = i;
      }
  }
  for (size_t j = N; j-- > 0;)
    if (col_of[size_t(argmin[j])] < 0) {
      col_of[size_t(argmin[j])] = int64_t(j);
      row_of[j] = argmin[j];
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

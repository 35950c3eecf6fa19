#include "permute/assignment.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace nmperm {

std::vector<int64_t> linear_assignment(const double* a, int64_t n, bool maximize) {
  // Rows 1..n and columns 1..n (index 0 is the virtual start column), potentials u, v;
  // match[j] = row assigned to column j. For each new row, Dijkstra over reduced costs
  // a[i][j] - u[i] - v[j] >= 0 finds the cheapest augmenting path.
  const double kInf = std::numeric_limits<double>::infinity();
  const double sign = maximize ? -1.0 : 1.0;
  for (int64_t k = 0; k < n * n; ++k)
    NMPERM_CHECK(std::isfinite(a[k]), "linear_assignment: cost[{}, {}] is {}", k / n, k % n, a[k]);
  std::vector<double> u(size_t(n + 1), 0.0), v(size_t(n + 1), 0.0), minv(size_t(n + 1));
  std::vector<int64_t> match(size_t(n + 1), 0), way(size_t(n + 1), 0);
  std::vector<char> used(size_t(n + 1));
  for (int64_t i = 1; i <= n; ++i) {
    match[0] = i;
    int64_t j0 = 0;
    std::fill(minv.begin(), minv.end(), kInf);
    std::fill(used.begin(), used.end(), 0);
    do {
      used[size_t(j0)] = 1;
      int64_t i0 = match[size_t(j0)], j1 = 0;
      double delta = kInf, ui = u[size_t(i0)];
      const double* row = a + (i0 - 1) * n;
      for (int64_t j = 1; j <= n; ++j) {
        if (used[size_t(j)]) continue;
        double cur = sign * row[j - 1] - ui - v[size_t(j)];
        if (cur < minv[size_t(j)]) {
          minv[size_t(j)] = cur;
          way[size_t(j)] = j0;
        }
        if (minv[size_t(j)] < delta) {
          delta = minv[size_t(j)];
          j1 = j;
        }
      }
      for (int64_t j = 0; j <= n; ++j) {
        if (used[size_t(j)]) {
          u[size_t(match[size_t(j)])] += delta;
          v[size_t(j)] -= delta;
        } else {
          minv[size_t(j)] -= delta;
        }
      }
      j0 = j1;
    } while (match[size_t(j0)] != 0);
    do {  // augment along the path
      int64_t j1 = way[size_t(j0)];
      match[size_t(j0)] = match[size_t(j1)];
      j0 = j1;
    } while (j0);
  }
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t j = 1; j <= n; ++j) p[size_t(match[size_t(j)] - 1)] = j - 1;
  return p;
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

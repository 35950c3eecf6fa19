#include "kernels/topk.h"
#include "kernels/cpu/launchers.h"

#include <algorithm>
#include <numeric>
#include <vector>


namespace nmperm::kernels::cpu {

void topk(const Tensor& x, int64_t k, bool largest, Tensor& values, Tensor& indices) {
  int64_t R = x.shape(0), K = x.shape(1);
  NMPERM_CHECK(k >= 0 && k <= K, "topk: k = {} must lie in [0, {}]", k, K);
  dispatch_float(x.dtype(), [&]<class T>() {
    const T* xp = x.data<T>();
    T* vp = values.data<T>();
    int64_t* ip = indices.data<int64_t>();
    const bool descending = largest;  // a local of this lambda: clang 14 cannot capture `largest` in the omp region
#pragma omp parallel if (R * K > 16384)
    {
      std::vector<int64_t> order(static_cast<size_t>(K));
#pragma omp for
      for (int64_t r = 0; r < R; ++r) {
        const T* row = xp + r * K;
        std::iota(order.begin(), order.end(), 0);
        auto better = [&](int64_t a, int64_t b) {
          if (row[a] != row[b]) return descending ? row[a] > row[b] : row[a] < row[b];
          return a < b;
        };
        std::partial_sort(order.begin(), order.begin() + k, order.end(), better);
        for (int64_t j = 0; j < k; ++j) {
          ip[r * k + j] = order[size_t(j)];
          vp[r * k + j] = row[order[size_t(j)]];
        }
      }
    }
  });
}

}  // namespace nmperm::kernels::cpu

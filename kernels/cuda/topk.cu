// CUDA top-k along the last dim of a contiguous (R, K) tensor (kernels/topk.h): one
// thread per element counts the elements of its row that rank before it (larger, or
// equal with a lower index), and an element of rank < k writes itself to that slot.
// Ranks are distinct, so the result is the CPU kernel's exactly, with its tie rule.
// The cost is R * K^2 comparisons: cheap for the N:M groups (K = M) this serves; long
// rows are correct but slow.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace nmperm::kernels::cuda {

namespace {

template <class T>
__global__ void topk_kernel(const T* x, int64_t n, int64_t K, int64_t k, bool largest, T* values, int64_t* indices) {
  NMPERM_GRID_STRIDE(e, n) {
    int64_t r = e / K, j = e % K;
    const T* row = x + r * K;
    T v = row[j];
    int64_t rank = 0;
    for (int64_t i = 0; i < K && rank < k; ++i) {
      T u = row[i];
      bool before = u != v ? (largest ? u > v : u < v) : i < j;
      rank += before;
    }
    if (rank < k) {
      values[r * k + rank] = v;
      indices[r * k + rank] = j;
    }
  }
}

}  // namespace

void topk(const Tensor& x, int64_t k, bool largest, Tensor& values, Tensor& indices) {
  NMPERM_CHECK(x.ndim() == 2 && x.is_contiguous(), "topk: the CUDA kernel wants a contiguous (R, K) tensor, got {}",
               describe(x));
  int64_t R = x.shape(0), K = x.shape(1);
  NMPERM_CHECK(k >= 0 && k <= K, "topk: k = {} must lie in [0, {}]", k, K);
  NMPERM_CHECK(indices.dtype() == DType::I64 && values.dtype() == x.dtype(),
               "topk: values {} must have x's dtype and indices {} be i64", describe(values), describe(indices));
  int64_t n = R * K;
  if (n == 0 || k == 0) return;
  on_float(x.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    NMPERM_LAUNCH(grid_for(n), kThreads, 0, stream(), topk_kernel<T>)
        (x.data<T>(), n, K, k, largest, values.data<T>(), indices.data<int64_t>());
  });
  check_launch("topk");
}

}  // namespace nmperm::kernels::cuda

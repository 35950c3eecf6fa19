// CUDA indexing kernels on (outer, D, inner) views of contiguous tensors, as in
// kernels/index.h. Indices are range-checked on the device first (one small copy back
// names the first bad one). The adds are deterministic: each thread owns one output
// element and sums its contributions in index order, never with floating-point atomics;
// index_add (embedding backward) first sorts the positions by index value, so a row of
// a large vocabulary costs only the tokens that hit it.
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/index.h"
#include "kernels/cuda/launchers.h"

namespace nmperm::kernels::cuda {

namespace {

using Dims = IndexDims;

// first[0] = the lowest position whose index lies outside [0, limit) (n when none).
template <class I> __global__ void find_bad_index(const I* idx, int64_t n, int64_t limit, unsigned long long* first) {
  NMPERM_GRID_STRIDE(i, n) {
    if (idx[i] < 0 || int64_t(idx[i]) >= limit) atomicMin(first, (unsigned long long)i);
  }
}

template <class I> void check_range(const I* idx, int64_t n, int64_t limit, const char* op) {
  if (n == 0) return;
  Tensor flag = Tensor::empty({1}, DType::I64, Device::CUDA);
  auto* first = reinterpret_cast<unsigned long long*>(flag.data<int64_t>());
  unsigned long long none = (unsigned long long)n;
  NMPERM_CUDA_CHECK(cudaMemcpy(first, &none, sizeof none, cudaMemcpyHostToDevice));
  NMPERM_LAUNCH(grid_for(n), kThreads, 0, stream(), find_bad_index<I>)(idx, n, limit, first);
  check_launch(op);
  unsigned long long pos = 0;
  NMPERM_CUDA_CHECK(cudaMemcpy(&pos, first, sizeof pos, cudaMemcpyDeviceToHost));
  if (pos == none) return;
  I bad{};
  NMPERM_CUDA_CHECK(cudaMemcpy(&bad, idx + pos, sizeof bad, cudaMemcpyDeviceToHost));
  NMPERM_FAIL("{}: index {} out of range [0, {})", op, int64_t(bad), limit);
}

template <class T, class I>
__global__ void index_select_kernel(const T* x, const I* idx, T* out, int64_t n, int64_t D, int64_t n_idx,
                                    int64_t inner) {
  NMPERM_GRID_STRIDE(e, n) {
    int64_t k = e % inner, r = e / inner, i = r % n_idx, o = r / n_idx;
    out[e] = x[(o * D + int64_t(idx[i])) * inner + k];
  }
}

// One thread per output element (o, d, k): adds, in index order, src[o, i, k] for the
// positions i = pos[start[d]] ... pos[start[d + 1] - 1] that hold d.
template <class T>
__global__ void index_add_kernel(T* out, const int64_t* start, const int64_t* pos, const T* src, int64_t n, int64_t D,
                                 int64_t n_idx, int64_t inner) {
  NMPERM_GRID_STRIDE(e, n) {
    int64_t k = e % inner, r = e / inner, d = r % D, o = r / D;
    T acc = out[e];
    for (int64_t j = start[d]; j < start[d + 1]; ++j) acc += src[(o * n_idx + pos[j]) * inner + k];
    out[e] = acc;
  }
}

// The positions of each index value, in increasing order (a stable counting sort on the
// host): start (D + 1) and pos (n) as one i64 tensor on the GPU.
template <class I> Tensor positions_by_value(const I* idx, int64_t n, int64_t D) {
  std::vector<I> h(static_cast<size_t>(n));
  NMPERM_CUDA_CHECK(cudaMemcpy(h.data(), idx, size_t(n) * sizeof(I), cudaMemcpyDeviceToHost));
  std::vector<int64_t> csr(static_cast<size_t>(D + 1 + n), 0);
  for (I v : h) ++csr[size_t(v) + 1];
  for (int64_t d = 0; d < D; ++d) csr[size_t(d + 1)] += csr[size_t(d)];
  std::vector<int64_t> next(csr.begin(), csr.begin() + D);
  for (int64_t i = 0; i < n; ++i) csr[size_t(D + 1 + next[size_t(h[size_t(i)])]++)] = i;
  return upload(csr);
}

template <class T, class I>
__global__ void gather_kernel(const T* x, const I* idx, T* out, int64_t n, int64_t Dx, int64_t Di, int64_t inner_x,
                              int64_t inner) {
  NMPERM_GRID_STRIDE(e, n) {
    int64_t k = e % inner, o = e / inner / Di;
    out[e] = x[(o * Dx + int64_t(idx[e])) * inner_x + k];
  }
}

// One thread per output element (o, d, k): adds src[o, i, k] for every i with idx[o, i, k] == d.
template <class T, class I>
__global__ void scatter_add_kernel(T* out, const I* idx, const T* src, int64_t n, int64_t Do, int64_t Di,
                                   int64_t inner, int64_t inner_idx) {
  NMPERM_GRID_STRIDE(e, n) {
    int64_t k = e % inner, r = e / inner, d = r % Do, o = r / Do;
    if (k >= inner_idx) continue;
    T acc = out[e];
    for (int64_t i = 0; i < Di; ++i) {
      int64_t s = (o * Di + i) * inner_idx + k;
      if (int64_t(idx[s]) == d) acc += src[s];
    }
    out[e] = acc;
  }
}

void require_contiguous(const char* op, const Tensor& a, const Tensor& b, const Tensor& c) {
  NMPERM_CHECK(a.is_contiguous() && b.is_contiguous() && c.is_contiguous(),
               "{}: the CUDA kernel wants contiguous tensors, got {}, {}, {}", op, describe(a), describe(b),
               describe(c));
}

}  // namespace

void index_select(const Tensor& x, int64_t dim, const Tensor& idx, Tensor& out) {
  require_contiguous("index_select", x, idx, out);
  Dims dx = split_at(x.shape(), dim);
  int64_t n_idx = idx.numel(), n = out.numel();
  on_index(idx.dtype(), [&](auto I_tag) {
    using I = decltype(I_tag);
    check_range(idx.data<I>(), n_idx, dx.d, "index_select");
    if (n == 0) return;
    on_any(x.dtype(), [&](auto T_tag) {
      using T = decltype(T_tag);
      NMPERM_LAUNCH(grid_for(n), kThreads, 0, stream(), index_select_kernel<T, I>)
          (x.data<T>(), idx.data<I>(), out.data<T>(), n, dx.d, n_idx, dx.inner);
    });
  });
  check_launch("index_select");
}

void index_add(Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src) {
  require_contiguous("index_add", out, idx, src);
  Dims dd = split_at(out.shape(), dim);
  int64_t n_idx = idx.numel(), n = out.numel();
  on_index(idx.dtype(), [&](auto I_tag) {
    using I = decltype(I_tag);
    check_range(idx.data<I>(), n_idx, dd.d, "index_add");
    if (n == 0 || n_idx == 0) return;
    Tensor csr = positions_by_value(idx.data<I>(), n_idx, dd.d);
    const int64_t* start = csr.data<int64_t>();
    on_float(out.dtype(), [&](auto T_tag) {
      using T = decltype(T_tag);
      NMPERM_LAUNCH(grid_for(n), kThreads, 0, stream(), index_add_kernel<T>)
          (out.data<T>(), start, start + dd.d + 1, src.data<T>(), n, dd.d, n_idx, dd.inner);
    });
  });
  check_launch("index_add");
}

void gather(const Tensor& x, int64_t dim, const Tensor& idx, Tensor& out) {
  require_contiguous("gather", x, idx, out);
  Dims dx = split_at(x.shape(), dim), di = split_at(idx.shape(), dim);
  int64_t n = idx.numel();
  on_index(idx.dtype(), [&](auto I_tag) {
    using I = decltype(I_tag);
    check_range(idx.data<I>(), n, dx.d, "gather");
    if (n == 0) return;
    on_any(x.dtype(), [&](auto T_tag) {
      using T = decltype(T_tag);
      NMPERM_LAUNCH(grid_for(n), kThreads, 0, stream(), gather_kernel<T, I>)
          (x.data<T>(), idx.data<I>(), out.data<T>(), n, dx.d, di.d, dx.inner, di.inner);
    });
  });
  check_launch("gather");
}

void scatter_add(Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src) {
  require_contiguous("scatter_add", out, idx, src);
  Dims dd = split_at(out.shape(), dim), di = split_at(idx.shape(), dim);
  NMPERM_CHECK(di.outer == dd.outer && di.inner <= dd.inner,
               "scatter_add: the CUDA kernel wants idx {} to fit out {} outside dim {}", idx.shape(), out.shape(), dim);
  int64_t n = out.numel();
  on_index(idx.dtype(), [&](auto I_tag) {
    using I = decltype(I_tag);
    check_range(idx.data<I>(), idx.numel(), dd.d, "scatter_add");
    if (n == 0 || idx.numel() == 0) return;
    on_float(out.dtype(), [&](auto T_tag) {
      using T = decltype(T_tag);
      NMPERM_LAUNCH(grid_for(n), kThreads, 0, stream(), scatter_add_kernel<T, I>)
          (out.data<T>(), idx.data<I>(), src.data<T>(), n, dd.d, di.d, dd.inner, di.inner);
    });
  });
  check_launch("scatter_add");
}

}  // namespace nmperm::kernels::cuda

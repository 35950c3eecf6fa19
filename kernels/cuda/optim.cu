// CUDA AdamW, one fused launch for every parameter (moments, bias correction, decoupled
// decay and the update in one pass over a table of chunks), and the sum of squares behind
// global-norm clipping over many tensors, reduced in a fixed two-stage order so it is the
// same run to run.
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace nmperm::kernels::cuda {

namespace {

// One chunk of one parameter, pointers already at the chunk's first element.
template <class T> struct AdamWChunk {
  T* p;
  const T* g;
  T* m;
  T* v;
  int64_t n;
  T decay;
  T grad_scale;
};

// One block per chunk: every parameter of the model in one launch.
template <class T>
__global__ void adamw_kernel(const AdamWChunk<T>* chunks, T b1, T b2, T eps, T step_size, T inv_sqrt_bc2) {
  const AdamWChunk<T> c = chunks[blockIdx.x];
  for (int64_t i = threadIdx.x; i < c.n; i += blockDim.x) {
    T gi = c.g[i] * c.grad_scale;
    T mi = b1 * c.m[i] + (T(1) - b1) * gi;
    T vi = b2 * c.v[i] + (T(1) - b2) * gi * gi;
    c.m[i] = mi;
    c.v[i] = vi;
    c.p[i] = c.p[i] * c.decay - step_size * mi / (sqrt(vi) * inv_sqrt_bc2 + eps);
  }
}

template <class T> struct SquaresChunk {
  const T* x;
  int64_t n;
};

// One partial per chunk, then one block sums the partials in order: the same chunks and
// the same order on every run.
template <class T> __global__ void sum_squares_partial(const SquaresChunk<T>* chunks, double* part) {
  const SquaresChunk<T> c = chunks[blockIdx.x];
  double s = 0;
  for (int64_t i = threadIdx.x; i < c.n; i += blockDim.x) s += double(c.x[i]) * double(c.x[i]);
  s = block_sum(s);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void sum_partials(const double* part, int64_t n, double* out) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += part[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *out = s;
}

}  // namespace

void adamw(const std::vector<AdamWSlot>& slots, Tensor& m, Tensor& v, const AdamWParams& hp, int64_t step) {
  std::vector<Tensor> grads;
  for (const AdamWSlot& s : slots)
    grads.push_back(s.grad.contiguous());  // alive until the launch is queued; the stream orders reuse
  std::vector<OptimChunk> chunks = optim_chunks(grads);
  if (chunks.empty()) return;
  on_float(m.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    std::vector<AdamWChunk<T>> table;
    for (const OptimChunk& c : chunks) {
      const AdamWSlot& s = slots[size_t(c.tensor)];
      int64_t at = s.offset + c.begin;
      table.push_back({s.param.data<T>() + c.begin, grads[size_t(c.tensor)].data<T>() + c.begin, m.data<T>() + at,
                       v.data<T>() + at, c.size, T(1.0 - hp.lr * s.weight_decay), T(s.grad_scale)});
    }
    Tensor dev = upload(table);
    T bc1 = T(1.0 - std::pow(hp.beta1, double(step))), bc2 = T(1.0 - std::pow(hp.beta2, double(step)));
    NMPERM_LAUNCH(unsigned(table.size()), kThreads, 0, stream(), adamw_kernel<T>)
        (static_cast<const AdamWChunk<T>*>(dev.raw_data()), T(hp.beta1), T(hp.beta2), T(hp.eps), T(hp.lr) / bc1,
         T(1) / std::sqrt(bc2));
  });
  check_launch("adamw");
}

double sum_squares(const std::vector<Tensor>& ts) {
  std::vector<Tensor> cs;
  for (const Tensor& t : ts) cs.push_back(t.contiguous());
  std::vector<OptimChunk> chunks = optim_chunks(cs);
  if (chunks.empty()) return 0.0;
  int64_t n = int64_t(chunks.size());
  Tensor part = Tensor::empty({n + 1}, DType::F64, Device::CUDA);
  double* pp = part.data<double>();
  on_float(cs[0].dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    std::vector<SquaresChunk<T>> table;
    for (const OptimChunk& c : chunks) table.push_back({cs[size_t(c.tensor)].data<T>() + c.begin, c.size});
    Tensor dev = upload(table);
    NMPERM_LAUNCH(unsigned(n), kThreads, 0, stream(), sum_squares_partial<T>)
        (static_cast<const SquaresChunk<T>*>(dev.raw_data()), pp);
  });
  NMPERM_LAUNCH(1, 1024, 0, stream(), sum_partials)(pp, n, pp + n);
  check_launch("sum_squares");
  double out = 0;
  NMPERM_CUDA_CHECK(cudaMemcpy(&out, pp + n, sizeof out, cudaMemcpyDeviceToHost));
  return out;
}

}  // namespace nmperm::kernels::cuda

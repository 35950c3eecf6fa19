// Shared pieces of the CUDA kernels: checked calls, strided indexing, launch shapes and
// block reductions. Reductions use a fixed tree, so results do not depend on timing:
// every CUDA kernel here is deterministic run to run (no floating-point atomics).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "core/cuda/check.h"
#include "core/tensor.h"

// A kernel launch: NMPERM_LAUNCH(grid, block, shared_bytes, stream, kernel)(args...) is
// kernel<<<grid, block, shared_bytes, stream>>>(args...) under nvcc; in the emulated build
// (cuda_emulator/, .cu files compiled as host C++) it runs the kernel on the emulator.
#ifdef NMPERM_CUDA_EMULATOR
#define NMPERM_LAUNCH(grid, block, shared, stream, ...) \
  ::cuda_emu::launch({#__VA_ARGS__, __FILE__, __LINE__}, __VA_ARGS__, grid, block, shared, stream)
#else
#define NMPERM_LAUNCH(grid, block, shared, stream, ...) __VA_ARGS__<<<grid, block, shared, stream>>>
#endif

namespace nmperm::kernels::cuda {

// Kernels run on the default stream; host code that reads results copies synchronously.
inline cudaStream_t stream() { return 0; }

// After a launch: a bad configuration shows here, with the op's name.
inline void check_launch(const char* op) {
  cudaError_t err = cudaGetLastError();
  NMPERM_CHECK(err == cudaSuccess, "{}: CUDA kernel launch failed: {}", op, cudaGetErrorString(err));
}

constexpr int kMaxDims = 8;

// A tensor's view (shape, strides, offset) passed by value to a kernel.
struct Strided {
  int nd = 0;
  int64_t shape[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};
  int64_t offset = 0;
};

inline Strided strided(const Tensor& t, const char* op) {
  NMPERM_CHECK(t.ndim() <= kMaxDims, "{}: CUDA kernels take at most {} dims, got {}", op, kMaxDims, describe(t));
  Strided s;
  s.nd = int(t.ndim());
  for (int d = 0; d < s.nd; ++d) {
    s.shape[d] = t.shape(d);
    s.stride[d] = t.stride(d);
  }
  s.offset = t.offset();
  return s;
}

// Element offset of the i-th element (row-major order of the shape).
__device__ inline int64_t offset_of(const Strided& s, int64_t i) {
  int64_t off = s.offset;
  for (int d = s.nd - 1; d >= 0; --d) {
    int64_t n = s.shape[d];
    off += (i % n) * s.stride[d];
    i /= n;
  }
  return off;
}

template <class T> T* ptr(const Tensor& t) { return static_cast<T*>(t.storage()->data); }  // base, no offset

constexpr int kThreads = 256;
// Grid-stride loops take any n; the grid is capped so huge tensors need no 64-bit grids.
inline unsigned grid_for(int64_t n) {
  return unsigned(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, int64_t(65535) * 16));
}
#define NMPERM_GRID_STRIDE(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

// Block-wide sum of one value per thread (blockDim.x a multiple of 32, at most 1024);
// every thread gets the result. The order is fixed, so the result is reproducible.
template <class A> __device__ A block_sum(A v) {
  __shared__ A warp_part[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  __syncthreads();  // warp_part may still be read by a previous call
  if (lane == 0) warp_part[warp] = v;
  __syncthreads();
  A t = lane < warps ? warp_part[lane] : A(0);
  for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
  return t;
}

template <class A> __device__ A block_max(A v) {
  __shared__ A warp_part[32];
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) warp_part[warp] = v;
  __syncthreads();
  A t = lane < warps ? warp_part[lane] : v;
  for (int o = 16; o > 0; o >>= 1) t = max(t, __shfl_xor_sync(0xffffffffu, t, o));
  return t;
}

// A host array copied into a new device buffer (plain structs: kernel tables, lookup
// tables); the returned tensor keeps it alive. The copy is ordered before later launches.
template <class T> Tensor upload(const std::vector<T>& host) {
  int64_t words = int64_t((host.size() * sizeof(T) + 7) / 8);
  Tensor t = Tensor::empty({std::max<int64_t>(words, 1)}, DType::I64, Device::CUDA);
  if (!host.empty())
    NMPERM_CUDA_CHECK(cudaMemcpy(t.raw_data(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return t;
}

// The dtype dispatch of core/dtype.h for .cu files, which are C++17 (no template lambdas):
// f is called with a value of the element type, f(T{}), instead of f.operator()<T>().
template <class F> struct CallWithTag {
  F& f;
  template <class T> void operator()() { f(T{}); }
};
template <class F> void on_float(DType t, F&& f) { dispatch_float(t, CallWithTag<F>{f}); }  // f32, f64
template <class F> void on_index(DType t, F&& f) { dispatch_index(t, CallWithTag<F>{f}); }  // i32, i64
template <class F> void on_any(DType t, F&& f) { dispatch_all(t, CallWithTag<F>{f}); }      // every dtype

}  // namespace nmperm::kernels::cuda

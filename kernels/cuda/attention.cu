// CUDA attention (kernels/attention.h), flash-style: no (T, S) matrix is ever stored.
//
// Forward: a block holds 16 query rows of one (batch, head) and walks the keys in tiles
// of 32 staged in shared memory. A warp owns 4 rows; within a tile lane j scores key j,
// and the row keeps a running max, sum and output (online softmax), the output spread
// over the lanes (lane l holds dims l, l + 32, ...). It writes out and the row's lse.
//
// Backward, three deterministic kernels (no atomics):
//   delta[t] = rowsum(dO * O);
//   dQ: the forward's layout again, a warp per row accumulating dS K over key tiles;
//   dK, dV: a block (one warp) owns 32 keys of one kv head, lane j key j, and walks every
//   query row of every query head of the group in order, accumulating into shared memory.
// Head dim at most 128 (4 values per lane). Masked entries and fully masked rows follow
// the CPU kernel: probability 0, and a row with no visible key gives 0 and lse -inf.
#include <cmath>

#include "kernels/attention.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace nmperm::kernels::cuda {

namespace {

constexpr int kWarps = 4, kRowsPerWarp = 4, kRows = kWarps * kRowsPerWarp, kKeys = 32, kMaxChunks = 4;
constexpr int kMaxHeadDim = 32 * kMaxChunks;

using Dims = AttentionDims;

__device__ inline bool visible(int64_t s, int64_t t, const Dims& d, bool causal) {
  return s < d.S && (!causal || s <= t + d.shift);
}

template <class A> __device__ inline A warp_sum(A v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class A> __device__ inline A warp_max(A v) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// rows [first, first + count) of a (rows, D) matrix into shared memory with row stride
// D + 1 (lane j reading row j at the same column then hits distinct banks); rows past
// `limit` are zero.
template <class T>
__device__ void stage(T* dst, const T* src, int64_t first, int count, int64_t limit, int64_t D) {
  int64_t Dp = D + 1;
  for (int64_t e = threadIdx.x; e < count * D; e += blockDim.x) {
    int64_t r = e / D, c = e % D;
    dst[r * Dp + c] = first + r < limit ? src[(first + r) * D + c] : T(0);
  }
}

// Keys [0, end) can be visible to some query row of the tile starting at t0.
__device__ inline int64_t keys_end(const Dims& d, int64_t t0, bool causal) {
  int64_t last_t = min(d.T, t0 + kRows) - 1;
  return causal ? min(d.S, max(int64_t(0), last_t + d.shift + 1)) : d.S;
}

// Keys and values [s0, s0 + kKeys) into shared memory for the whole block, with the
// barriers that keep the previous tile alive until every warp is done with it.
template <class T> __device__ void stage_keys(T* Ks, T* Vs, const T* kh, const T* vh, int64_t s0, const Dims& d) {
  __syncthreads();
  stage(Ks, kh, s0, kKeys, d.S, d.D);
  stage(Vs, vh, s0, kKeys, d.S, d.D);
  __syncthreads();
}

// acc (this lane's dims lane, lane + 32, ...) += sum over the tile's rows j of w_j * tile[j],
// w_j being lane j's `w`.
template <class T> __device__ void add_weighted_rows(T (&acc)[kMaxChunks], T w, const T* tile, int64_t D, int lane) {
  for (int j = 0; j < kKeys; ++j) {
    T wj = __shfl_sync(0xffffffffu, w, j);
    for (int c = 0; c < kMaxChunks; ++c) {
      int64_t col = lane + 32 * c;
      if (col < D) acc[c] += wj * tile[j * (D + 1) + col];
    }
  }
}

template <class T> __device__ T dot_shared(const T* a, const T* b, int64_t D) {
  T s = 0;
  for (int64_t c = 0; c < D; ++c) s += a[c] * b[c];
  return s;
}

template <class T>
__global__ void attention_forward_kernel(const T* q, const T* k, const T* v, T* out, T* lse, Dims d, T scale,
                                         bool causal) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* smem = reinterpret_cast<T*>(smem_raw);
  int64_t Dp = d.D + 1, bh = blockIdx.x, b = bh / d.H, h = bh % d.H, kvh = b * d.Hkv + h / d.group;
  int64_t t0 = int64_t(blockIdx.y) * kRows;
  T *Qs = smem, *Ks = Qs + kRows * Dp, *Vs = Ks + kKeys * Dp;
  const T *qh = q + bh * d.T * d.D, *kh = k + kvh * d.S * d.D, *vh = v + kvh * d.S * d.D;
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  stage(Qs, qh, t0, kRows, d.T, d.D);

  T m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kMaxChunks];
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = T(-INFINITY);
    l[r] = 0;
    for (int c = 0; c < kMaxChunks; ++c) acc[r][c] = 0;
  }
  int64_t s_end = keys_end(d, t0, causal);
  for (int64_t s0 = 0; s0 < s_end; s0 += kKeys) {
    stage_keys(Ks, Vs, kh, vh, s0, d);
    for (int r = 0; r < kRowsPerWarp; ++r) {
      int row = warp * kRowsPerWarp + r;
      int64_t t = t0 + row;
      if (t >= d.T) break;
      bool vis = visible(s0 + lane, t, d, causal);
      T score = vis ? scale * dot_shared(Qs + row * Dp, Ks + lane * Dp, d.D) : T(-INFINITY);
      T m_new = max(m[r], warp_max(score));
      if (isinf(m_new)) continue;  // nothing visible to this row yet
      T p = vis ? exp(score - m_new) : T(0), corr = exp(m[r] - m_new);
      l[r] = l[r] * corr + warp_sum(p);
      for (int c = 0; c < kMaxChunks; ++c) acc[r][c] *= corr;
      add_weighted_rows(acc[r], p, Vs, d.D, lane);
      m[r] = m_new;
    }
  }
  for (int r = 0; r < kRowsPerWarp; ++r) {
    int64_t t = t0 + warp * kRowsPerWarp + r;
    if (t >= d.T) break;
    T inv = l[r] > 0 ? T(1) / l[r] : T(0);
    for (int c = 0; c < kMaxChunks; ++c) {
      int64_t col = lane + 32 * c;
      if (col < d.D) out[(bh * d.T + t) * d.D + col] = acc[r][c] * inv;
    }
    if (lane == 0) lse[bh * d.T + t] = l[r] > 0 ? m[r] + log(l[r]) : T(-INFINITY);
  }
}

// delta[row] = sum_c dout[row, c] * out[row, c], a warp per row (warp-stride loop).
template <class T> __global__ void attention_delta_kernel(const T* out, const T* dout, T* delta, int64_t rows, int64_t D) {
  int lane = threadIdx.x & 31;
  int64_t warps = int64_t(gridDim.x) * blockDim.x / 32;
  for (int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < rows; row += warps) {
    T s = 0;
    for (int64_t c = lane; c < D; c += 32) s += out[row * D + c] * dout[row * D + c];
    s = warp_sum(s);
    if (lane == 0) delta[row] = s;
  }
}

template <class T>
__global__ void attention_dq_kernel(const T* q, const T* k, const T* v, const T* lse, const T* delta, const T* dout,
                                    T* dq, Dims d, T scale, bool causal) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* smem = reinterpret_cast<T*>(smem_raw);
  int64_t Dp = d.D + 1, bh = blockIdx.x, b = bh / d.H, h = bh % d.H, kvh = b * d.Hkv + h / d.group;
  int64_t t0 = int64_t(blockIdx.y) * kRows;
  T *Qs = smem, *Gs = Qs + kRows * Dp, *Ks = Gs + kRows * Dp, *Vs = Ks + kKeys * Dp;
  const T *kh = k + kvh * d.S * d.D, *vh = v + kvh * d.S * d.D;
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  stage(Qs, q + bh * d.T * d.D, t0, kRows, d.T, d.D);
  stage(Gs, dout + bh * d.T * d.D, t0, kRows, d.T, d.D);

  T acc[kRowsPerWarp][kMaxChunks] = {};
  int64_t s_end = keys_end(d, t0, causal);
  for (int64_t s0 = 0; s0 < s_end; s0 += kKeys) {
    stage_keys(Ks, Vs, kh, vh, s0, d);
    for (int r = 0; r < kRowsPerWarp; ++r) {
      int row = warp * kRowsPerWarp + r;
      int64_t t = t0 + row;
      if (t >= d.T) break;
      T ds = 0;
      if (visible(s0 + lane, t, d, causal)) {
        T p = exp(scale * dot_shared(Qs + row * Dp, Ks + lane * Dp, d.D) - lse[bh * d.T + t]);
        ds = p * (dot_shared(Gs + row * Dp, Vs + lane * Dp, d.D) - delta[bh * d.T + t]);
      }
      add_weighted_rows(acc[r], ds, Ks, d.D, lane);
    }
  }
  for (int r = 0; r < kRowsPerWarp; ++r) {
    int64_t t = t0 + warp * kRowsPerWarp + r;
    if (t >= d.T) break;
    for (int c = 0; c < kMaxChunks; ++c) {
      int64_t col = lane + 32 * c;
      if (col < d.D) dq[(bh * d.T + t) * d.D + col] = scale * acc[r][c];
    }
  }
}

// One warp per block: lane j owns key s0 + j of kv head (b, kvh).
template <class T>
__global__ void attention_dkv_kernel(const T* q, const T* k, const T* v, const T* lse, const T* delta, const T* dout,
                                     T* dk, T* dv, Dims d, T scale, bool causal) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* smem = reinterpret_cast<T*>(smem_raw);
  int64_t Dp = d.D + 1, bk = blockIdx.x, b = bk / d.Hkv, kvh = bk % d.Hkv, s0 = int64_t(blockIdx.y) * kKeys;
  T *Ks = smem, *Vs = Ks + kKeys * Dp, *dKs = Vs + kKeys * Dp, *dVs = dKs + kKeys * Dp, *qt = dVs + kKeys * Dp,
    *gt = qt + d.D;
  int lane = threadIdx.x;
  stage(Ks, k + bk * d.S * d.D, s0, kKeys, d.S, d.D);
  stage(Vs, v + bk * d.S * d.D, s0, kKeys, d.S, d.D);
  for (int64_t e = lane; e < kKeys * Dp; e += 32) dKs[e] = dVs[e] = T(0);
  __syncwarp();
  int64_t s = s0 + lane, t_begin = causal ? max(int64_t(0), s0 - d.shift) : 0;
  for (int64_t g = 0; g < d.group; ++g) {
    int64_t bh = b * d.H + kvh * d.group + g;
    for (int64_t t = t_begin; t < d.T; ++t) {
      for (int64_t c = lane; c < d.D; c += 32) {
        qt[c] = q[(bh * d.T + t) * d.D + c];
        gt[c] = dout[(bh * d.T + t) * d.D + c];
      }
      __syncwarp();
      if (visible(s, t, d, causal)) {
        T p = exp(scale * dot_shared(qt, Ks + lane * Dp, d.D) - lse[bh * d.T + t]);
        T ds = p * (dot_shared(gt, Vs + lane * Dp, d.D) - delta[bh * d.T + t]);
        for (int64_t c = 0; c < d.D; ++c) {
          dVs[lane * Dp + c] += p * gt[c];
          dKs[lane * Dp + c] += scale * ds * qt[c];
        }
      }
      __syncwarp();
    }
  }
  if (s < d.S)
    for (int64_t c = 0; c < d.D; ++c) {
      dk[(bk * d.S + s) * d.D + c] = dKs[lane * Dp + c];
      dv[(bk * d.S + s) * d.D + c] = dVs[lane * Dp + c];
    }
}

Dims check_dims(const Tensor& q, const Tensor& k, const Tensor& v) {
  Dims d = attention_dims(q, k, v);
  NMPERM_CHECK(d.D <= kMaxHeadDim, "attention: the CUDA kernel takes head dims up to {}, got {}", kMaxHeadDim, d.D);
  NMPERM_CHECK(q.is_contiguous() && k.is_contiguous() && v.is_contiguous(),
               "attention: the CUDA kernel wants contiguous q, k, v, got {}, {}, {}", describe(q), describe(k),
               describe(v));
  NMPERM_CHECK(d.B * d.H <= int64_t(INT32_MAX) && (d.T + kRows - 1) / kRows <= 65535 &&
                   (d.S + kKeys - 1) / kKeys <= 65535,
               "attention: shape {} x {} is too large for one launch", q.shape(), k.shape());
  return d;
}

// Launches `kernel` with `bytes` of dynamic shared memory (above 48 KiB needs an opt-in).
template <class K> void allow_shared(K kernel, size_t bytes) {
  NMPERM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

}  // namespace

void attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse, double scale, bool causal) {
  Dims d = check_dims(q, k, v);
  if (d.B * d.H * d.T == 0) return;
  on_float(q.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    size_t bytes = size_t(kRows + 2 * kKeys) * size_t(d.D + 1) * sizeof(T);
    allow_shared(attention_forward_kernel<T>, bytes);
    dim3 grid(unsigned(d.B * d.H), unsigned((d.T + kRows - 1) / kRows));
    NMPERM_LAUNCH(grid, 32 * kWarps, bytes, stream(), attention_forward_kernel<T>)
        (q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(), lse.data<T>(), d, T(scale), causal);
  });
  check_launch("attention");
}

void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv, double scale, bool causal) {
  Dims d = check_dims(q, k, v);
  NMPERM_CHECK(out.is_contiguous() && dout.is_contiguous() && out.shape() == q.shape() && dout.shape() == q.shape(),
               "attention_backward: out {} and dout {} must be contiguous like q {}", describe(out), describe(dout),
               q.shape());
  if (d.B * d.H * d.T == 0 && d.B * d.Hkv * d.S == 0) return;
  Tensor delta = Tensor::empty({d.B * d.H * d.T}, q.dtype(), Device::CUDA);
  on_float(q.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    int64_t rows = d.B * d.H * d.T;
    if (rows > 0) {
      NMPERM_LAUNCH(grid_for(rows * 32), kThreads, 0, stream(), attention_delta_kernel<T>)
          (out.data<T>(), dout.data<T>(), delta.data<T>(), rows, d.D);
      size_t bytes = size_t(2 * kRows + 2 * kKeys) * size_t(d.D + 1) * sizeof(T);
      allow_shared(attention_dq_kernel<T>, bytes);
      dim3 grid(unsigned(d.B * d.H), unsigned((d.T + kRows - 1) / kRows));
      NMPERM_LAUNCH(grid, 32 * kWarps, bytes, stream(), attention_dq_kernel<T>)
          (q.data<T>(), k.data<T>(), v.data<T>(), lse.data<T>(), delta.data<T>(), dout.data<T>(), dq.data<T>(), d,
           T(scale), causal);
    }
    if (d.B * d.Hkv * d.S > 0) {
      size_t bytes = (size_t(4 * kKeys) * size_t(d.D + 1) + size_t(2 * d.D)) * sizeof(T);
      allow_shared(attention_dkv_kernel<T>, bytes);
      dim3 grid(unsigned(d.B * d.Hkv), unsigned((d.S + kKeys - 1) / kKeys));
      NMPERM_LAUNCH(grid, 32, bytes, stream(), attention_dkv_kernel<T>)
          (q.data<T>(), k.data<T>(), v.data<T>(), lse.data<T>(), delta.data<T>(), dout.data<T>(), dk.data<T>(),
           dv.data<T>(), d, T(scale), causal);
    }
  });
  check_launch("attention_backward");
}

}  // namespace nmperm::kernels::cuda

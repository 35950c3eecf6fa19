// The CUDA emulator's own checks (built with -DNMPERM_CUDA=EMU only): small kernels that
// break one rule each must be refused with CUDA's error and a detail naming the problem,
// and the warp intrinsics must follow CUDA's definitions lane by lane.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/cuda/common.cuh"

namespace nmperm::kernels::cuda {
namespace {

// --- kernels

__global__ void barrier_in_branch(int* out) {
  if (threadIdx.x < 16) __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void shuffle_with_mask(unsigned mask, int* out) {
  out[threadIdx.x] = __shfl_xor_sync(mask, int(threadIdx.x), 1);
}

__global__ void exit_then_shuffle(int* out) {
  if (threadIdx.x >= 24) return;
  out[threadIdx.x] = __shfl_sync(0xffffffffu, int(threadIdx.x), 0);
}

// Lane l's results of each intrinsic, for `width`, `arg` and predicate lane % 3 == 0.
__global__ void warp_intrinsics(int width, int arg, int* out) {
  int lane = int(threadIdx.x), v = 100 + lane;
  out[0 * 32 + lane] = __shfl_sync(0xffffffffu, v, arg, width);
  out[1 * 32 + lane] = __shfl_up_sync(0xffffffffu, v, unsigned(arg), width);
  out[2 * 32 + lane] = __shfl_down_sync(0xffffffffu, v, unsigned(arg), width);
  out[3 * 32 + lane] = __shfl_xor_sync(0xffffffffu, v, arg, width);
  out[4 * 32 + lane] = int(__ballot_sync(0xffffffffu, lane % 3 == 0));
  out[5 * 32 + lane] = __any_sync(0xffffffffu, lane == 31);
  out[6 * 32 + lane] = __all_sync(0xffffffffu, lane < 31);
}

// Writes its dynamic shared memory's first float of every block, read before any write.
__global__ void read_shared_first(float* out) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* s = reinterpret_cast<float*>(smem_raw);
  if (threadIdx.x == 0) out[blockIdx.x] = s[blockIdx.x];
  __syncthreads();
  s[threadIdx.x] = 1.0f;
}

// Thread i writes s[i] and reads s[n - 1 - i]; `barrier` decides whether it waits between.
__global__ void reverse_through_shared(bool barrier, float* out) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* s = reinterpret_cast<float*>(smem_raw);
  s[threadIdx.x] = float(threadIdx.x);
  if (barrier) __syncthreads();
  out[threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
}

__global__ void write_order(int* counter, int* order) { order[atomicAdd(counter, 1)] = int(threadIdx.x); }

__global__ void touch(float* p) { p[0] = 1.0f; }

__global__ void write_at(float* p, int i) {
  if (threadIdx.x == 0) p[i] = 1.0f;
}

__global__ void write_shared_at(int byte) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  if (threadIdx.x == 0) smem_raw[byte] = 1;
}

// --- helpers

template <class T> struct DeviceArray {
  T* p = nullptr;
  size_t n;
  explicit DeviceArray(size_t count) : n(count) {
    EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemset(p, 0, n * sizeof(T)), cudaSuccess);
  }
  ~DeviceArray() { cudaFree(p); }
  std::vector<T> host() const {
    std::vector<T> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

// The error the last launch left, with its message.
std::pair<cudaError_t, std::string> last() {
  cudaError_t e = cudaGetLastError();
  return {e, cudaGetErrorString(e)};
}

struct Order {  // NMPERM_CUDA_EMU_ORDER for one scope
  std::string old;
  bool had;
  explicit Order(const char* v) : had(std::getenv("NMPERM_CUDA_EMU_ORDER") != nullptr) {
    if (had) old = std::getenv("NMPERM_CUDA_EMU_ORDER");
    setenv("NMPERM_CUDA_EMU_ORDER", v, 1);
  }
  ~Order() {
    if (had) setenv("NMPERM_CUDA_EMU_ORDER", old.c_str(), 1);
    else unsetenv("NMPERM_CUDA_EMU_ORDER");
  }
};

// --- tests

TEST(CudaEmulator, BarrierSomeThreadsSkipIsADeadlockThatSaysWhoWaitsWhere) {
  DeviceArray<int> out(32);
  NMPERM_LAUNCH(1, 32, 0, 0, barrier_in_branch)(out.p);
  auto [err, msg] = last();
  EXPECT_EQ(err, cudaErrorLaunchFailure);
  EXPECT_NE(msg.find("deadlock"), std::string::npos) << msg;
  EXPECT_NE(msg.find("barrier_in_branch"), std::string::npos) << msg;
  EXPECT_NE(msg.find("of 32 threads 16 finished, 16 wait in __syncthreads at test_emulator.cpp"), std::string::npos)
      << msg;
}

TEST(CudaEmulator, WarpMaskMustNameTheCallerAndLanesThatArrive) {
  DeviceArray<int> out(32);
  NMPERM_LAUNCH(1, 32, 0, 0, shuffle_with_mask)(0x0000ffffu, out.p);
  auto [err, msg] = last();
  EXPECT_EQ(err, cudaErrorLaunchFailure);
  EXPECT_NE(msg.find("is not in its own mask 0x0000ffff"), std::string::npos) << msg;

  NMPERM_LAUNCH(1, 32, 0, 0, exit_then_shuffle)(out.p);
  std::tie(err, msg) = last();
  EXPECT_EQ(err, cudaErrorLaunchFailure);
  EXPECT_TRUE(msg.find("exited") != std::string::npos || msg.find("deadlock") != std::string::npos) << msg;

  NMPERM_LAUNCH(1, 16, 0, 0, shuffle_with_mask)(0xffffffffu, out.p);  // a 16-thread block has a 16-lane warp
  std::tie(err, msg) = last();
  EXPECT_EQ(err, cudaErrorLaunchFailure);
  EXPECT_NE(msg.find("names lanes warp 0 does not have"), std::string::npos) << msg;

  NMPERM_LAUNCH(1, 32, 0, 0, shuffle_with_mask)(0xffffffffu, out.p);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<int> h = out.host();
  for (int l = 0; l < 32; ++l) EXPECT_EQ(h[size_t(l)], l ^ 1);
}

// CUDA's definitions (the PTX shfl modes): source lane inside the lane's width segment, or
// the lane's own value where up/down/xor would leave it.
TEST(CudaEmulator, WarpIntrinsicsFollowCudasDefinitions) {
  for (int width : {32, 16, 8, 2})
    for (int arg : {0, 1, 3, 5, 17, 31, -1}) {
      if (arg < 0 && width != 32) continue;
      DeviceArray<int> out(7 * 32);
      NMPERM_LAUNCH(1, 32, 0, 0, warp_intrinsics)(width, arg, out.p);
      ASSERT_EQ(cudaGetLastError(), cudaSuccess);
      std::vector<int> h = out.host();
      unsigned ballot = 0;
      for (int l = 0; l < 32; ++l)
        if (l % 3 == 0) ballot |= 1u << l;
      for (int l = 0; l < 32; ++l) {
        int seg = l & ~(width - 1);
        int idx = seg + (arg & (width - 1));
        // Deltas and xor masks are unsigned: -1 is a delta past any segment and an xor
        // that leaves it.
        unsigned a = unsigned(arg);
        int up = a <= unsigned(l - seg) ? l - int(a) : l;
        int down = a < unsigned(seg + width - l) ? l + int(a) : l;
        int x = (unsigned(l) ^ a) < unsigned(seg + width) ? int(unsigned(l) ^ a) : l;
        std::string at = "width " + std::to_string(width) + " arg " + std::to_string(arg) + " lane " + std::to_string(l);
        EXPECT_EQ(h[size_t(l)], 100 + idx) << "__shfl_sync " << at;
        EXPECT_EQ(h[size_t(32 + l)], 100 + up) << "__shfl_up_sync " << at;
        EXPECT_EQ(h[size_t(64 + l)], 100 + down) << "__shfl_down_sync " << at;
        EXPECT_EQ(h[size_t(96 + l)], 100 + x) << "__shfl_xor_sync " << at;
        EXPECT_EQ(unsigned(h[size_t(128 + l)]), ballot) << at;
        EXPECT_EQ(h[size_t(160 + l)], 1) << at;
        EXPECT_EQ(h[size_t(192 + l)], 0) << at;
      }
    }
}

// The same rules, spelled out for a few lanes by hand.
TEST(CudaEmulator, WarpIntrinsicsSpotChecks) {
  auto run = [](int width, int arg) {
    DeviceArray<int> out(7 * 32);
    NMPERM_LAUNCH(1, 32, 0, 0, warp_intrinsics)(width, arg, out.p);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
    return out.host();
  };
  std::vector<int> a = run(32, 1);
  EXPECT_EQ(a[0], 101);        // __shfl_sync(v, 1): every lane reads lane 1
  EXPECT_EQ(a[32 + 0], 100);   // __shfl_up_sync by 1: lane 0 keeps its own
  EXPECT_EQ(a[32 + 5], 104);
  EXPECT_EQ(a[64 + 31], 131);  // __shfl_down_sync by 1: lane 31 keeps its own
  EXPECT_EQ(a[64 + 30], 131);
  EXPECT_EQ(a[96 + 6], 107);   // __shfl_xor_sync 1
  std::vector<int> b = run(8, 5);
  EXPECT_EQ(b[13], 113);       // lane 13 is in segment [8, 16): reads 8 + 5
  EXPECT_EQ(b[32 + 13], 108);  // up by 5 within [8, 16)
  EXPECT_EQ(b[32 + 12], 112);  // 12 - 5 leaves the segment: own value
  EXPECT_EQ(b[64 + 10], 115);
  EXPECT_EQ(b[64 + 11], 111);  // 11 + 5 = 16 leaves it
  EXPECT_EQ(b[96 + 3], 106);   // 3 ^ 5
  EXPECT_EQ(b[96 + 13], 108);  // 13 ^ 5 = 8
  std::vector<int> c = run(8, 17);
  EXPECT_EQ(c[96 + 3], 103);   // 3 ^ 17 = 18 is past the segment: own value
  EXPECT_EQ(c[96 + 18], 103);  // 18 ^ 17 = 3 lies in an earlier segment: allowed
}

TEST(CudaEmulator, LaunchLimitsFailAsCudaFailsThem) {
  DeviceArray<float> out(2048);
  NMPERM_LAUNCH(1, 1025, 0, 0, touch)(out.p);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  NMPERM_LAUNCH(dim3(1, 65536), 32, 0, 0, touch)(out.p);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  NMPERM_LAUNCH(1, dim3(32, 1, 65), 0, 0, touch)(out.p);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  NMPERM_LAUNCH(0, 32, 0, 0, touch)(out.p);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);

  // Dynamic shared memory: 48 KiB without the opt-in, up to 227 KiB with it.
  NMPERM_LAUNCH(1, 32, 48 * 1024 + 4, 0, read_shared_first)(out.p);
  auto [err, msg] = last();
  EXPECT_EQ(err, cudaErrorInvalidValue);
  EXPECT_NE(msg.find("cudaFuncSetAttribute"), std::string::npos) << msg;
  EXPECT_EQ(cudaFuncSetAttribute(read_shared_first, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024 + 1),
            cudaErrorInvalidValue);
  cudaGetLastError();
  ASSERT_EQ(cudaFuncSetAttribute(read_shared_first, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024),
            cudaSuccess);
  NMPERM_LAUNCH(1, 32, 100 * 1024, 0, read_shared_first)(out.p);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  NMPERM_LAUNCH(1, 32, 100 * 1024 + 4, 0, read_shared_first)(out.p);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);

  cudaDeviceProp p{};
  ASSERT_EQ(cudaGetDeviceProperties(&p, 0), cudaSuccess);
  EXPECT_EQ(p.warpSize, 32);
  EXPECT_EQ(p.maxThreadsPerBlock, 1024);
  EXPECT_EQ(p.sharedMemPerBlock, size_t(48 * 1024));
  EXPECT_EQ(p.sharedMemPerBlockOptin, size_t(227 * 1024));
  EXPECT_EQ(p.multiProcessorCount, 132);
}

TEST(CudaEmulator, SharedMemoryStartsEveryBlockAsNaN) {
  DeviceArray<float> out(4);
  NMPERM_LAUNCH(4, 32, 32 * sizeof(float), 0, read_shared_first)(out.p);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  for (float v : out.host()) EXPECT_TRUE(std::isnan(v));  // block 0 wrote 1.0 into its own copy only
}

// A missing barrier reads the poison in one order and the right value in another: the
// two CI orders between them see it. (Under ThreadSanitizer the race itself is the
// report, so only the correct kernel runs there.)
TEST(CudaEmulator, AMissingBarrierShowsUnderSomeThreadOrder) {
#if defined(__SANITIZE_THREAD__)
  const bool variants[] = {true};
#else
  const bool variants[] = {true, false};
#endif
  for (bool barrier : variants) {
    int bad_orders = 0;
    for (const char* order : {"forward", "reverse", "shuffle:3", "warp-ahead"}) {
      Order o(order);
      DeviceArray<float> out(64);
      NMPERM_LAUNCH(1, 64, 64 * sizeof(float), 0, reverse_through_shared)(barrier, out.p);
      ASSERT_EQ(cudaGetLastError(), cudaSuccess);
      std::vector<float> h = out.host();
      bool right = true;
      for (int i = 0; i < 64; ++i) right = right && h[size_t(i)] == float(63 - i);
      bad_orders += !right;
    }
    if (barrier) EXPECT_EQ(bad_orders, 0);
    else EXPECT_GE(bad_orders, 2);
  }
}

TEST(CudaEmulator, ThreadOrdersRunAsNamed) {
  auto order_of = [](const char* name) {
    Order o(name);
    DeviceArray<int> counter(1), order(64);
    NMPERM_LAUNCH(1, 64, 0, 0, write_order)(counter.p, order.p);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
    return order.host();
  };
  std::vector<int> fwd = order_of("forward"), rev = order_of("reverse"), ahead = order_of("warp-ahead");
  std::vector<int> sh1 = order_of("shuffle:1"), sh1b = order_of("shuffle:1");
  for (int i = 0; i < 64; ++i) {
    EXPECT_EQ(fwd[size_t(i)], i);
    EXPECT_EQ(rev[size_t(i)], 63 - i);
    EXPECT_EQ(ahead[size_t(i)], i < 32 ? 32 + i : i - 32);  // last warp first
  }
  EXPECT_NE(sh1, fwd);
  std::vector<int> sorted = sh1;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, fwd);  // every thread ran once
}

TEST(CudaEmulator, KernelPointersMustPointIntoLiveDeviceMemory) {
  float host_value = 0;
  NMPERM_LAUNCH(1, 1, 0, 0, touch)(&host_value);
  auto [err, msg] = last();
  EXPECT_EQ(err, cudaErrorIllegalAddress);
  EXPECT_NE(msg.find("argument 0"), std::string::npos) << msg;
  EXPECT_EQ(host_value, 0.0f);

  float* freed = nullptr;
  ASSERT_EQ(cudaMalloc(&freed, 16), cudaSuccess);
  ASSERT_EQ(cudaFree(freed), cudaSuccess);
  NMPERM_LAUNCH(1, 1, 0, 0, touch)(freed);
  EXPECT_EQ(cudaGetLastError(), cudaErrorIllegalAddress);
  EXPECT_EQ(cudaFree(freed), cudaErrorInvalidValue);  // a second free
  cudaGetLastError();
}

#if !defined(__SANITIZE_ADDRESS__)  // under AddressSanitizer these writes are ASan's reports
TEST(CudaEmulator, WritesPastAnAllocationOrTheSharedMemoryAreCaught) {
  DeviceArray<float> d(10);
  NMPERM_LAUNCH(1, 32, 0, 0, write_at)(d.p, 9);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  NMPERM_LAUNCH(1, 32, 0, 0, write_at)(d.p, 10);
  auto [err, msg] = last();
  EXPECT_EQ(err, cudaErrorIllegalAddress);
  EXPECT_NE(msg.find("wrote past the end of device allocation"), std::string::npos) << msg;

  NMPERM_LAUNCH(2, 32, 100, 0, write_shared_at)(99);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  NMPERM_LAUNCH(2, 32, 100, 0, write_shared_at)(100);
  std::tie(err, msg) = last();
  EXPECT_EQ(err, cudaErrorLaunchFailure);
  EXPECT_NE(msg.find("wrote past its 100 bytes of dynamic shared memory"), std::string::npos) << msg;
}
#endif

TEST(CudaEmulator, CopiesCheckDirectionAndBounds) {
  DeviceArray<float> d(8);
  std::vector<float> h(16, 1.0f);
  EXPECT_EQ(cudaMemcpy(d.p, h.data(), 8 * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d.p, h.data(), 9 * sizeof(float), cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(h.data(), d.p, 8 * sizeof(float), cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(d.p, h.data(), 8 * sizeof(float), cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemset(d.p + 4, 0, 5 * sizeof(float)), cudaErrorInvalidValue);
  cudaGetLastError();
  float* fresh = nullptr;
  ASSERT_EQ(cudaMalloc(&fresh, 4 * sizeof(float)), cudaSuccess);
  std::vector<float> back(4);
  ASSERT_EQ(cudaMemcpy(back.data(), fresh, 4 * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  for (float v : back) EXPECT_TRUE(std::isnan(v));  // uninitialised device memory reads as NaN
  cudaFree(fresh);
}

TEST(CudaEmulator, StreamsAndEventsAreCheckedHandles) {
  cudaStream_t s = nullptr;
  cudaEvent_t a = nullptr, b = nullptr;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&a), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&b), cudaSuccess);
  DeviceArray<float> d(1);
  EXPECT_EQ(cudaEventRecord(a, s), cudaSuccess);
  NMPERM_LAUNCH(1, 1, 0, s, touch)(d.p);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaEventRecord(b, s), cudaSuccess);
  EXPECT_EQ(cudaEventSynchronize(b), cudaSuccess);
  float ms = -1;
  EXPECT_EQ(cudaEventElapsedTime(&ms, a, b), cudaSuccess);
  EXPECT_GE(ms, 0.0f);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
  NMPERM_LAUNCH(1, 1, 0, s, touch)(d.p);  // a destroyed stream
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(cudaStreamDestroy(s), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(cudaEventDestroy(a), cudaSuccess);
  EXPECT_EQ(cudaEventDestroy(b), cudaSuccess);
  EXPECT_EQ(cudaEventElapsedTime(&ms, a, b), cudaErrorInvalidResourceHandle);
  cudaGetLastError();
}

TEST(CudaEmulator, CublasChecksItsArgumentsAndComputesColumnMajor) {
  cublasHandle_t h = nullptr;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  const int m = 3, n = 2, k = 4;
  std::vector<float> A(m * k), B(k * n), C(m * n, 0.0f);
  for (int i = 0; i < m * k; ++i) A[size_t(i)] = float(i + 1);
  for (int i = 0; i < k * n; ++i) B[size_t(i)] = float(2 * i - 3);
  DeviceArray<float> dA(A.size()), dB(B.size()), dC(C.size());
  cudaMemcpy(dA.p, A.data(), A.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dB.p, B.data(), B.size() * 4, cudaMemcpyHostToDevice);
  float one = 1, zero = 0;
  EXPECT_EQ(cublasSgemm(nullptr, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, dA.p, m, dB.p, k, &zero, dC.p, m),
            CUBLAS_STATUS_NOT_INITIALIZED);
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, dA.p, m - 1, dB.p, k, &zero, dC.p, m),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, -1, n, k, &one, dA.p, m, dB.p, k, &zero, dC.p, m),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, A.data(), m, dB.p, k, &zero, dC.p, m),
            CUBLAS_STATUS_EXECUTION_FAILED);  // a host operand
  cudaGetLastError();
  ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, dA.p, m, dB.p, k, &zero, dC.p, m),
            CUBLAS_STATUS_SUCCESS);
  std::vector<float> got = dC.host();
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      float want = 0;
      for (int p = 0; p < k; ++p) want += A[size_t(p * m + i)] * B[size_t(j * k + p)];
      EXPECT_EQ(got[size_t(j * m + i)], want) << i << "," << j;
    }
  EXPECT_EQ(cublasDestroy(h), CUBLAS_STATUS_SUCCESS);
}

}  // namespace
}  // namespace nmperm::kernels::cuda

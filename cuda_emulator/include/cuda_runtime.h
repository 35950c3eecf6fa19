// The CUDA emulator's <cuda_runtime.h>: what nmperm's .cu files use of CUDA, for host C++.
//
// In an emulated build (cmake -DNMPERM_CUDA=EMU) every .cu file is compiled by the host
// compiler with this folder first on the include path, so the same kernel source runs on
// the CPU: each CUDA thread is a fiber with its own stack, a block's threads run on the
// launching thread under a scheduler (cuda_emulator/scheduler.cpp), `__syncthreads`,
// `__syncwarp` and the warp shuffles/votes are real rendezvous of the threads they name,
// and the runtime and cuBLAS calls check their arguments as CUDA does. Device memory is
// host memory in exact-size allocations (AddressSanitizer sees every overrun), and every
// pointer argument of a launch must point into a live device allocation.
//
// What it cannot show: GPU math-library accuracy and FMA contraction, speed, register and
// occupancy limits, and races between blocks (blocks run in order, under TSan too).
#pragma once

#include <math.h>  // exp, log, isinf, ... with float overloads in the global namespace, as device code has them

#include <cstddef>
#include <cstdint>
#include <source_location>
#include <tuple>
#include <type_traits>
#include <utility>

// --- qualifiers: plain C++ under emulation
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
// A block's shared memory is the launching OS thread's; blocks run one at a time on it.
// (thread_local is the one storage class valid both with and without `extern`.)
#define __shared__ thread_local

// --- built-in types and variables
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return {x, y, z}; }
};
inline constexpr int warpSize = 32;

namespace cuda_emu::detail {
// The running CUDA thread's coordinates, set by the scheduler at every switch. Plain
// globals: launches run one at a time in the process (and TLS here would meet a
// toolchain bug: UBSan's null check on a TLS address reads flags that ld's TLS
// relaxation no longer sets).
extern uint3 thread_idx, block_idx, block_dim, grid_dim;
inline const uint3& thread_idx_ref() { return thread_idx; }
inline const uint3& block_idx_ref() { return block_idx; }
inline const uint3& block_dim_ref() { return block_dim; }
inline const uint3& grid_dim_ref() { return grid_dim; }
}  // namespace cuda_emu::detail
#define threadIdx (::cuda_emu::detail::thread_idx_ref())
#define blockIdx (::cuda_emu::detail::block_idx_ref())
#define blockDim (::cuda_emu::detail::block_dim_ref())
#define gridDim (::cuda_emu::detail::grid_dim_ref())

// --- runtime API types (the values are CUDA's)
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchFailure = 719,
};
using cudaError = cudaError_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};

enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxBlockDimX = 2,
  cudaDevAttrMaxGridDimX = 5,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMemoryClockRate = 36,
  cudaDevAttrGlobalMemoryBusWidth = 37,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  int regsPerBlock;
  int warpSize;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int major;
  int minor;
  int multiProcessorCount;
  int maxThreadsPerMultiProcessor;
  size_t sharedMemPerMultiprocessor;
  size_t sharedMemPerBlockOptin;
  int memoryBusWidth;
  int l2CacheSize;
};

using cudaStream_t = struct CUstream_st*;
using cudaEvent_t = struct CUevent_st*;

// --- runtime API (cuda_emulator/runtime.cpp)
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t err);
const char* cudaGetErrorName(cudaError_t err);

cudaError_t cudaMalloc(void** ptr, size_t bytes);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMemGetInfo(size_t* free, size_t* total);
cudaError_t cudaMallocHost(void** ptr, size_t bytes);
cudaError_t cudaFreeHost(void* ptr);
template <class T> cudaError_t cudaMalloc(T** ptr, size_t bytes) { return cudaMalloc(reinterpret_cast<void**>(ptr), bytes); }
template <class T> cudaError_t cudaMallocHost(T** ptr, size_t bytes) {
  return cudaMallocHost(reinterpret_cast<void**>(ptr), bytes);
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream = 0);
cudaError_t cudaMemset(void* dst, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream = 0);

cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

namespace cuda_emu {
cudaError_t set_func_attribute(const void* kernel, cudaFuncAttribute attr, int value);
}
template <class F> cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value) {
  return cuda_emu::set_func_attribute(reinterpret_cast<const void*>(kernel), attr, value);
}

// --- device functions: barriers, warp shuffles and votes (cuda_emulator/scheduler.cpp)
namespace cuda_emu::detail {
enum class Collective { SyncWarp, Shfl, ShflUp, ShflDown, ShflXor, Ballot, Any, All };
void sync_block(const std::source_location& where);
// One warp-wide rendezvous of the lanes in `mask`: each contributes `value` (and for a
// shuffle `arg`: lane, delta or xor mask, and `width`); returns this lane's result.
uint64_t warp_collective(Collective kind, unsigned mask, uint64_t value, int arg, int width,
                         const std::source_location& where);

template <class T> uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "warp shuffles move values of at most 8 bytes");
  uint64_t b = 0;
  __builtin_memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T> T from_bits(uint64_t b) {
  T v;
  __builtin_memcpy(&v, &b, sizeof(T));
  return v;
}
}  // namespace cuda_emu::detail

inline void __syncthreads(const std::source_location& where = std::source_location::current()) {
  cuda_emu::detail::sync_block(where);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const std::source_location& where = std::source_location::current()) {
  cuda_emu::detail::warp_collective(cuda_emu::detail::Collective::SyncWarp, mask, 0, 0, warpSize, where);
}

#define CUDA_EMU_SHUFFLE(fn, kind, argtype)                                                                   \
  template <class T>                                                                                          \
  T fn(unsigned mask, T var, argtype arg, int width = warpSize,                                               \
       const std::source_location& where = std::source_location::current()) {                                \
    using namespace cuda_emu::detail;                                                                         \
    return from_bits<T>(warp_collective(Collective::kind, mask, to_bits(var), int(arg), width, where));       \
  }
CUDA_EMU_SHUFFLE(__shfl_sync, Shfl, int)
CUDA_EMU_SHUFFLE(__shfl_up_sync, ShflUp, unsigned)
CUDA_EMU_SHUFFLE(__shfl_down_sync, ShflDown, unsigned)
CUDA_EMU_SHUFFLE(__shfl_xor_sync, ShflXor, int)
#undef CUDA_EMU_SHUFFLE

inline unsigned __ballot_sync(unsigned mask, int pred, const std::source_location& where = std::source_location::current()) {
  using namespace cuda_emu::detail;
  return unsigned(warp_collective(Collective::Ballot, mask, pred != 0, 0, warpSize, where));
}
inline int __any_sync(unsigned mask, int pred, const std::source_location& where = std::source_location::current()) {
  using namespace cuda_emu::detail;
  return int(warp_collective(Collective::Any, mask, pred != 0, 0, warpSize, where));
}
inline int __all_sync(unsigned mask, int pred, const std::source_location& where = std::source_location::current()) {
  using namespace cuda_emu::detail;
  return int(warp_collective(Collective::All, mask, pred != 0, 0, warpSize, where));
}

// --- atomics (GCC builtins: atomic for ThreadSanitizer too)
#define CUDA_EMU_ATOMIC_INT(T)                                                                               \
  inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }                       \
  inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }                       \
  inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }                     \
  inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }                       \
  inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }                         \
  inline T atomicCAS(T* p, T compare, T v) {                                                                 \
    __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);                  \
    return compare;                                                                                          \
  }                                                                                                          \
  inline T atomicMin(T* p, T v) {                                                                            \
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                                            \
    while (v < old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {  \
    }                                                                                                        \
    return old;                                                                                              \
  }                                                                                                          \
  inline T atomicMax(T* p, T v) {                                                                            \
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                                            \
    while (v > old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {  \
    }                                                                                                        \
    return old;                                                                                              \
  }
CUDA_EMU_ATOMIC_INT(int)
CUDA_EMU_ATOMIC_INT(unsigned)
CUDA_EMU_ATOMIC_INT(long long)
CUDA_EMU_ATOMIC_INT(unsigned long long)
#undef CUDA_EMU_ATOMIC_INT

#define CUDA_EMU_ATOMIC_FLOAT(T, I)                                                                          \
  inline T atomicAdd(T* p, T v) {                                                                            \
    I* ip = reinterpret_cast<I*>(p);                                                                         \
    I old = __atomic_load_n(ip, __ATOMIC_RELAXED), next;                                                     \
    do {                                                                                                     \
      T sum = __builtin_bit_cast(T, old) + v;                                                                \
      next = __builtin_bit_cast(I, sum);                                                                     \
    } while (!__atomic_compare_exchange_n(ip, &old, next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));        \
    return __builtin_bit_cast(T, old);                                                                       \
  }                                                                                                          \
  inline T atomicExch(T* p, T v) {                                                                           \
    return __builtin_bit_cast(T, __atomic_exchange_n(reinterpret_cast<I*>(p), __builtin_bit_cast(I, v),       \
                                                     __ATOMIC_RELAXED));                                     \
  }
CUDA_EMU_ATOMIC_FLOAT(float, unsigned)
CUDA_EMU_ATOMIC_FLOAT(double, unsigned long long)
#undef CUDA_EMU_ATOMIC_FLOAT

// --- math: CUDA's max/min (fmax/fmin for floating point: a NaN operand loses) and intrinsics
inline float max(float a, float b) { return fmaxf(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline float min(float a, float b) { return fminf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(float a, double b) { return fmax(a, b); }
inline double max(double a, float b) { return fmax(a, b); }
inline double min(float a, double b) { return fmin(a, b); }
inline double min(double a, float b) { return fmin(a, b); }
template <class A, class B, std::enable_if_t<std::is_integral_v<A> && std::is_integral_v<B>, int> = 0>
std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(a) > C(b) ? C(a) : C(b);
}
template <class A, class B, std::enable_if_t<std::is_integral_v<A> && std::is_integral_v<B>, int> = 0>
std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(a) < C(b) ? C(a) : C(b);
}
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __saturatef(float x) { return fminf(fmaxf(x, 0.0f), 1.0f); }
template <class T> T __ldg(const T* p) { return *p; }

// --- kernel launches
// nvcc spells a launch kernel<<<grid, block, shared, stream>>>(args...); nmperm's .cu files
// write NMPERM_LAUNCH(grid, block, shared, stream, kernel)(args...) (kernels/cuda/common.cuh),
// which under emulation becomes cuda_emu::launch(...)(args...).
namespace cuda_emu {

struct Site {
  const char* kernel;  // as written at the launch
  const char* file;
  int line;
};

struct LaunchConfig {
  Site site;
  const void* kernel;
  dim3 grid, block;
  size_t shared;
  cudaStream_t stream;
};

// A pointer argument of a launch, checked against the live device allocations.
struct PointerArg {
  int index;
  const void* ptr;
};

// Checks the configuration and the pointer arguments, then runs every block; the outcome
// is what the next cudaGetLastError returns (a deadlock or a bad warp mask is a launch
// failure naming the kernel, its block and where the threads wait).
void run(const LaunchConfig& config, const PointerArg* pointers, int n_pointers, void (*thread)(void*), void* state);

template <class... P> class Launch {
 public:
  Launch(const LaunchConfig& c, void (*kernel)(P...)) : config_(c), kernel_(kernel) {}

  template <class... A> void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
    State s{kernel_, std::tuple<P...>(std::forward<A>(args)...)};  // converted as a call converts them
    PointerArg pointers[sizeof...(P) + 1];
    int n = 0;
    collect(s.params, pointers, n, std::index_sequence_for<P...>{});
    run(config_, pointers, n, &thread, &s);
  }

 private:
  struct State {
    void (*kernel)(P...);
    std::tuple<P...> params;
  };
  // Each CUDA thread calls the kernel with its own copy of the parameters.
  static void thread(void* s) {
    State* st = static_cast<State*>(s);
    std::apply(st->kernel, st->params);
  }
  template <size_t... I>
  static void collect(const std::tuple<P...>& t, PointerArg* out, int& n, std::index_sequence<I...>) {
    ((std::is_pointer_v<std::tuple_element_t<I, std::tuple<P...>>>
          ? void(out[n++] = PointerArg{int(I), pointer_of(std::get<I>(t))})
          : void()),
     ...);
  }
  template <class T> static const void* pointer_of(const T& v) {
    if constexpr (std::is_pointer_v<T>) return static_cast<const void*>(v);
    else return nullptr;
  }

  LaunchConfig config_;
  void (*kernel_)(P...);
};

template <class... P>
Launch<P...> launch(Site site, void (*kernel)(P...), dim3 grid, dim3 block, size_t shared, cudaStream_t stream) {
  return Launch<P...>({site, reinterpret_cast<const void*>(kernel), grid, block, shared, stream}, kernel);
}

}  // namespace cuda_emu

// --- dynamic shared memory
// nvcc gives every `extern __shared__ T name[]` the block's dynamic shared memory. In host
// C++ a block-scope extern declaration names a variable of its innermost enclosing
// namespace, so the emulator declares that variable there, bound by its assembler name to
// the arena it fills for each block (the .cu files are built with -fno-extern-tls-init).
// nmperm's kernels call theirs `smem_raw`, in nmperm::kernels::cuda's unnamed namespace;
// a kernel that declares one elsewhere fails to link, naming it.
#define CUDA_EMU_DYNAMIC_SHARED(name) extern thread_local unsigned char name[] __asm__("cuda_emu_dynamic_shared")
namespace nmperm::kernels::cuda {
namespace {
CUDA_EMU_DYNAMIC_SHARED(smem_raw);
}
}  // namespace nmperm::kernels::cuda

// The emulated CUDA runtime: one device described like an H200, device memory as
// exact-size host allocations (so AddressSanitizer sees overruns and use-after-free),
// copies and memsets that check both ranges against the live allocations, streams and
// events (everything runs in order at once, so they only validate and time), per-kernel
// attributes, and CUDA's error codes with a detail saying what was wrong.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "cuda_emulator/emulator.h"

namespace cuda_emu {
namespace {

std::mutex& registry_mutex() {
  static std::mutex* m = new std::mutex();
  return *m;
}
// base address -> (size, kind); never destroyed (frees may run during static destruction)
std::map<const char*, std::pair<size_t, Memory>>& registry() {
  static auto* r = new std::map<const char*, std::pair<size_t, Memory>>();
  return *r;
}

thread_local cudaError_t last_error = cudaSuccess;
thread_local std::string last_detail;
thread_local std::string message;  // what cudaGetErrorString returned last

std::mutex attr_mutex;
std::map<const void*, size_t> dynamic_shared_limit;

std::mutex stream_mutex;
std::set<const void*> streams, events;

struct Event {
  std::chrono::steady_clock::time_point at;
  bool recorded = false;
};

// Uninitialised device memory reads as NaN (0xff bytes) in float and double views.
constexpr int kPoison = 0xff;

// Without AddressSanitizer, each device allocation is followed by a canary that a write
// past its end breaks; launches check the allocations their pointers point into, and
// cudaFree checks the one it frees. Under ASan allocations are exact and ASan checks.
#if defined(__SANITIZE_ADDRESS__)
constexpr size_t kCanary = 0;
#else
constexpr size_t kCanary = 64;
#endif
constexpr unsigned char kCanaryByte = 0xa5;

bool canary_intact(const char* base, size_t size) {
  for (size_t i = 0; i < kCanary; ++i)
    if (static_cast<unsigned char>(base[size + i]) != kCanaryByte) return false;
  return true;
}

std::string describe(const void* p, size_t n) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "[%p, +%zu bytes)", p, n);
  return buf;
}

// Bytes of live device allocations; the caller holds the registry's lock.
size_t device_bytes_locked() {
  size_t n = 0;
  for (auto& [base, entry] : registry()) n += entry.second == Memory::Device ? entry.first : 0;
  return n;
}

cudaError_t allocate(void** ptr, size_t bytes, Memory kind) {
  if (!ptr) return fail(cudaErrorInvalidValue, "cudaMalloc: the result pointer is null");
  *ptr = nullptr;
  if (kind == Memory::Device) {
    std::lock_guard lock(registry_mutex());
    const size_t total = device_memory(), used = device_bytes_locked();
    if (bytes > total - std::min(used, total))
      return fail(cudaErrorMemoryAllocation, "cudaMalloc: " + std::to_string(bytes) +
                                                 " bytes is more than the emulated device has free (" +
                                                 std::to_string(total - std::min(used, total)) + " of " +
                                                 std::to_string(total) + ")");
  }
  void* p = nullptr;
  size_t canary = kind == Memory::Device ? kCanary : 0;
  if (posix_memalign(&p, 256, bytes + canary) != 0 || (!p && bytes > 0))
    return fail(cudaErrorMemoryAllocation, "cudaMalloc: the host could not provide " + std::to_string(bytes) + " bytes");
  std::memset(p, kPoison, bytes);
  std::memset(static_cast<char*>(p) + bytes, kCanaryByte, canary);
  std::lock_guard lock(registry_mutex());
  registry()[static_cast<const char*>(p)] = {bytes, kind};
  *ptr = p;
  return cudaSuccess;
}

cudaError_t release(void* ptr, Memory kind, const char* fn) {
  if (!ptr) return cudaSuccess;
  {
    std::lock_guard lock(registry_mutex());
    auto it = registry().find(static_cast<const char*>(ptr));
    if (it == registry().end() || it->second.second != kind) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "%s: %p is not the start of a live %s allocation (freed twice, or never allocated)",
                    fn, ptr, kind == Memory::Device ? "device" : "pinned host");
      return fail(cudaErrorInvalidValue, buf);
    }
    bool intact = kind != Memory::Device || canary_intact(it->first, it->second.first);
    size_t size = it->second.first;
    registry().erase(it);
    if (!intact) {
      std::string what = std::string(fn) + ": something wrote past the end of device allocation " + describe(ptr, size);
      std::free(ptr);
      return fail(cudaErrorIllegalAddress, what);
    }
  }
  std::free(ptr);
  return cudaSuccess;
}

// Where a copy's side lies: in device memory (wholly inside one allocation), or on the
// host; a range that starts in a device allocation and runs past its end is an error.
enum class Side { Host, Device, Overrun };
Side side_of(const void* p, size_t n) {
  Allocation a = find_allocation(p);
  if (!a.found || a.kind == Memory::PinnedHost) return Side::Host;
  return static_cast<const char*>(p) + n <= a.base + a.size ? Side::Device : Side::Overrun;
}

const char* kind_name(cudaMemcpyKind k) {
  switch (k) {
    case cudaMemcpyHostToHost: return "cudaMemcpyHostToHost";
    case cudaMemcpyHostToDevice: return "cudaMemcpyHostToDevice";
    case cudaMemcpyDeviceToHost: return "cudaMemcpyDeviceToHost";
    case cudaMemcpyDeviceToDevice: return "cudaMemcpyDeviceToDevice";
    case cudaMemcpyDefault: return "cudaMemcpyDefault";
  }
  return "an unknown cudaMemcpyKind";
}

}  // namespace

size_t device_memory() {
  const char* e = std::getenv("NMPERM_CUDA_EMU_MEMORY_MIB");
  if (!e || !*e) return kGlobalMemory;
  char* end = nullptr;
  unsigned long long mib = std::strtoull(e, &end, 10);
  return *end == 0 && mib > 0 ? size_t(mib) << 20 : kGlobalMemory;
}

Allocation find_allocation(const void* p, size_t bytes) {
  const char* c = static_cast<const char*>(p);
  std::lock_guard lock(registry_mutex());
  auto& r = registry();
  auto it = r.upper_bound(c);
  if (it == r.begin()) return {};
  --it;
  const char* base = it->first;
  size_t size = it->second.first;
  if (c < base || c + bytes > base + size) return {};
  return {base, size, it->second.second, true};
}

bool check_canary(const void* p, std::string& where) {
  Allocation a = find_allocation(p);
  if (!a.found || a.kind != Memory::Device || canary_intact(a.base, a.size)) return true;
  std::memset(const_cast<char*>(a.base) + a.size, kCanaryByte, kCanary);  // report each overrun once
  where = describe(a.base, a.size);
  return false;
}

cudaError_t fail(cudaError_t err, const std::string& detail) {
  last_error = err;
  last_detail = detail;
  std::fprintf(stderr, "cuda emulator: %s\n", detail.c_str());
  return err;
}

size_t max_dynamic_shared(const void* kernel) {
  std::lock_guard lock(attr_mutex);
  auto it = dynamic_shared_limit.find(kernel);
  return it == dynamic_shared_limit.end() ? kSharedPerBlock : it->second;
}

bool valid_stream(cudaStream_t s) {
  if (!s) return true;
  std::lock_guard lock(stream_mutex);
  return streams.count(s) > 0;
}

cudaError_t set_func_attribute(const void* kernel, cudaFuncAttribute attr, int value) {
  if (!kernel) return fail(cudaErrorInvalidDeviceFunction, "cudaFuncSetAttribute: null kernel");
  if (attr == cudaFuncAttributePreferredSharedMemoryCarveout)
    return value >= -1 && value <= 100 ? cudaSuccess
                                       : fail(cudaErrorInvalidValue, "cudaFuncSetAttribute: carveout outside [-1, 100]");
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize)
    return fail(cudaErrorInvalidValue, "cudaFuncSetAttribute: attribute not emulated");
  if (value < 0 || size_t(value) > kSharedPerBlockOptin)
    return fail(cudaErrorInvalidValue, "cudaFuncSetAttribute: MaxDynamicSharedMemorySize " + std::to_string(value) +
                                           " is outside [0, " + std::to_string(kSharedPerBlockOptin) + "]");
  std::lock_guard lock(attr_mutex);
  dynamic_shared_limit[kernel] = size_t(value);
  return cudaSuccess;
}

}  // namespace cuda_emu

using namespace cuda_emu;

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue, "cudaGetDeviceCount: null pointer");
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (!device) return fail(cudaErrorInvalidValue, "cudaGetDevice: null pointer");
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess
                     : fail(cudaErrorInvalidDevice, "cudaSetDevice: the emulator has device 0 only, not " +
                                                        std::to_string(device));
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (!p) return fail(cudaErrorInvalidValue, "cudaGetDeviceProperties: null pointer");
  if (device != 0) return fail(cudaErrorInvalidDevice, "cudaGetDeviceProperties: no device " + std::to_string(device));
  *p = {};
  std::snprintf(p->name, sizeof p->name, "NVIDIA H200 (nmperm CUDA emulator)");
  p->totalGlobalMem = device_memory();
  p->sharedMemPerBlock = kSharedPerBlock;
  p->sharedMemPerBlockOptin = kSharedPerBlockOptin;
  p->sharedMemPerMultiprocessor = 228 * 1024;
  p->regsPerBlock = 65536;
  p->warpSize = kWarp;
  p->maxThreadsPerBlock = kMaxThreadsPerBlock;
  p->maxThreadsPerMultiProcessor = 2048;
  for (int i = 0; i < 3; ++i) {
    p->maxThreadsDim[i] = kMaxBlockDim[i];
    p->maxGridSize[i] = int(kMaxGridDim[i]);
  }
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = kMultiProcessors;
  p->memoryBusWidth = kMemoryBusBits;
  p->l2CacheSize = 50 << 20;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (!value) return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: null pointer");
  if (device != 0) return fail(cudaErrorInvalidDevice, "cudaDeviceGetAttribute: no device " + std::to_string(device));
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = kMaxThreadsPerBlock; break;
    case cudaDevAttrMaxBlockDimX: *value = kMaxBlockDim[0]; break;
    case cudaDevAttrMaxGridDimX: *value = int(kMaxGridDim[0]); break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = int(kSharedPerBlock); break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(kSharedPerBlockOptin); break;
    case cudaDevAttrWarpSize: *value = kWarp; break;
    case cudaDevAttrMultiProcessorCount: *value = kMultiProcessors; break;
    case cudaDevAttrMemoryClockRate: *value = kMemoryClockKhz; break;
    case cudaDevAttrGlobalMemoryBusWidth: *value = kMemoryBusBits; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    default: return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute " + std::to_string(int(attr)) +
                                                    " is not emulated");
  }
  return cudaSuccess;
}

// Launches run to completion when they are issued, so there is never anything to wait for.
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

cudaError_t cudaGetLastError() {
  cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() { return last_error; }

const char* cudaGetErrorName(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

// CUDA's message; for the error last recorded on this thread, the emulator's detail too.
const char* cudaGetErrorString(cudaError_t err) {
  const char* base = "unknown error";
  switch (err) {
    case cudaSuccess: base = "no error"; break;
    case cudaErrorInvalidValue: base = "invalid argument"; break;
    case cudaErrorMemoryAllocation: base = "out of memory"; break;
    case cudaErrorInitializationError: base = "initialization error"; break;
    case cudaErrorInvalidConfiguration: base = "invalid configuration argument"; break;
    case cudaErrorInvalidDevicePointer: base = "invalid device pointer"; break;
    case cudaErrorInvalidMemcpyDirection: base = "invalid copy direction for memcpy"; break;
    case cudaErrorInvalidDeviceFunction: base = "invalid device function"; break;
    case cudaErrorNoDevice: base = "no CUDA-capable device is detected"; break;
    case cudaErrorInvalidDevice: base = "invalid device ordinal"; break;
    case cudaErrorInvalidResourceHandle: base = "invalid resource handle"; break;
    case cudaErrorNotReady: base = "device not ready"; break;
    case cudaErrorIllegalAddress: base = "an illegal memory access was encountered"; break;
    case cudaErrorLaunchOutOfResources: base = "too many resources requested for launch"; break;
    case cudaErrorLaunchFailure: base = "unspecified launch failure"; break;
  }
  if (err == cudaSuccess || last_detail.empty()) return base;
  message = std::string(base) + " [emulator: " + last_detail + "]";
  return message.c_str();
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) { return allocate(ptr, bytes, Memory::Device); }

cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  if (!free || !total) return fail(cudaErrorInvalidValue, "cudaMemGetInfo: null pointer");
  std::lock_guard lock(registry_mutex());
  *total = device_memory();
  *free = *total - std::min(device_bytes_locked(), *total);
  return cudaSuccess;
}
cudaError_t cudaFree(void* ptr) { return release(ptr, Memory::Device, "cudaFree"); }
cudaError_t cudaMallocHost(void** ptr, size_t bytes) { return allocate(ptr, bytes, Memory::PinnedHost); }
cudaError_t cudaFreeHost(void* ptr) { return release(ptr, Memory::PinnedHost, "cudaFreeHost"); }

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return cudaSuccess;
  if (!dst || !src) return fail(cudaErrorInvalidValue, "cudaMemcpy: null pointer");
  Side d = side_of(dst, bytes), s = side_of(src, bytes);
  auto bad = [&](const char* what) {
    return fail(cudaErrorInvalidValue, std::string("cudaMemcpy ") + kind_name(kind) + ": " + what + " (dst " +
                                           describe(dst, bytes) + ", src " + describe(src, bytes) + ")");
  };
  if (d == Side::Overrun) return bad("the destination runs past the end of its device allocation");
  if (s == Side::Overrun) return bad("the source runs past the end of its device allocation");
  bool want_dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  bool want_src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind > cudaMemcpyDefault || kind < cudaMemcpyHostToHost)
    return fail(cudaErrorInvalidMemcpyDirection, "cudaMemcpy: invalid cudaMemcpyKind");
  if (kind != cudaMemcpyDefault) {
    if (want_dst_device != (d == Side::Device))
      return bad(want_dst_device ? "the destination is not device memory" : "the destination is device memory");
    if (want_src_device != (s == Side::Device))
      return bad(want_src_device ? "the source is not device memory" : "the source is device memory");
  }
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  if (!valid_stream(stream)) return fail(cudaErrorInvalidResourceHandle, "cudaMemcpyAsync: unknown stream");
  return cudaMemcpy(dst, src, bytes, kind);
}

cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  if (bytes == 0) return cudaSuccess;
  if (side_of(dst, bytes) != Side::Device)
    return fail(cudaErrorInvalidValue, "cudaMemset: " + describe(dst, bytes) + " is not inside one device allocation");
  std::memset(dst, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  if (!valid_stream(stream)) return fail(cudaErrorInvalidResourceHandle, "cudaMemsetAsync: unknown stream");
  return cudaMemset(dst, value, bytes);
}

namespace {
struct Stream {};  // launches run at once, so a stream holds nothing

// cudaStreamCreate / cudaEventCreate and their destroys: a new object whose address is the
// handle, registered in `live` until destroyed.
template <class Object, class Handle> cudaError_t create_handle(Handle* out, std::set<const void*>& live, const char* fn) {
  if (!out) return fail(cudaErrorInvalidValue, std::string(fn) + ": null pointer");
  *out = reinterpret_cast<Handle>(new Object());
  std::lock_guard lock(stream_mutex);
  live.insert(*out);
  return cudaSuccess;
}
template <class Object, class Handle> cudaError_t destroy_handle(Handle h, std::set<const void*>& live, const char* fn) {
  std::lock_guard lock(stream_mutex);
  if (!h || !live.erase(h)) return fail(cudaErrorInvalidResourceHandle, std::string(fn) + ": not a live handle");
  delete reinterpret_cast<Object*>(h);
  return cudaSuccess;
}
}  // namespace

cudaError_t cudaStreamCreate(cudaStream_t* s) { return create_handle<Stream>(s, streams, "cudaStreamCreate"); }
cudaError_t cudaStreamDestroy(cudaStream_t s) { return destroy_handle<Stream>(s, streams, "cudaStreamDestroy"); }
cudaError_t cudaEventCreate(cudaEvent_t* e) { return create_handle<Event>(e, events, "cudaEventCreate"); }
cudaError_t cudaEventDestroy(cudaEvent_t e) { return destroy_handle<Event>(e, events, "cudaEventDestroy"); }

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  return valid_stream(stream) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle, "cudaStreamSynchronize: unknown stream");
}

namespace {
Event* live_event(cudaEvent_t e) {
  std::lock_guard lock(stream_mutex);
  return e && events.count(e) ? reinterpret_cast<Event*>(e) : nullptr;
}
}  // namespace

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  Event* e = live_event(event);
  if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord: not a live event");
  if (!valid_stream(stream)) return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord: unknown stream");
  e->at = std::chrono::steady_clock::now();
  e->recorded = true;
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  return live_event(event) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle, "cudaEventSynchronize: not a live event");
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  Event *a = live_event(start), *b = live_event(end);
  if (!ms || !a || !b) return fail(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: not live events");
  if (!a->recorded || !b->recorded) return fail(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: event not recorded");
  *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
  return cudaSuccess;
}

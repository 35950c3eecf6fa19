// CUDA runtime glue: a caching device allocator, host<->device copies, and one clear
// error when CUDA is asked for without a usable device. Every CUDA call is checked and
// its failure names the call, file and line.
//
// Allocator: cudaMalloc and cudaFree synchronise the device and cost tens of
// microseconds, so freed blocks are kept in free lists by size class and reused (small
// sizes round up to 512 bytes, large ones to 2 MiB). When cudaMalloc runs out of memory
// the cache is returned to the driver and the allocation retried once. Caching can be
// turned off (the default on the CUDA emulator): then every block is an exact-size
// cudaMalloc and goes back at once, so memory checkers see each tensor's true bounds.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>

#include "core/cuda/check.h"
#include "core/storage.h"

namespace nmperm {

namespace {

struct DeviceCache {
  std::mutex mu;
  std::multimap<size_t, void*> free_blocks;  // class size -> block
  std::unordered_map<void*, size_t> live;    // block -> class size
  std::unordered_map<void*, size_t> exact;   // uncached block -> its size
  DeviceMemoryStats stats;
  bool caching = caching_default();

  static bool caching_default() {
    const char* e = std::getenv("NMPERM_CUDA_CACHE");
    if (e && *e) return std::strcmp(e, "0") != 0;
#ifdef NMPERM_CUDA_EMULATOR
    return false;
#else
    return true;
#endif
  }
};
DeviceCache& cache() {
  static DeviceCache* c = new DeviceCache();  // never destroyed: frees may run during static destruction
  return *c;
}

size_t size_class(size_t n) {
  constexpr size_t kSmall = size_t(1) << 20, kLargeStep = size_t(2) << 20;
  n = std::max<size_t>(n, 1);
  return n <= kSmall ? (n + 511) / 512 * 512 : (n + kLargeStep - 1) / kLargeStep * kLargeStep;
}

// Frees every cached block; the caller holds the lock.
void release_locked(DeviceCache& c) {
  for (auto& [size, p] : c.free_blocks) cudaFree(p);
  c.free_blocks.clear();
  c.stats.cached_bytes = 0;
}

}  // namespace

bool cuda_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

void* cuda_alloc(size_t nbytes) {
  static const bool available = cuda_available();
  NMPERM_CHECK(available, "CUDA was requested but no CUDA device is available");
  DeviceCache& c = cache();
  std::lock_guard lock(c.mu);
  void* p = nullptr;
  if (!c.caching) {
    cudaError_t err = cudaMalloc(&p, nbytes);
    NMPERM_CHECK(err == cudaSuccess, "CUDA out of memory allocating {} bytes ({} active): {}", nbytes,
                 c.stats.active_bytes, cudaGetErrorString(err));
    c.exact[p] = nbytes;
    c.stats.active_bytes += nbytes;
    c.stats.peak_active_bytes = std::max(c.stats.peak_active_bytes, c.stats.active_bytes);
    return p;
  }
  size_t cls = size_class(nbytes);
  auto it = c.free_blocks.find(cls);
  if (it != c.free_blocks.end()) {
    p = it->second;
    c.free_blocks.erase(it);
    c.stats.cached_bytes -= cls;
  } else {
    cudaError_t err = cudaMalloc(&p, cls);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // clear the sticky-free error state, return the cache, retry once
      release_locked(c);
      err = cudaMalloc(&p, cls);
    }
    NMPERM_CHECK(err == cudaSuccess, "CUDA out of memory allocating {} bytes ({} active, {} cached): {}", nbytes,
                 c.stats.active_bytes, c.stats.cached_bytes, cudaGetErrorString(err));
  }
  c.live[p] = cls;
  c.stats.active_bytes += cls;
  c.stats.peak_active_bytes = std::max(c.stats.peak_active_bytes, c.stats.active_bytes);
  return p;
}

void cuda_free(void* p) {
  if (!p) return;
  DeviceCache& c = cache();
  std::lock_guard lock(c.mu);
  if (auto e = c.exact.find(p); e != c.exact.end()) {
    c.stats.active_bytes -= e->second;
    c.exact.erase(e);
    cudaFree(p);
    return;
  }
  auto it = c.live.find(p);
  if (it == c.live.end()) return;
  size_t cls = it->second;
  c.live.erase(it);
  c.stats.active_bytes -= cls;
  c.free_blocks.emplace(cls, p);
  c.stats.cached_bytes += cls;
}

void set_cuda_caching(bool on) {
  DeviceCache& c = cache();
  std::lock_guard lock(c.mu);
  c.caching = on;
}

bool cuda_caching() {
  DeviceCache& c = cache();
  std::lock_guard lock(c.mu);
  return c.caching;
}

DeviceMemoryStats cuda_memory_stats() {
  DeviceCache& c = cache();
  std::lock_guard lock(c.mu);
  return c.stats;
}

size_t cuda_free_memory() {
  size_t free = 0, total = 0;
  NMPERM_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  DeviceCache& c = cache();
  std::lock_guard lock(c.mu);
  return free + c.stats.cached_bytes;
}

void release_cuda_cache() {
  DeviceCache& c = cache();
  std::lock_guard lock(c.mu);
  release_locked(c);
}

void cuda_synchronize() { NMPERM_CUDA_CHECK(cudaDeviceSynchronize()); }

double cuda_peak_bandwidth() {
  int khz = 0, bits = 0;
  NMPERM_CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrMemoryClockRate, 0));
  NMPERM_CUDA_CHECK(cudaDeviceGetAttribute(&bits, cudaDevAttrGlobalMemoryBusWidth, 0));
  return 2.0 * double(khz) * 1e3 * double(bits) / 8.0;
}

std::string cuda_device_name() {
  cudaDeviceProp p{};
  NMPERM_CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
  return p.name;
}

// Host<->device copies. Pageable memory cannot be read by the DMA engine directly, so
// large copies go through a pinned staging buffer in chunks; small ones use cudaMemcpy.
void cuda_copy(void* dst, const void* src, size_t nbytes, CopyKind kind) {
  if (nbytes == 0) return;
  constexpr size_t kStage = size_t(8) << 20;
  if (kind == CopyKind::DeviceToDevice) {
    NMPERM_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, cudaMemcpyDeviceToDevice));
    return;
  }
  if (nbytes < (size_t(1) << 20)) {
    NMPERM_CUDA_CHECK(
        cudaMemcpy(dst, src, nbytes, kind == CopyKind::HostToDevice ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost));
    return;
  }
  static std::mutex mu;
  static void* stage = nullptr;
  std::lock_guard lock(mu);
  if (!stage) NMPERM_CUDA_CHECK(cudaMallocHost(&stage, kStage));
  for (size_t done = 0; done < nbytes; done += kStage) {
    size_t n = std::min(kStage, nbytes - done);
    if (kind == CopyKind::HostToDevice) {
      std::memcpy(stage, static_cast<const char*>(src) + done, n);
      NMPERM_CUDA_CHECK(cudaMemcpy(static_cast<char*>(dst) + done, stage, n, cudaMemcpyHostToDevice));
    } else {
      NMPERM_CUDA_CHECK(cudaMemcpy(stage, static_cast<const char*>(src) + done, n, cudaMemcpyDeviceToHost));
      std::memcpy(static_cast<char*>(dst) + done, stage, n);
    }
  }
}

}  // namespace nmperm

// Storage: one owned allocation on one device. Tensors share it through shared_ptr;
// views never copy it. Host memory is 64-byte aligned (whole cache lines, AVX-512 loads).
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "core/dtype.h"

namespace nmperm {

struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device = Device::CPU;

  static std::shared_ptr<Storage> allocate(size_t nbytes, Device device);
  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();
};

void* host_alloc(size_t nbytes);  // 64-byte aligned; throws nmperm::Error on failure
void host_free(void* p);

// Blocks of 64 KiB and more are kept in a size-class cache after they are freed.
struct HostMemoryStats {
  size_t active_bytes = 0;       // in cached-class blocks now in use
  size_t peak_active_bytes = 0;
  size_t cached_bytes = 0;       // free blocks kept for reuse
};
HostMemoryStats host_memory_stats();
void release_host_cache();  // returns every cached free block to the system
// At most this many bytes of free blocks stay cached (2 GiB by default); past it the
// blocks freed longest ago go first. Returns the previous limit.
size_t set_host_cache_limit(size_t bytes);

// CUDA runtime entry points (core/cuda/runtime.cu, or core/cuda/stub.cpp which throws).
// Device memory comes from a caching allocator (size classes, free lists, free-and-retry
// on out-of-memory); its statistics count whole size classes. With caching off every
// block is its own exact-size cudaMalloc, freed at once: the default on the CUDA
// emulator, where that lets AddressSanitizer see overruns and use-after-free.
// NMPERM_CUDA_CACHE=0 or 1 overrides the default.
bool cuda_available();
void* cuda_alloc(size_t nbytes);
void cuda_free(void* p);
void set_cuda_caching(bool on);  // blocks already allocated keep the way they came
bool cuda_caching();
struct DeviceMemoryStats {
  size_t active_bytes = 0;
  size_t peak_active_bytes = 0;
  size_t cached_bytes = 0;  // freed blocks kept for reuse
};
DeviceMemoryStats cuda_memory_stats();
// Bytes new device tensors can have: the device's free memory plus the allocator's cached
// blocks (0 without a CUDA backend).
size_t cuda_free_memory();
void release_cuda_cache();  // returns every cached free block to the driver
void cuda_synchronize();    // waits for every queued kernel (timing, benchmarks)
// Peak memory bandwidth of device 0 in bytes/s (memory clock x bus width x 2) and its name.
double cuda_peak_bandwidth();
std::string cuda_device_name();
enum class CopyKind { HostToDevice, DeviceToHost, DeviceToDevice };
void cuda_copy(void* dst, const void* src, size_t nbytes, CopyKind kind);

}  // namespace nmperm

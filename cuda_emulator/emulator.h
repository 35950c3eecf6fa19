// What the emulator's runtime, scheduler and cuBLAS share: the emulated device's limits,
// the registry of live allocations, and the last error with its detail.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace cuda_emu {

// The emulated device: described like an NVIDIA H200 (compute capability 9.0).
constexpr int kWarp = 32;
constexpr int kMaxThreadsPerBlock = 1024;
constexpr int kMaxBlockDim[3] = {1024, 1024, 64};
constexpr long long kMaxGridDim[3] = {2147483647LL, 65535, 65535};
constexpr size_t kSharedPerBlock = 48 * 1024;       // without the opt-in
constexpr size_t kSharedPerBlockOptin = 227 * 1024;  // cudaFuncAttributeMaxDynamicSharedMemorySize up to this
constexpr int kMultiProcessors = 132;
constexpr size_t kGlobalMemory = size_t(143771) << 20;  // 140 GiB
// The emulated device's memory: kGlobalMemory, or NMPERM_CUDA_EMU_MEMORY_MIB mebibytes
// (read at each call, so a test can emulate a small GPU); live device allocations count
// against it as on a real device.
size_t device_memory();
constexpr int kMemoryClockKhz = 3201000, kMemoryBusBits = 6144;

enum class Memory { Device, PinnedHost };

// The allocation that holds [p, p + bytes), or none: a pointer one past the end of an
// allocation counts as inside it when bytes is 0.
struct Allocation {
  const char* base = nullptr;
  size_t size = 0;
  Memory kind = Memory::Device;
  bool found = false;
};
Allocation find_allocation(const void* p, size_t bytes = 0);

// False when a write ran past the end of the device allocation holding p (its canary is
// broken; `where` names the allocation). Without AddressSanitizer only.
bool check_canary(const void* p, std::string& where);

// Records err as the last error (returned by the next cudaGetLastError) with a detail that
// cudaGetErrorString adds to CUDA's own message; prints the detail to stderr; returns err.
cudaError_t fail(cudaError_t err, const std::string& detail);

// Largest dynamic shared memory a kernel may launch with (48 KiB unless raised by
// cudaFuncSetAttribute).
size_t max_dynamic_shared(const void* kernel);

// The stream handle is 0 or one that cudaStreamCreate returned and is not destroyed.
bool valid_stream(cudaStream_t s);

}  // namespace cuda_emu

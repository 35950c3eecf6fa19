// Built when no CUDA compiler was found: every CUDA entry point says so plainly.
#include "core/storage.h"

namespace nmperm {

bool cuda_available() { return false; }
void* cuda_alloc(size_t) {
  NMPERM_FAIL("CUDA was requested but this build has no CUDA backend (configure with nvcc present)");
}
void cuda_free(void*) {}
void set_cuda_caching(bool) {}
bool cuda_caching() { return false; }
DeviceMemoryStats cuda_memory_stats() { return {}; }
size_t cuda_free_memory() { return 0; }
void release_cuda_cache() {}
void cuda_synchronize() {}
double cuda_peak_bandwidth() { return 0; }
std::string cuda_device_name() { return "none"; }
void cuda_copy(void*, const void*, size_t, CopyKind) {
  NMPERM_FAIL("CUDA was requested but this build has no CUDA backend (configure with nvcc present)");
}

}  // namespace nmperm

// CUDA runtime glue: device allocation and host<->device copies, every call checked
// with file and line. A missing or unusable device gives one clear error.
// (The caching allocator and kernels arrive with the CUDA backend; this is the minimum
// that lets tensors live on a GPU.)
#include <cuda_runtime.h>

#include "core/storage.h"

#define NMPERM_CUDA_CHECK(call)                                                        \
  do {                                                                                 \
    cudaError_t err_ = (call);                                                         \
    NMPERM_CHECK(err_ == cudaSuccess, "CUDA error '{}' in {}", cudaGetErrorString(err_), #call); \
  } while (0)

namespace nmperm {

bool cuda_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

void* cuda_alloc(size_t nbytes) {
  NMPERM_CHECK(cuda_available(), "CUDA was requested but no CUDA device is available");
  void* p = nullptr;
  NMPERM_CUDA_CHECK(cudaMalloc(&p, nbytes == 0 ? 1 : nbytes));
  return p;
}

void cuda_free(void* p) { cudaFree(p); }

void cuda_copy(void* dst, const void* src, size_t nbytes, CopyKind kind) {
  cudaMemcpyKind k = kind == CopyKind::HostToDevice   ? cudaMemcpyHostToDevice
                     : kind == CopyKind::DeviceToHost ? cudaMemcpyDeviceToHost
                                                      : cudaMemcpyDeviceToDevice;
  NMPERM_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, k));
}

}  // namespace nmperm

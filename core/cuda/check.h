// NMPERM_CUDA_CHECK(call): a CUDA runtime call whose failure throws nmperm::Error naming
// the call, file and line. Included by .cu files only (it needs cuda_runtime.h).
#pragma once
#include <cuda_runtime.h>

#include "core/error.h"

#define NMPERM_CUDA_CHECK(call)                                                                              \
  do {                                                                                                       \
    cudaError_t err_ = (call);                                                                               \
    NMPERM_CHECK(err_ == cudaSuccess, "CUDA error '{}' in {} ({}:{})", cudaGetErrorString(err_), #call, __FILE__, \
                 __LINE__);                                                                                  \
  } while (0)

// Storage: one owned allocation on one device. Tensors share it through shared_ptr;
// views never copy it. Host memory is 64-byte aligned (whole cache lines, AVX-512 loads).
#pragma once
#include <cstddef>
#include <memory>

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

// CUDA runtime entry points (core/cuda/runtime.cu, or core/cuda/stub.cpp which throws).
bool cuda_available();
void* cuda_alloc(size_t nbytes);
void cuda_free(void* p);
enum class CopyKind { HostToDevice, DeviceToHost, DeviceToDevice };
void cuda_copy(void* dst, const void* src, size_t nbytes, CopyKind kind);

}  // namespace nmperm

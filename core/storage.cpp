#include "core/storage.h"

#include <cstdlib>

namespace nmperm {

void* host_alloc(size_t nbytes) {
  size_t rounded = (nbytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  NMPERM_CHECK(p != nullptr, "out of host memory allocating {} bytes", nbytes);
  return p;
}

void host_free(void* p) { std::free(p); }

std::shared_ptr<Storage> Storage::allocate(size_t nbytes, Device device) {
  auto s = std::make_shared<Storage>();
  s->nbytes = nbytes;
  s->device = device;
  s->data = device == Device::CPU ? host_alloc(nbytes) : cuda_alloc(nbytes);
  return s;
}

Storage::~Storage() {
  if (!data) return;
  if (device == Device::CPU) host_free(data);
  else cuda_free(data);
}

}  // namespace nmperm

#include "core/storage.h"

#include <bit>
#include <cstdlib>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <map>
#include <mutex>
#include <unordered_map>

namespace nmperm {

// Host memory: small blocks come straight from aligned_alloc; large blocks are cached by
// size class, because returning them to the OS and faulting fresh pages in on every
// training step cost more than the arithmetic of a small model's layer. Past the cache's
// limit the blocks freed longest ago go back to the OS first: blocks of shapes a program
// has moved on from (another model, another layer width) must not keep the current
// step's blocks out. Refusing new blocks instead made a Llama step at width 2048 run at
// 1,191 ms after a ViT-Base run in the same process against 1,021 ms alone.
namespace {

constexpr size_t kCacheMinBytes = size_t(1) << 16;

struct HostCache {
  std::mutex mu;
  using Blocks = std::multimap<size_t, std::pair<uint64_t, void*>>;  // class size -> (when freed, block)
  Blocks free_blocks;
  std::map<uint64_t, Blocks::iterator> free_order;  // when freed -> its entry
  uint64_t clock = 0;
  std::unordered_map<void*, size_t> live_size;  // cached-class blocks in use
  HostMemoryStats stats;
  size_t limit = size_t(2) << 30;  // keep at most 2 GiB of free blocks

  void* take(Blocks::iterator it) {  // a free block leaves the cache
    void* p = it->second.second;
    stats.cached_bytes -= it->first;
    free_order.erase(it->second.first);
    free_blocks.erase(it);
    return p;
  }
  void shrink_to(size_t bytes) {  // the oldest free blocks go back to the system
    while (stats.cached_bytes > bytes) std::free(take(free_order.begin()->second));
  }
};
HostCache& cache() {
  static HostCache* c = new HostCache();  // never destroyed: frees may run during static destruction
  return *c;
}

// Four classes per power of two: at most 25% of a block is slack.
size_t size_class(size_t n) {
  size_t top = std::bit_floor(n), step = std::max<size_t>(top / 4, 64);
  return (n + step - 1) / step * step;
}

void* raw_alloc(size_t n) {
  void* p = std::aligned_alloc(64, (n + 63) / 64 * 64);
  NMPERM_CHECK(p != nullptr, "out of host memory allocating {} bytes", n);
  return p;
}

}  // namespace

void* host_alloc(size_t nbytes) {
  if (nbytes < kCacheMinBytes) return raw_alloc(nbytes == 0 ? 64 : nbytes);
  size_t cls = size_class(nbytes);
  HostCache& c = cache();
  {
    std::lock_guard lock(c.mu);
    auto it = c.free_blocks.find(cls);
    if (it != c.free_blocks.end()) {
      void* p = c.take(it);
      c.live_size[p] = cls;
      c.stats.active_bytes += cls;
      c.stats.peak_active_bytes = std::max(c.stats.peak_active_bytes, c.stats.active_bytes);
      return p;
    }
  }
  void* p;
  try {
    p = raw_alloc(cls);
  } catch (const Error&) {
    release_host_cache();  // free what is cached and retry once
    p = raw_alloc(cls);
  }
  std::lock_guard lock(c.mu);
  c.live_size[p] = cls;
  c.stats.active_bytes += cls;
  c.stats.peak_active_bytes = std::max(c.stats.peak_active_bytes, c.stats.active_bytes);
  return p;
}

void host_free(void* p) {
  if (!p) return;
  HostCache& c = cache();
  std::lock_guard lock(c.mu);
  auto it = c.live_size.find(p);
  if (it == c.live_size.end()) {
    std::free(p);
    return;
  }
  size_t cls = it->second;
  c.live_size.erase(it);
  c.stats.active_bytes -= cls;
  if (cls > c.limit) {
    std::free(p);
    return;
  }
  c.shrink_to(c.limit - cls);
  uint64_t now = c.clock++;
  c.free_order.emplace(now, c.free_blocks.emplace(cls, std::make_pair(now, p)));
  c.stats.cached_bytes += cls;
}

size_t set_host_cache_limit(size_t bytes) {
  HostCache& c = cache();
  std::lock_guard lock(c.mu);
  size_t old = c.limit;
  c.limit = bytes;
  c.shrink_to(bytes);
  return old;
}

HostMemoryStats host_memory_stats() {
  std::lock_guard lock(cache().mu);
  return cache().stats;
}

void release_host_cache() {
  HostCache& c = cache();
  std::lock_guard lock(c.mu);
  for (auto& [cls, block] : c.free_blocks) std::free(block.second);
  c.free_blocks.clear();
  c.free_order.clear();
  c.stats.cached_bytes = 0;
#ifdef __GLIBC__
  // Freed blocks below glibc's (adaptive) mmap threshold stay in its per-thread arenas;
  // without a trim, block-by-block work kept about 50 MB more resident after every block
  // of a 1B-shaped model.
  malloc_trim(0);
#endif
}

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

// The emulator's execution model: every CUDA thread of a block is a fiber (its own stack,
// switched to and from by a few instructions of assembly), a block's fibers run on the
// launching OS thread until each has finished, and blocks run one after another.
//
// A fiber runs until it finishes or waits: at `__syncthreads` (released when every thread
// of the block has arrived) or at a warp collective (released when every lane its mask
// names has arrived with the same mask and kind; a shuffle's results are computed then,
// from the values all of them brought). When no fiber can run and some have not
// finished, the launch is a deadlock, reported with the count of threads waiting at each
// place. NMPERM_CUDA_EMU_ORDER picks the order in which ready fibers run:
//   forward       thread 0 first, released threads in thread order (the default)
//   reverse       the last thread first
//   shuffle[:S]   a seeded random ready thread each time (S defaults to 1)
//   warp-ahead    depth first: the lanes a warp collective releases run before anything
//                 else, so each warp runs ahead to its next block barrier, last warp first
//
// Under ThreadSanitizer each fiber is a TSan fiber and the switches carry no ordering;
// barriers and collectives release and acquire a token per rendezvous, so within a block
// TSan sees exactly the happens-before edges CUDA guarantees (shuffles move values, not
// memory ordering). Blocks are ordered one after another (they reuse one shared-memory
// arena), so races between blocks are not found. This file itself is built without TSan instrumentation: its bookkeeping is
// shared by the fibers of one OS thread, which TSan would otherwise take for races.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_emulator/emulator.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUDA_EMU_ASAN 1
#endif
#if defined(CUDA_EMU_TSAN)
#include <sanitizer/tsan_interface.h>
extern "C" void __tsan_ignore_thread_begin();  // in the TSan runtime, not in GCC 12's header
extern "C" void __tsan_ignore_thread_end();
#endif

// Dynamic shared memory of the running block (see CUDA_EMU_DYNAMIC_SHARED).
extern "C" {
__attribute__((aligned(256))) thread_local unsigned char cuda_emu_dynamic_shared[cuda_emu::kSharedPerBlockOptin];
}

namespace cuda_emu::detail {
uint3 thread_idx, block_idx, block_dim, grid_dim;
}

// --- context switch (x86-64 System V): push the callee-saved registers, store the stack
// pointer, load the other one, pop, return. The FP control words are not switched: every
// fiber runs with the launching thread's, and no kernel changes them.
extern "C" void cuda_emu_switch(void** save_sp, void* to_sp);
extern "C" void cuda_emu_start();
#if defined(__x86_64__)
asm(R"(
  .text
  .globl cuda_emu_switch
  .hidden cuda_emu_switch
  .type cuda_emu_switch,@function
  .p2align 4
cuda_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cuda_emu_switch, .-cuda_emu_switch

  .globl cuda_emu_start
  .hidden cuda_emu_start
  .type cuda_emu_start,@function
cuda_emu_start:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size cuda_emu_start, .-cuda_emu_start
)");
#else
#error "the CUDA emulator's context switch is written for x86-64"
#endif

namespace cuda_emu {
namespace detail {
namespace {

constexpr size_t kStackBytes = size_t(256) << 10;

enum class Order { Forward, Reverse, Shuffle, WarpAhead };

struct Fiber;

// A warp collective some lanes have reached.
struct Pending {
  Collective kind;
  unsigned mask = 0, arrived = 0;
  int warp = 0;
  std::source_location where;
  uint64_t value[kWarp] = {};
  int arg[kWarp] = {}, width[kWarp] = {};
  void* token = nullptr;
};

struct Fiber {
  void* sp = nullptr;
  char* stack = nullptr;  // kStackBytes, above one guard page
  int linear = 0, lane = 0, warp = 0;
  uint3 tid{};
  enum class State { Ready, Waiting, Done } state = State::Done;
  // while waiting
  bool at_barrier = false;
  Pending* pending = nullptr;
  std::source_location where;
  // on release
  uint64_t result = 0;
  void* acquire = nullptr;  // TSan token of the rendezvous that released it
  bool started = false;     // has run kernel code in this block
  void* tsan = nullptr;
};

struct Block {
  const LaunchConfig* cfg = nullptr;
  void (*thread)(void*) = nullptr;
  void* state = nullptr;
  int n = 0, done = 0, at_barrier = 0;
  Fiber** fibers = nullptr;     // the pool's first n
  std::vector<unsigned> exited;  // per warp: the lanes that have finished
  std::vector<Fiber*> released;  // scratch for a barrier's release
  Order order = Order::Forward;
  uint64_t rng = 0;
  std::deque<Fiber*> ready;
  std::vector<Pending*> open;  // incomplete warp collectives
  void* barrier_token = nullptr;
  void* launch_token = nullptr;
  void* done_token = nullptr;
  std::string error;
};

const char* collective_name(Collective k) {
  switch (k) {
    case Collective::SyncWarp: return "__syncwarp";
    case Collective::Shfl: return "__shfl_sync";
    case Collective::ShflUp: return "__shfl_up_sync";
    case Collective::ShflDown: return "__shfl_down_sync";
    case Collective::ShflXor: return "__shfl_xor_sync";
    case Collective::Ballot: return "__ballot_sync";
    case Collective::Any: return "__any_sync";
    case Collective::All: return "__all_sync";
  }
  return "?";
}

std::string file_line(const char* file, unsigned line) {
  const char* slash = std::strrchr(file, '/');
  return std::string(slash ? slash + 1 : file) + ":" + std::to_string(line);
}
std::string where_str(const std::source_location& w) { return file_line(w.file_name(), w.line()); }

// "kernel<T> (launched at file.cu:123)"
std::string launch_name(const LaunchConfig& c) {
  return std::string(c.site.kernel) + " (launched at " + file_line(c.site.file, unsigned(c.site.line)) + ")";
}

std::string hex(unsigned m) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", m);
  return b;
}

struct Abort {};  // unwinds a fiber whose kernel broke a rule (the block's error says which)

// Per OS thread: the fiber pool, the host's saved stack, the running block and fiber.
struct Host {
  std::vector<Fiber*> pool;
  void* sp = nullptr;
  const void* stack_lo = nullptr;
  size_t stack_size = 0;
  void* tsan = nullptr;
  Block* block = nullptr;
  Fiber* fiber = nullptr;
  std::vector<Pending*> free_pending;
  // TSan tokens: an address per rendezvous, from a ring. A token comes round again only
  // after 65536 others, so the ordering it still carries from its last use can at worst
  // hide a race between events that far apart, never invent one.
  char* tokens = nullptr;
  size_t next_token = 0;

  ~Host() {
    long page = sysconf(_SC_PAGESIZE);
    for (Fiber* f : pool) {
      munmap(f->stack - page, kStackBytes + size_t(page));
#if defined(CUDA_EMU_TSAN)
      __tsan_destroy_fiber(f->tsan);
#endif
      delete f;
    }
    for (Pending* p : free_pending) delete p;
    std::free(tokens);
  }
};
thread_local Host host;

// NMPERM_CUDA_EMU_STATS=1: totals printed at exit (where the emulator spends its time).
struct Stats {
  uint64_t launches = 0, blocks = 0, threads = 0, waits = 0;
  bool on = std::getenv("NMPERM_CUDA_EMU_STATS") != nullptr;
  ~Stats() {
    if (on)
      std::fprintf(stderr, "cuda emulator: %llu launches, %llu blocks, %llu threads, %llu barrier and warp waits\n",
                   (unsigned long long)launches, (unsigned long long)blocks, (unsigned long long)threads,
                   (unsigned long long)waits);
  }
} stats;

constexpr size_t kTokens = size_t(1) << 16;
void* new_token() {
#if defined(CUDA_EMU_TSAN)
  if (!host.tokens) host.tokens = static_cast<char*>(std::calloc(kTokens, 8));
  host.next_token = (host.next_token + 1) % kTokens;
  return host.tokens + 8 * host.next_token;
#else
  return nullptr;
#endif
}
inline void tsan_release(void* t) {
#if defined(CUDA_EMU_TSAN)
  if (t) __tsan_release(t);
#else
  (void)t;
#endif
}
// The scheduler's own memory traffic (its bookkeeping, the libc calls behind it, the
// shared-memory poison, fresh stack frames) is hidden from TSan: only kernel code and
// the orderings annotated here are what TSan judges.
inline void tsan_ignore_begin() {
#if defined(CUDA_EMU_TSAN)
  __tsan_ignore_thread_begin();
#endif
}
inline void tsan_ignore_end() {
#if defined(CUDA_EMU_TSAN)
  __tsan_ignore_thread_end();
#endif
}
inline void tsan_acquire(void* t) {
#if defined(CUDA_EMU_TSAN)
  if (t) __tsan_acquire(t);
#else
  (void)t;
#endif
}

[[noreturn]] void fiber_main(Fiber* f);

Fiber* fiber(size_t i) {
  while (host.pool.size() <= i) {
    Fiber* f = new Fiber();
    long page = sysconf(_SC_PAGESIZE);
    void* m = mmap(nullptr, kStackBytes + size_t(page), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
      std::fprintf(stderr, "cuda emulator: cannot map a thread stack\n");
      std::abort();
    }
    mprotect(m, size_t(page), PROT_NONE);  // a stack overflow faults instead of corrupting a neighbour
    f->stack = static_cast<char*>(m) + page;
#if defined(CUDA_EMU_TSAN)
    f->tsan = __tsan_create_fiber(0);
#endif
    host.pool.push_back(f);
  }
  return host.pool[i];
}

// A fresh start: the first switch to it "returns" into cuda_emu_start, which calls
// fiber_main(f).
void prepare(Fiber* f) {
  f->started = false;
  // Stacks lie a whole number of pages apart; a different offset within a page for each
  // keeps their hot top frames from competing for the same cache sets.
  uintptr_t color = uintptr_t(f->linear % 61) * 64;
  uintptr_t top = (reinterpret_cast<uintptr_t>(f->stack) + kStackBytes - color) & ~uintptr_t(15);
  // r15 r14 r13 r12 rbx rbp, then the return address at top - 24: after the `ret`, the
  // stack is 16-byte aligned for cuda_emu_start's call.
  auto* frame = reinterpret_cast<uint64_t*>(top - 24 - 48);
  std::memset(frame, 0, 7 * sizeof(uint64_t));
  frame[2] = reinterpret_cast<uint64_t>(&fiber_main);  // r13
  frame[3] = reinterpret_cast<uint64_t>(f);            // r12
  frame[6] = reinterpret_cast<uint64_t>(&cuda_emu_start);
  f->sp = frame;
  f->state = Fiber::State::Ready;
  f->at_barrier = false;
  f->pending = nullptr;
  f->acquire = nullptr;
}

void switch_into(Fiber* f) {
  host.fiber = f;
  thread_idx = f->tid;
#if defined(CUDA_EMU_ASAN)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f->stack, kStackBytes);
#endif
#if defined(CUDA_EMU_TSAN)
  __tsan_switch_to_fiber(f->tsan, __tsan_switch_to_fiber_no_sync);
#endif
  cuda_emu_switch(&host.sp, f->sp);
#if defined(CUDA_EMU_ASAN)
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  host.fiber = nullptr;
}

void switch_to_host(Fiber* f, bool finished) {
#if defined(CUDA_EMU_ASAN)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(finished ? nullptr : &fake, host.stack_lo, host.stack_size);
#endif
#if defined(CUDA_EMU_TSAN)
  __tsan_switch_to_fiber(host.tsan, __tsan_switch_to_fiber_no_sync);
#endif
  cuda_emu_switch(&f->sp, host.sp);
#if defined(CUDA_EMU_ASAN)
  __sanitizer_finish_switch_fiber(fake, &host.stack_lo, &host.stack_size);
#endif
  (void)finished;
}

void fail_in_fiber(Block& b, const std::string& what) {
  if (b.error.empty()) b.error = what;
  throw Abort{};
}

std::string kernel_at(const Block& b) {
  char buf[96];
  std::snprintf(buf, sizeof buf, " block (%u,%u,%u)", block_idx.x, block_idx.y, block_idx.z);
  return launch_name(*b.cfg) + buf;
}

void fiber_main(Fiber* f) {
#if defined(CUDA_EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &host.stack_lo, &host.stack_size);
#endif
  Block& b = *host.block;
  f->started = true;
  tsan_acquire(b.launch_token);
  bool aborted = true;
  try {
    b.thread(b.state);
    aborted = false;
  } catch (const Abort&) {
    tsan_ignore_end();  // thrown by sync_block / warp_collective, inside their ignored section
  } catch (...) {
    if (b.error.empty()) b.error = "an exception escaped the kernel in thread " + std::to_string(f->linear);
  }
  tsan_ignore_begin();
  if (!aborted) {
    // A lane that leaves while a warp collective still names it will never arrive there.
    for (Pending* p : b.open)
      if (p->warp == f->warp && (p->mask >> f->lane & 1u) && b.error.empty())
        b.error = "lane " + std::to_string(f->lane) + " of warp " + std::to_string(f->warp) + " exited, but " +
                  collective_name(p->kind) + " at " + where_str(p->where) + " waits for it (mask " + hex(p->mask) + ")";
  }
  tsan_release(b.done_token);
  f->state = Fiber::State::Done;
  b.exited[size_t(f->warp)] |= 1u << f->lane;
  ++b.done;
  tsan_ignore_end();
  switch_to_host(f, true);
  __builtin_unreachable();
}

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

Fiber* next_ready(Block& b) {
  if (b.order == Order::Shuffle && b.ready.size() > 1) {
    size_t i = size_t(splitmix(b.rng) % b.ready.size());
    std::swap(b.ready[i], b.ready.front());
  }
  Fiber* f = b.ready.front();
  b.ready.pop_front();
  return f;
}

// Makes `released` (in thread order) ready, in the order the policy wants them.
void release(Block& b, std::vector<Fiber*>& released, bool warp_collective) {
  for (Fiber* f : released) f->state = Fiber::State::Ready;
  switch (b.order) {
    case Order::Forward:
    case Order::Shuffle: b.ready.insert(b.ready.end(), released.begin(), released.end()); break;
    case Order::Reverse: b.ready.insert(b.ready.end(), released.rbegin(), released.rend()); break;
    case Order::WarpAhead:
      if (warp_collective) {
        b.ready.insert(b.ready.begin(), released.begin(), released.end());
      } else {
        std::stable_sort(released.begin(), released.end(), [](Fiber* x, Fiber* y) { return x->warp > y->warp; });
        b.ready.insert(b.ready.end(), released.begin(), released.end());
      }
      break;
  }
}

Block& running(const char* what) {
  if (!host.block || !host.fiber) {
    std::fprintf(stderr, "cuda emulator: %s called outside a kernel launch\n", what);
    std::abort();
  }
  return *host.block;
}

// The warp's lanes that exist: a block whose size is not a multiple of 32 has a short last warp.
unsigned lanes_of_warp(const Block& b, int warp) {
  int n = std::min(kWarp, b.n - warp * kWarp);
  return n >= kWarp ? 0xffffffffu : (1u << n) - 1u;
}

void complete(Block& b, Pending* p, const std::vector<Fiber*>& members) {
  uint64_t ballot = 0;
  for (int l = 0; l < kWarp; ++l)
    if ((p->mask >> l & 1u) && p->value[l]) ballot |= uint64_t(1) << l;
  for (Fiber* f : members) {
    int l = f->lane;
    uint64_t r = 0;
    switch (p->kind) {
      case Collective::SyncWarp: break;
      case Collective::Ballot: r = ballot; break;
      case Collective::Any: r = ballot != 0; break;
      case Collective::All: r = ballot == p->mask; break;
      default: {
        // CUDA's source lane: within the lane's segment of `width` lanes; where up, down or
        // xor would leave it (deltas and xor masks are unsigned), the lane's own value.
        int w = p->width[l], seg = l & ~(w - 1), j = l;
        unsigned a = unsigned(p->arg[l]);
        if (p->kind == Collective::Shfl) j = seg + int(a & unsigned(w - 1));
        else if (p->kind == Collective::ShflUp) j = a <= unsigned(l - seg) ? l - int(a) : l;
        else if (p->kind == Collective::ShflDown) j = a < unsigned(seg + w - l) ? l + int(a) : l;
        else j = (unsigned(l) ^ a) < unsigned(seg + w) ? int(unsigned(l) ^ a) : l;
        if (!(p->mask >> j & 1u)) {
          if (b.error.empty())
            b.error = std::string(collective_name(p->kind)) + " at " + where_str(p->where) + ": lane " +
                      std::to_string(l) + " of warp " + std::to_string(p->warp) + " reads lane " + std::to_string(j) +
                      ", which mask " + hex(p->mask) + " does not name";
          r = 0;
        } else {
          r = p->value[j];
        }
      }
    }
    f->result = r;
    f->pending = nullptr;
    f->acquire = p->token;
  }
}

}  // namespace

void sync_block(const std::source_location& where) {
  tsan_ignore_begin();  // ended on the way back to the kernel, or by fiber_main after an Abort
  Block& b = running("__syncthreads");
  Fiber* f = host.fiber;
  f->state = Fiber::State::Waiting;
  f->at_barrier = true;
  f->where = where;
  tsan_release(b.barrier_token);
  if (++b.at_barrier == b.n) {
    b.released.assign(b.fibers, b.fibers + b.n);
    for (Fiber* g : b.released) {
      g->at_barrier = false;
      g->acquire = b.barrier_token;
    }
    b.at_barrier = 0;
    b.barrier_token = new_token();
    release(b, b.released, false);
  }
  ++stats.waits;
  switch_to_host(f, false);
  tsan_acquire(f->acquire);
  if (!b.error.empty()) throw Abort{};
  tsan_ignore_end();
}

uint64_t warp_collective(Collective kind, unsigned mask, uint64_t value, int arg, int width,
                         const std::source_location& where) {
  tsan_ignore_begin();  // as in sync_block
  Block& b = running(collective_name(kind));
  Fiber* f = host.fiber;
  auto at = [&] { return std::string(collective_name(kind)) + " at " + where_str(where); };
  if (!(mask >> f->lane & 1u))
    fail_in_fiber(b, at() + ": lane " + std::to_string(f->lane) + " of warp " + std::to_string(f->warp) +
                         " is not in its own mask " + hex(mask));
  unsigned have = lanes_of_warp(b, f->warp);
  if (mask & ~have)
    fail_in_fiber(b, at() + ": mask " + hex(mask) + " names lanes warp " + std::to_string(f->warp) +
                         " does not have (its lanes are " + hex(have) + ")");
  if (width < 1 || width > kWarp || (width & (width - 1)))
    fail_in_fiber(b, at() + ": width " + std::to_string(width) + " is not a power of 2 in [1, 32]");
  if (unsigned gone = mask & b.exited[size_t(f->warp)])
    fail_in_fiber(b, at() + ": mask " + hex(mask) + " names lane " + std::to_string(std::countr_zero(gone)) +
                         ", which has exited");
  Pending* p = nullptr;
  for (Pending* q : b.open)
    if (q->warp == f->warp && (q->mask & mask)) {
      if (q->mask != mask || q->kind != kind)
        fail_in_fiber(b, at() + ": lanes of warp " + std::to_string(f->warp) + " meet at different warp collectives: " +
                             collective_name(q->kind) + " at " + where_str(q->where) + " with mask " + hex(q->mask) +
                             " and this one with mask " + hex(mask));
      p = q;
      break;
    }
  if (!p) {
    if (host.free_pending.empty()) host.free_pending.push_back(new Pending());
    p = host.free_pending.back();
    host.free_pending.pop_back();
    p->kind = kind;
    p->mask = mask;
    p->arrived = 0;
    p->warp = f->warp;
    p->where = where;
    p->token = new_token();
    b.open.push_back(p);
  }
  p->value[f->lane] = value;
  p->arg[f->lane] = arg;
  p->width[f->lane] = width;
  p->arrived |= 1u << f->lane;
  f->state = Fiber::State::Waiting;
  f->pending = p;
  f->where = where;
  tsan_release(p->token);
  if (p->arrived == mask) {
    std::vector<Fiber*>& members = b.released;
    members.clear();
    for (int l = 0; l < kWarp; ++l)
      if (mask >> l & 1u) members.push_back(b.fibers[f->warp * kWarp + l]);
    complete(b, p, members);
    b.open.erase(std::find(b.open.begin(), b.open.end(), p));
    host.free_pending.push_back(p);
    release(b, members, true);
  }
  ++stats.waits;
  switch_to_host(f, false);
  tsan_acquire(f->acquire);
  if (!b.error.empty()) throw Abort{};
  tsan_ignore_end();
  return f->result;
}

namespace {

Order order_from_env(uint64_t& seed) {
  const char* e = std::getenv("NMPERM_CUDA_EMU_ORDER");
  seed = 1;
  if (!e || !*e || !std::strcmp(e, "forward")) return Order::Forward;
  if (!std::strcmp(e, "reverse")) return Order::Reverse;
  if (!std::strcmp(e, "warp-ahead")) return Order::WarpAhead;
  if (!std::strncmp(e, "shuffle", 7) && (e[7] == 0 || e[7] == ':')) {
    if (e[7] == ':') {
      char* end = nullptr;
      seed = std::strtoull(e + 8, &end, 10);
      if (!end || *end || end == e + 8) {
        std::fprintf(stderr, "cuda emulator: NMPERM_CUDA_EMU_ORDER=%s: the seed must be a number\n", e);
        std::exit(2);
      }
    }
    return Order::Shuffle;
  }
  std::fprintf(stderr,
               "cuda emulator: NMPERM_CUDA_EMU_ORDER=%s is not one of forward, reverse, shuffle[:SEED], warp-ahead\n", e);
  std::exit(2);
}

// Who waits where, for a deadlock report: "96 at __syncthreads (attention.cu:56); ...".
std::string waiting_summary(const Block& b) {
  std::map<std::string, int> counts;
  for (int i = 0; i < b.n; ++i) {
    Fiber* f = b.fibers[i];
    if (f->state != Fiber::State::Waiting) continue;
    std::string k = f->at_barrier ? "__syncthreads at " + where_str(f->where)
                                  : std::string(collective_name(f->pending->kind)) + " at " + where_str(f->where) +
                                        " (mask " + hex(f->pending->mask) + ", warp " + std::to_string(f->warp) + ")";
    ++counts[k];
  }
  std::string s;
  for (auto& [k, n] : counts) s += (s.empty() ? "" : "; ") + std::to_string(n) + " wait in " + k;
  return s;
}

std::mutex launch_mutex;  // launches from several host threads run one at a time (they share thread_idx, ...)
uint64_t launches = 0;


}  // namespace
}  // namespace detail

void run(const LaunchConfig& c, const PointerArg* pointers, int n_pointers, void (*thread)(void*), void* state) {
  using namespace detail;
  auto name = [&] { return launch_name(c); };
  if (host.block) {
    fail(cudaErrorLaunchFailure, name() + ": launched from inside a kernel (dynamic parallelism is not emulated)");
    return;
  }
  const unsigned bd[3] = {c.block.x, c.block.y, c.block.z};
  const unsigned gd[3] = {c.grid.x, c.grid.y, c.grid.z};
  unsigned long long threads = 1;
  for (int d = 0; d < 3; ++d) {
    threads *= bd[d];
    if (bd[d] == 0 || bd[d] > unsigned(kMaxBlockDim[d]) || gd[d] == 0 || gd[d] > kMaxGridDim[d]) {
      char buf[200];
      std::snprintf(buf, sizeof buf, ": grid (%u,%u,%u) x block (%u,%u,%u) is outside the device's limits", gd[0], gd[1],
                    gd[2], bd[0], bd[1], bd[2]);
      fail(cudaErrorInvalidConfiguration, name() + buf);
      return;
    }
  }
  if (threads > unsigned(kMaxThreadsPerBlock)) {
    fail(cudaErrorInvalidConfiguration, name() + ": " + std::to_string(threads) + " threads per block, more than " +
                                            std::to_string(kMaxThreadsPerBlock));
    return;
  }
  size_t limit = max_dynamic_shared(c.kernel);
  if (c.shared > limit) {
    fail(cudaErrorInvalidValue,
         name() + ": " + std::to_string(c.shared) + " bytes of dynamic shared memory, more than the kernel's limit of " +
             std::to_string(limit) +
             (limit == kSharedPerBlock ? " (above 48 KiB needs cudaFuncSetAttribute(MaxDynamicSharedMemorySize))" : ""));
    return;
  }
  if (!valid_stream(c.stream)) {
    fail(cudaErrorInvalidResourceHandle, name() + ": unknown stream");
    return;
  }
  for (int i = 0; i < n_pointers; ++i) {
    const void* p = pointers[i].ptr;
    if (p && !find_allocation(p).found) {
      char buf[160];
      std::snprintf(buf, sizeof buf, ": argument %d points to %p, which is not in a live device allocation (host memory, or freed)",
                    pointers[i].index, p);
      fail(cudaErrorIllegalAddress, name() + buf);
      return;
    }
  }

  std::lock_guard lock(launch_mutex);
  Block b;
  b.cfg = &c;
  b.thread = thread;
  b.state = state;
  b.n = int(threads);
  uint64_t seed = 0;
  b.order = order_from_env(seed);
  b.rng = seed * 0x100000001b3ull + launches++;
  ++stats.launches;
  b.launch_token = new_token();
  b.done_token = new_token();
  b.barrier_token = new_token();
  tsan_release(b.launch_token);
#if defined(CUDA_EMU_TSAN)
  if (!host.tsan) host.tsan = __tsan_get_current_fiber();
#endif
  fiber(size_t(b.n - 1));  // the pool holds the block's threads
  b.fibers = host.pool.data();
  b.exited.assign(size_t((b.n + kWarp - 1) / kWarp), 0);
  for (int i = 0; i < b.n; ++i) {
    Fiber* f = b.fibers[i];
    f->linear = i;
    f->lane = i % kWarp;
    f->warp = i / kWarp;
    f->tid = {unsigned(i) % bd[0], unsigned(i) / bd[0] % bd[1], unsigned(i) / (bd[0] * bd[1])};
  }
  block_dim = {bd[0], bd[1], bd[2]};
  grid_dim = {gd[0], gd[1], gd[2]};
#if defined(CUDA_EMU_ASAN)
  // Shared memory past what the launch asked for is out of bounds.
  ASAN_POISON_MEMORY_REGION(cuda_emu_dynamic_shared + c.shared, kSharedPerBlockOptin - c.shared);
#endif
  tsan_ignore_begin();  // the host's poisoning, stack frames and bookkeeping
  host.block = &b;
  std::string error;
#if defined(CUDA_EMU_ASAN)
  const size_t guard = 0;  // ASan sees the poisoned rest of the arena
#else
  const size_t guard = std::min<size_t>(1024, kSharedPerBlockOptin - c.shared);
#endif
  for (unsigned z = 0; z < gd[2] && error.empty(); ++z)
    for (unsigned y = 0; y < gd[1] && error.empty(); ++y)
      for (unsigned x = 0; x < gd[0] && error.empty(); ++x) {
        block_idx = {x, y, z};
        ++stats.blocks;
        stats.threads += uint64_t(b.n);
        // NaN in float and double views, and past the end a guard that a write breaks.
        std::memset(cuda_emu_dynamic_shared, 0xff, c.shared + guard);
        b.done = b.at_barrier = 0;
        std::fill(b.exited.begin(), b.exited.end(), 0u);
        b.ready.clear();
        for (int i = 0; i < b.n; ++i) {
          prepare(b.fibers[i]);
          b.ready.push_back(b.fibers[i]);
        }
        if (b.order == Order::Reverse)
          std::reverse(b.ready.begin(), b.ready.end());
        else if (b.order == Order::WarpAhead)  // last warp first, its lanes in order
          std::stable_sort(b.ready.begin(), b.ready.end(), [](Fiber* p, Fiber* q) { return p->warp > q->warp; });
        tsan_release(b.launch_token);  // the poison above, and the blocks before this one
        while (!b.ready.empty() && b.error.empty()) switch_into(next_ready(b));
        if (b.error.empty() && b.done < b.n)
          b.error = "deadlock: of " + std::to_string(b.n) + " threads " + std::to_string(b.done) + " finished, " +
                    waiting_summary(b);
        for (size_t i = c.shared; i < c.shared + guard && b.error.empty(); ++i)
          if (cuda_emu_dynamic_shared[i] != 0xff)
            b.error = "wrote past its " + std::to_string(c.shared) + " bytes of dynamic shared memory (at byte " +
                      std::to_string(i) + ")";
        if (!b.error.empty()) {
          error = kernel_at(b) + ": " + b.error;
          // Every thread still inside the kernel resumes into an Abort and unwinds, so its
          // stack is clean for the next launch and its accesses are ordered before ours.
          for (int i = 0; i < b.n; ++i)
            if (b.fibers[i]->started && b.fibers[i]->state != Fiber::State::Done) switch_into(b.fibers[i]);
          for (Pending* p : b.open) host.free_pending.push_back(p);
          b.open.clear();
        }
        // Blocks share the emulator's shared memory and run one after another: TSan sees
        // them ordered, or every block's reuse of "its" shared memory would be a race.
        tsan_acquire(b.done_token);
      }
  host.block = nullptr;
  tsan_ignore_end();
  tsan_acquire(b.done_token);
#if defined(CUDA_EMU_ASAN)
  ASAN_UNPOISON_MEMORY_REGION(cuda_emu_dynamic_shared, kSharedPerBlockOptin);
#endif
  if (!error.empty()) {
    fail(cudaErrorLaunchFailure, error);
    return;
  }
  for (int i = 0; i < n_pointers; ++i) {
    std::string where;
    if (!check_canary(pointers[i].ptr, where)) {
      fail(cudaErrorIllegalAddress,
           name() + ": wrote past the end of device allocation " + where + ", which argument " +
               std::to_string(pointers[i].index) + " points into");
      return;
    }
  }
}

}  // namespace cuda_emu

// Counter-based RNG (Philox4x32-10, Salmon et al. 2011). A draw is a pure function of
// (seed, counter), so CPU and CUDA produce the same numbers for a seed, any thread can
// generate any slice, and a run resumes exactly by saving (seed, offset).
#pragma once
#include <array>
#include <cstdint>

namespace nmperm {

std::array<uint32_t, 4> philox4x32(uint64_t seed, uint64_t counter);

// A stream of numbers: each call to next_block() consumes one Philox counter.
struct Generator {
  uint64_t seed = 0;
  uint64_t offset = 0;  // counters consumed so far; save it to resume
  explicit Generator(uint64_t s = 0) : seed(s) {}
  // Reserves n counters and returns the first: callers fill from [first, first + n).
  uint64_t reserve(uint64_t n) { uint64_t first = offset; offset += n; return first; }
  uint64_t next_u64();
  double uniform();          // [0, 1)
  int64_t randint(int64_t n);  // [0, n)
};

// Uniform [0, 1) from 24 bits (float) or 53 bits (double).
inline float u32_to_unit_float(uint32_t x) { return float(x >> 8) * (1.0f / 16777216.0f); }
inline double u64_to_unit_double(uint64_t x) { return double(x >> 11) * (1.0 / 9007199254740992.0); }

}  // namespace nmperm

// Vectorized exp for the CPU kernels. glibc's expf is a scalar call the compiler cannot
// vectorize without -ffast-math (which would also break the NaN/Inf handling we rely on),
// so float exp is written with GCC vector extensions, 8 lanes (AVX2, the build's baseline)
// or 16 (AVX-512, chosen at run time): Cephes' range reduction x = n ln2 + r, a degree-6
// polynomial for e^r, then 2^n through the exponent bits. Max relative error about 2 ulp;
// below the float range the result is exactly 0 (so exp(-inf) = 0); NaN stays NaN. Double
// keeps std::exp (gradcheck precision).
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "core/error.h"

namespace nmperm::kernels {

typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef float f32x16 __attribute__((vector_size(64)));
typedef int32_t i32x16 __attribute__((vector_size(64)));

// Code for 16 lanes is compiled for AVX-512 and called only where the CPU has it; flatten
// inlines everything it calls (exp_v, the op formulas), so that is compiled for AVX-512 too.
#define NMPERM_AVX512 __attribute__((target("avx512f"), flatten))

// Whether float exp/erf run 16 lanes at a time: on CPUs with AVX-512 unless NMPERM_LANES=8.
// Each lane computes the same formula with the same operations in either width, so the
// results are bitwise the same (Kernels.SixteenLanesGiveTheBitsOfEight); only speed differs.
inline bool& wide_lanes_flag() {
  static bool on = [] {
    const char* e = std::getenv("NMPERM_LANES");
    std::string v = e ? e : "";
    NMPERM_CHECK(v.empty() || v == "8" || v == "16", "NMPERM_LANES={} is not 8 or 16", v);
    return v != "8" && __builtin_cpu_supports("avx512f");
  }();
  return on;
}
inline bool wide_lanes() { return wide_lanes_flag(); }
// Chooses the width (16 only where the CPU has AVX-512); returns the previous choice. For tests.
inline bool set_wide_lanes(bool on) {
  bool was = wide_lanes_flag();
  wide_lanes_flag() = on && __builtin_cpu_supports("avx512f");
  return was;
}

// exp for V = float, f32x8 or f32x16 (one body, so scalar tails match the vector lanes exactly).
template <class V> inline V exp_v(V x) {
  const float kLo = -87.0f, kHi = 88.0f, kMagic = 12582912.0f;  // 1.5 * 2^23 rounds to an integer
  V xc = x < kLo ? V{} + kLo : x;
  xc = xc > kHi ? V{} + kHi : xc;
  V n = (xc * 1.44269504088896341f + kMagic) - kMagic;
  V r = xc - n * 0.693359375f - n * -2.12194440e-4f;
  V p = V{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  V y = p * r * r + r + 1.0f;
  V scale;
  if constexpr (sizeof(V) == 4) {
    scale = std::bit_cast<float>((int32_t(n) + 127) << 23);
  } else {
    using I = std::conditional_t<sizeof(V) == 32, i32x8, i32x16>;
    I bits = (__builtin_convertvector(n, I) + 127) << 23;
    std::memcpy(&scale, &bits, sizeof scale);
  }
  V out = y * scale;
  out = x < kLo ? V{} : out;
  out = x > kHi ? V{} + INFINITY : out;
  return x != x ? x : out;
}
inline f32x8 exp_f32x8(f32x8 x) { return exp_v(x); }
inline float exp_f32(float x) { return exp_v(x); }

// erf for V = float, f32x8 or f32x16: Abramowitz & Stegun 7.1.26, |error| < 1.5e-7.
template <class V> inline V erf_v(V x) {
  V ax = x < 0.0f ? -x : x;
  V t = 1.0f / (1.0f + 0.3275911f * ax);
  V poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  V y = 1.0f - poly * exp_v(-ax * ax);
  return x < 0.0f ? -y : y;
}

// exp_shift_sum's blocks of 16 (AVX-512): the exps 16 at a time, added into the 8-lane
// sums in the order the 8-lane loop adds them. Returns how many elements it did.
NMPERM_AVX512 inline int64_t exp_shift_sum_16(const float* x, float shift, float* y, int64_t n, f32x8& acc) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    f32x16 v;
    std::memcpy(&v, x + i, sizeof v);
    f32x16 e = exp_v(v - shift);
    if (y) std::memcpy(y + i, &e, sizeof e);
    f32x8 lo, hi;
    std::memcpy(&lo, &e, sizeof lo);
    std::memcpy(&hi, reinterpret_cast<const char*>(&e) + sizeof lo, sizeof hi);
    acc += lo;
    acc += hi;
  }
  return i;
}

// y[i] = exp(x[i] - shift) (y may be null), returns the sum. x and y may be the same array.
template <class T> inline T exp_shift_sum(const T* x, T shift, T* y, int64_t n) {
  if constexpr (sizeof(T) == 4) {
    f32x8 acc{};
    int64_t i = wide_lanes() ? exp_shift_sum_16(x, shift, y, n, acc) : 0;
    for (; i + 8 <= n; i += 8) {
      f32x8 v;
      std::memcpy(&v, x + i, sizeof v);
      f32x8 e = exp_f32x8(v - shift);
      if (y) std::memcpy(y + i, &e, sizeof e);
      acc += e;
    }
    float s = 0;
    for (int k = 0; k < 8; ++k) s += acc[k];
    for (; i < n; ++i) {
      float e = exp_f32(x[i] - shift);
      if (y) y[i] = e;
      s += e;
    }
    return s;
  } else {
    T s = 0;
    for (int64_t i = 0; i < n; ++i) {
      T e = std::exp(x[i] - shift);
      if (y) y[i] = e;
      s += e;
    }
    return s;
  }
}

// max over x[0..n) (-inf for n = 0), with 8 independent lanes instead of one long
// dependency chain.
template <class T> inline T max_of(const T* x, int64_t n) {
  T m = -INFINITY;
  int64_t i = 0;
  if constexpr (sizeof(T) == 4) {
    if (n >= 8) {
      f32x8 acc;
      std::memcpy(&acc, x, sizeof acc);
      for (i = 8; i + 8 <= n; i += 8) {
        f32x8 v;
        std::memcpy(&v, x + i, sizeof v);
        acc = v > acc ? v : acc;
      }
      for (int k = 0; k < 8; ++k) m = acc[k] > m ? acc[k] : m;
    }
  }
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// sum of a[i] * b[i] (b null: sum of a[i]) with 8 independent float lanes; GCC does not
// vectorize `omp simd reduction` loops reliably, and a single accumulator is latency-bound.
template <class T> inline T dot(const T* a, const T* b, int64_t n) {
  T s = 0;
  int64_t i = 0;
  if constexpr (sizeof(T) == 4) {
    f32x8 acc{};
    for (; i + 8 <= n; i += 8) {
      f32x8 va, vb;
      std::memcpy(&va, a + i, sizeof va);
      if (b) std::memcpy(&vb, b + i, sizeof vb);
      acc += b ? va * vb : va;
    }
    for (int k = 0; k < 8; ++k) s += acc[k];
  }
  for (; i < n; ++i) s += b ? a[i] * b[i] : a[i];
  return s;
}

// sum of a[i] * b[i] * c[i].
template <class T> inline T dot3(const T* a, const T* b, const T* c, int64_t n) {
  T s = 0;
  int64_t i = 0;
  if constexpr (sizeof(T) == 4) {
    f32x8 acc{};
    for (; i + 8 <= n; i += 8) {
      f32x8 va, vb, vc;
      std::memcpy(&va, a + i, sizeof va);
      std::memcpy(&vb, b + i, sizeof vb);
      std::memcpy(&vc, c + i, sizeof vc);
      acc += va * vb * vc;
    }
    for (int k = 0; k < 8; ++k) s += acc[k];
  }
  for (; i < n; ++i) s += a[i] * b[i] * c[i];
  return s;
}

// sum of (x[i] - m)^2: the centred second moment, without the cancellation of E[x^2] - m^2.
template <class T> inline T sum_sq_dev(const T* x, T m, int64_t n) {
  T s = 0;
  int64_t i = 0;
  if constexpr (sizeof(T) == 4) {
    f32x8 acc{};
    for (; i + 8 <= n; i += 8) {
      f32x8 v;
      std::memcpy(&v, x + i, sizeof v);
      v -= m;
      acc += v * v;
    }
    for (int k = 0; k < 8; ++k) s += acc[k];
  }
  for (; i < n; ++i) s += (x[i] - m) * (x[i] - m);
  return s;
}

// exp for float, f32x8 (the polynomial above) or double (std::exp, gradcheck precision).
template <class T> inline T vexp(T x) {
  if constexpr (std::is_same_v<T, double>) return std::exp(x);
  else return exp_v(x);
}

}  // namespace nmperm::kernels

// bf16 and f16: 16-bit storage types. Arithmetic happens in float: a value converts to
// float implicitly and is built from any number by rounding to nearest, ties to even (as
// PyTorch, cuBLAS and oneDNN round). The bit manipulation is written out so that one
// definition serves the CPU, CUDA kernels and the emulator alike.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define NMPERM_HD __host__ __device__
#else
#define NMPERM_HD
#endif

namespace nmperm {

namespace half_bits {

// The same bytes read as another type (memcpy: well defined, and a plain move in CUDA code).
template <class To, class From> NMPERM_HD inline To same_bits(From v) {
  static_assert(sizeof(To) == sizeof(From));
  To t;
  std::memcpy(&t, &v, sizeof(To));
  return t;
}
NMPERM_HD inline uint32_t float_bits(float f) { return same_bits<uint32_t>(f); }
NMPERM_HD inline float bits_float(uint32_t u) { return same_bits<float>(u); }

// bf16 is the high half of a float; rounding adds just under half an ulp, plus one when
// the kept part is odd. NaN keeps a quiet-NaN payload instead of rounding to infinity.
NMPERM_HD inline uint16_t bf16_from_float(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
NMPERM_HD inline float bf16_to_float(uint16_t h) { return bits_float(uint32_t(h) << 16); }

// IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits; subnormals below 2^-14.
NMPERM_HD inline uint16_t f16_from_float(float f) {
  uint32_t u = float_bits(f);
  uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);          // NaN
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);         // rounds to >= 65520: infinity
  if (a < 0x38800000u) {                                          // below 2^-14: subnormal or zero
    if (a < 0x33000000u) return sign;                             // below half the smallest subnormal
    uint32_t mant = (a & 0x7fffffu) | 0x800000u;
    int shift = 126 - int(a >> 23);                               // 14 + (113 - exponent)
    uint32_t kept = mant >> shift, rest = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (kept & 1u))) ++kept;
    return uint16_t(sign | kept);
  }
  uint32_t r = a - 0x38000000u;                                   // rebias 127 -> 15 (in place)
  r += 0xfffu + ((r >> 13) & 1u);
  return uint16_t(sign | (r >> 13));
}
NMPERM_HD inline float f16_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f) return bits_float(sign | 0x7f800000u | (m << 13));
  if (e == 0) {
    if (m == 0) return bits_float(sign);
    float v = float(m) * 5.9604644775390625e-8f;  // m * 2^-24
    return sign ? -v : v;
  }
  return bits_float(sign | ((e + 112u) << 23) | (m << 13));
}

}  // namespace half_bits

// A 16-bit float format: its bits, rounded from any number, read back as a float.
template <uint16_t (*From)(float), float (*To)(uint16_t)> struct Half16 {
  uint16_t bits = 0;
  Half16() = default;
  template <class T> NMPERM_HD explicit Half16(T v) : bits(From(float(v))) {}
  NMPERM_HD operator float() const { return To(bits); }
};
using bf16 = Half16<half_bits::bf16_from_float, half_bits::bf16_to_float>;
using f16 = Half16<half_bits::f16_from_float, half_bits::f16_to_float>;

static_assert(sizeof(bf16) == 2 && sizeof(f16) == 2);

}  // namespace nmperm

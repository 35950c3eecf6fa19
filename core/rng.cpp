#include "core/rng.h"

namespace nmperm {

std::array<uint32_t, 4> philox4x32(uint64_t seed, uint64_t counter) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  uint32_t c0 = uint32_t(counter), c1 = uint32_t(counter >> 32), c2 = 0, c3 = 0;
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = uint64_t(M0) * c0, p1 = uint64_t(M1) * c2;
    uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ k0, n2 = uint32_t(p0 >> 32) ^ c3 ^ k1;
    c0 = n0; c1 = uint32_t(p1); c2 = n2; c3 = uint32_t(p0);
    k0 += W0; k1 += W1;
  }
  return {c0, c1, c2, c3};
}

uint64_t Generator::next_u64() {
  auto r = philox4x32(seed, reserve(1));
  return (uint64_t(r[0]) << 32) | r[1];
}

double Generator::uniform() { return u64_to_unit_double(next_u64()); }

int64_t Generator::randint(int64_t n) {
  // Rejection sampling: unbiased for any n.
  uint64_t un = uint64_t(n), limit = UINT64_MAX - UINT64_MAX % un;
  for (;;) {
    uint64_t x = next_u64();
    if (x < limit) return int64_t(x % un);
  }
}

}  // namespace nmperm

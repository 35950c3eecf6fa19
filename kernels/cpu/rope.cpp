#include "kernels/rope.h"
#include "kernels/cpu/launchers.h"

#include <cmath>
#include <vector>

#include "kernels/heads.h"

namespace nmperm::kernels {

std::vector<double> rope_inv_freq(double theta, int64_t D) {
  std::vector<double> f(static_cast<size_t>(D / 2));
  for (int64_t i = 0; i < D / 2; ++i) f[size_t(i)] = std::pow(theta, -double(2 * i) / double(D));
  return f;
}

namespace cpu {

void rope(const Tensor& x, Tensor& out, int64_t pos_offset, const std::vector<double>& inv_freq, RopeStyle style,
          bool inverse) {
  NMPERM_CHECK(x.ndim() == 4 && x.shape(3) % 2 == 0, "rope: expects (B, H, T, D) with even D, got {}", x.shape());
  NMPERM_CHECK(out.is_contiguous() && out.shape() == x.shape(), "rope: out {} must be packed like x {}", describe(out),
               describe(x));
  int64_t H = x.shape(1), BH = x.shape(0) * H, T = x.shape(2), D = x.shape(3), half = D / 2;
  HeadRows xs = head_rows(x, "rope: x");  // x may be a view of heads split from rows
  NMPERM_CHECK(int64_t(inv_freq.size()) == half, "rope: {} frequencies for head size {}", inv_freq.size(), D);
  dispatch_float(x.dtype(), [&]<class F>() {
    // cos/sin table (T, D/2), computed in double like the reference implementations' f32
    // angle would be too coarse at long contexts.
    std::vector<F> cs(static_cast<size_t>(T * half)), sn(static_cast<size_t>(T * half));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < half; ++i) {
        double a = double(pos_offset + t) * inv_freq[size_t(i)];
        cs[size_t(t * half + i)] = F(std::cos(a));
        sn[size_t(t * half + i)] = F(inverse ? -std::sin(a) : std::sin(a));
      }
    const F* xp = x.data<F>();
    F* op = out.data<F>();
#pragma omp parallel for collapse(2) if (BH * T * D > 32768)
    for (int64_t bh = 0; bh < BH; ++bh)
      for (int64_t t = 0; t < T; ++t) {
        const F* xr = xp + bh / H * xs.b + bh % H * xs.h + t * xs.t;
        F* orow = op + (bh * T + t) * D;
        const F* c = cs.data() + t * half;
        const F* s = sn.data() + t * half;
        if (style == RopeStyle::RotateHalf) {
          for (int64_t i = 0; i < half; ++i) {
            F a = xr[i], b = xr[i + half];
            orow[i] = a * c[i] - b * s[i];
            orow[i + half] = b * c[i] + a * s[i];
          }
        } else {
          for (int64_t i = 0; i < half; ++i) {
            F a = xr[2 * i], b = xr[2 * i + 1];
            orow[2 * i] = a * c[i] - b * s[i];
            orow[2 * i + 1] = b * c[i] + a * s[i];
          }
        }
      }
  });
}

}  // namespace cpu

}  // namespace nmperm::kernels

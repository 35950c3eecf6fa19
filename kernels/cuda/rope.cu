// CUDA rotary position embedding (kernels/rope.h). The cos/sin table (T, D/2) is computed
// on the host in double exactly as the CPU kernel does and uploaded, so both backends
// rotate by the same angles; the kernel has one thread per rotated pair.
#include <cmath>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace nmperm::kernels::cuda {

namespace {

template <class F>
__global__ void rope_kernel(const F* x, F* out, const F* cs, const F* sn, int64_t pairs, int64_t T, int64_t half,
                            bool interleaved) {
  NMPERM_GRID_STRIDE(e, pairs) {
    int64_t i = e % half, row = e / half, t = row % T;
    int64_t a_at = interleaved ? 2 * i : i, b_at = interleaved ? 2 * i + 1 : i + half;
    const F* xr = x + row * 2 * half;
    F* orow = out + row * 2 * half;
    F a = xr[a_at], b = xr[b_at], c = cs[t * half + i], s = sn[t * half + i];
    orow[a_at] = a * c - b * s;
    orow[b_at] = b * c + a * s;
  }
}

}  // namespace

void rope(const Tensor& x, Tensor& out, int64_t pos_offset, const std::vector<double>& inv_freq, RopeStyle style,
          bool inverse) {
  NMPERM_CHECK(x.ndim() == 4 && x.shape(3) % 2 == 0, "rope: expects (B, H, T, D) with even D, got {}", x.shape());
  NMPERM_CHECK(x.is_contiguous() && out.is_contiguous() && out.shape() == x.shape(),
               "rope: the CUDA kernel wants contiguous x and out of one shape, got {} and {}", describe(x),
               describe(out));
  int64_t T = x.shape(2), D = x.shape(3), half = D / 2, pairs = x.numel() / 2;
  NMPERM_CHECK(int64_t(inv_freq.size()) == half, "rope: {} frequencies for head size {}", inv_freq.size(), D);
  if (pairs == 0) return;
  on_float(x.dtype(), [&](auto F_tag) {
    using F = decltype(F_tag);
    std::vector<F> table(static_cast<size_t>(2 * T * half));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < half; ++i) {
        double a = double(pos_offset + t) * inv_freq[size_t(i)];
        table[size_t(t * half + i)] = F(std::cos(a));
        table[size_t(T * half + t * half + i)] = F(inverse ? -std::sin(a) : std::sin(a));
      }
    Tensor dev = upload(table);
    const F* cos_sin = static_cast<const F*>(dev.raw_data());
    NMPERM_LAUNCH(grid_for(pairs), kThreads, 0, stream(), rope_kernel<F>)
        (x.data<F>(), out.data<F>(), cos_sin, cos_sin + T * half, pairs, T, half, style == RopeStyle::Interleaved);
  });
  check_launch("rope");
}

}  // namespace nmperm::kernels::cuda

// Rotary position embedding on x (B, H, T, D), position of token t = pos_offset + t,
// pair i rotated by angle position * inv_freq[i] (inv_freq has D/2 entries: the default
// RoPE's theta^(-2i/D), or a scaled table, see rope_inv_freq). Two conventions:
//   RotateHalf (Hugging Face Llama): pairs (x[i], x[i + D/2])
//   Interleaved (original RoFormer/GPT-J/Meta): pairs (x[2i], x[2i + 1])
// inverse = true rotates by -angle, which is the backward (rotations are orthogonal).
// out is packed; on the CPU x may be a view of heads with strided rows (kernels/heads.h),
// the CUDA kernel takes it packed.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace nmperm::kernels {

enum class RopeStyle { RotateHalf, Interleaved };
void rope(const Tensor& x, Tensor& out, int64_t pos_offset, const std::vector<double>& inv_freq, RopeStyle style,
          bool inverse);
// The default RoPE's inverse frequencies theta^(-2i/D), i < D/2.
std::vector<double> rope_inv_freq(double theta, int64_t D);

}  // namespace nmperm::kernels

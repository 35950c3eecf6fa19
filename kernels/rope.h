// Rotary position embedding on x (B, H, T, D), position of token t = pos_offset + t,
// frequency i = theta^(-2i/D). Two conventions:
//   RotateHalf (Hugging Face Llama): pairs (x[i], x[i + D/2])
//   Interleaved (original RoFormer/GPT-J/Meta): pairs (x[2i], x[2i + 1])
// inverse = true rotates by -angle, which is the backward (rotations are orthogonal).
#pragma once
#include "core/tensor.h"

namespace nmperm::kernels {

enum class RopeStyle { RotateHalf, Interleaved };
void rope(const Tensor& x, Tensor& out, int64_t pos_offset, double theta, RopeStyle style, bool inverse);

}  // namespace nmperm::kernels

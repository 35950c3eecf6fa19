// The CUDA backend: the launchers of kernels/<op>.h for tensors on the GPU
// (kernels/dispatch.cpp sends a call here when its tensors live there), and its settings.
// Plain C++: no CUDA types leak out.
#pragma once
#include "core/tensor.h"
#include "kernels/elementwise.h"
#include "kernels/optim.h"
#include "kernels/reduce.h"
#include "kernels/rope.h"

namespace nmperm::kernels::cuda {
#include "kernels/backend_launchers.inc"

// TF32 tensor cores for f32 matmuls (off until asked for).
void set_allow_tf32(bool allow);
}  // namespace nmperm::kernels::cuda

// The CPU backend: the launchers of kernels/<op>.h for tensors in host memory
// (kernels/dispatch.cpp sends a call here when its tensors live there).
#pragma once
#include "core/tensor.h"
#include "kernels/elementwise.h"
#include "kernels/optim.h"
#include "kernels/reduce.h"
#include "kernels/rope.h"

namespace nmperm::kernels::cpu {
#include "kernels/backend_launchers.inc"
}  // namespace nmperm::kernels::cpu

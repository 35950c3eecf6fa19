// The arithmetic of each BinaryOp on one pair of elements, shared by the CPU kernels and
// the CUDA kernels (compiled for both host and device there).
#pragma once
#include "kernels/elementwise.h"

#ifdef __CUDACC__
#define NMPERM_HOST_DEVICE __host__ __device__
#else
#define NMPERM_HOST_DEVICE
#endif

namespace nmperm::kernels {

template <class T> NMPERM_HOST_DEVICE inline T binary_fn(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
    case BinaryOp::Maximum: return a > b ? a : b;  // NaN-propagation aside, PyTorch-compatible for finite
    case BinaryOp::Minimum: return a < b ? a : b;
    case BinaryOp::Eq: return T(a == b);
    case BinaryOp::Ne: return T(a != b);
    case BinaryOp::Lt: return T(a < b);
    case BinaryOp::Le: return T(a <= b);
    case BinaryOp::Gt: return T(a > b);
    case BinaryOp::Ge: return T(a >= b);
  }
  return a;
}

}  // namespace nmperm::kernels

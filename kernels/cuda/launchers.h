// CUDA launchers: the same signatures as the CPU kernels in kernels/<op>.h, for tensors
// on the GPU. The CPU launchers route here when their first tensor is on CUDA (see
// NMPERM_ROUTE_CUDA); each CUDA launcher checks that every tensor is on CUDA. Plain C++:
// no CUDA types leak into the rest of the code.
#pragma once
#include "core/tensor.h"
#include "kernels/elementwise.h"
#include "kernels/optim.h"
#include "kernels/reduce.h"

namespace nmperm::kernels::cuda {

// dst = src for any strides and float/index dtypes on both sides, both on the GPU.
void copy(const Tensor& src, Tensor& dst);

void unary(UnaryOp op, const Tensor& x, Tensor& out, double scalar);
void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, double scalar);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out);
void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out);
void scale_(Tensor& t, double s);

void reduce_rows(ReduceOp op, const Tensor& x, Tensor& out, int64_t correction);
void reduce_cols(ReduceOp op, const Tensor& x, Tensor& out);

void softmax_rows(const Tensor& x, Tensor& y, bool log);
void softmax_rows_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool log);

void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, Tensor& y, Tensor& mean, Tensor& rstd);
void layer_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd, const Tensor& dy,
                         Tensor& dx, Tensor& dw, Tensor& db);
void rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd);
void rms_norm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dw);

// c = alpha * a @ b + beta * c on 3-d views (batch, rows, cols) through cuBLAS; TF32
// tensor cores only after set_allow_tf32(true).
void matmul(const Tensor& a, const Tensor& b, Tensor& c, double alpha, double beta);
void set_allow_tf32(bool allow);

void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p, int64_t step);
double sum_squares(const Tensor& t);

}  // namespace nmperm::kernels::cuda

// In a CPU launcher: hand the call to the CUDA launcher when `t` lives on the GPU.
#ifdef NMPERM_WITH_CUDA
#define NMPERM_ROUTE_CUDA(t, ...) \
  if ((t).defined() && (t).device() == ::nmperm::Device::CUDA) return ::nmperm::kernels::cuda::__VA_ARGS__
#else
#define NMPERM_ROUTE_CUDA(t, ...)
#endif

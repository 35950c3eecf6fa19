// The CUDA backend: the launchers of kernels/<op>.h with the same signatures, for tensors
// on the GPU (kernels/dispatch.cpp sends a call here when its tensors live there; its
// twin for the CPU is kernels/cpu/launchers.h). Plain C++: no CUDA types leak out.
#pragma once
#include "core/tensor.h"
#include "kernels/elementwise.h"
#include "kernels/optim.h"
#include "kernels/reduce.h"
#include "kernels/rope.h"

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

void index_select(const Tensor& x, int64_t dim, const Tensor& idx, Tensor& out);
void index_add(Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src);
void gather(const Tensor& x, int64_t dim, const Tensor& idx, Tensor& out);
void scatter_add(Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src);

void cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index, double label_smoothing,
                   Tensor& loss_rows, Tensor& lse);
void cross_entropy_backward(const Tensor& logits, const Tensor& target, const Tensor& lse, const Tensor& grad_rows,
                            int64_t ignore_index, double label_smoothing, Tensor& dlogits);

void rope(const Tensor& x, Tensor& out, int64_t pos_offset, const std::vector<double>& inv_freq, RopeStyle style,
          bool inverse);
void topk(const Tensor& x, int64_t k, bool largest, Tensor& values, Tensor& indices);

void attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse, double scale, bool causal);
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv, double scale, bool causal);

void sinkhorn(const Tensor& logits, int64_t iters, Tensor& p, Tensor& row_norm, Tensor& col_norm);
void sinkhorn_backward(const Tensor& logits, const Tensor& row_norm, const Tensor& col_norm, const Tensor& dp,
                       Tensor& dlogits);

void adamw(const std::vector<AdamWSlot>& slots, Tensor& m, Tensor& v, const AdamWParams& p, int64_t step);
double sum_squares(const std::vector<Tensor>& ts);

}  // namespace nmperm::kernels::cuda

// The one place that picks a backend. Every launcher of kernels/<op>.h runs on the device
// of its tensors: the CPU kernels (kernels/cpu/, declared in kernels/cpu/launchers.h) or
// the CUDA kernels (kernels/cuda/, declared in kernels/cuda/launchers.h), which have the
// same signatures. The tensors of one call must all be on one device: a call that mixes
// devices, or reaches for CUDA in a build without it, is an error naming the op and tensor.
#include "core/profile.h"
#include "kernels/attention.h"
#include "kernels/cpu/launchers.h"
#include "kernels/elementwise.h"
#include "kernels/index.h"
#include "kernels/loss.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "kernels/optim.h"
#include "kernels/reduce.h"
#include "kernels/rope.h"
#include "kernels/runtime.h"
#include "kernels/sinkhorn.h"
#include "kernels/softmax.h"
#include "kernels/topk.h"
#ifdef NMPERM_WITH_CUDA
#include "kernels/cuda/launchers.h"
#endif

namespace nmperm::kernels {

namespace {

// The device every defined tensor of the call is on.
Device device_of(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t->defined()) continue;
    if (!first) first = t;
    NMPERM_CHECK(t->device() == first->device(), "{}: tensors on different devices: {} and {}", op, describe(*first),
                 describe(*t));
  }
  Device d = first ? first->device() : Device::CPU;
#ifndef NMPERM_WITH_CUDA
  NMPERM_CHECK(d == Device::CPU, "{}: no kernel for device {} in this build (tensor {})", op, d, describe(*first));
#endif
  if (d == Device::CPU) cpu_init();
  return d;
}

}  // namespace

// NMPERM_RUN(op, {tensors...}, launcher(args...)): the launcher of the tensors' backend, timed into
// its op family while profiling is on (core/profile.h).
#ifdef NMPERM_WITH_CUDA
#define NMPERM_RUN(op, tensors, ...)      \
  profile::Scope nmperm_profile_scope(op); \
  return device_of(op, std::initializer_list<const Tensor*> tensors) == Device::CUDA ? cuda::__VA_ARGS__ : cpu::__VA_ARGS__
#else
#define NMPERM_RUN(op, tensors, ...)      \
  profile::Scope nmperm_profile_scope(op); \
  return (device_of(op, std::initializer_list<const Tensor*> tensors), cpu::__VA_ARGS__)
#endif

void unary(UnaryOp op, const Tensor& x, Tensor& out, double scalar) {
  NMPERM_RUN(unary_name(op), ({&x, &out}), unary(op, x, out, scalar));
}
void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, double scalar) {
  NMPERM_RUN(unary_name(op), ({&x, &y, &dy, &dx}), unary_backward(op, x, y, dy, dx, scalar));
}
void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) {
  NMPERM_RUN("swiglu", ({&gate, &up, &out}), swiglu(gate, up, out));
}
void swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dy, Tensor& dgate, Tensor& dup) {
  NMPERM_RUN("swiglu", ({&gate, &up, &dy, &dgate, &dup}), swiglu_backward(gate, up, dy, dgate, dup));
}
void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  NMPERM_RUN(binary_name(op), ({&out, &a, &b}), binary(op, a, b, out));
}
void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
  NMPERM_RUN("where", ({&out, &cond, &a, &b}), where(cond, a, b, out));
}
void scale_(Tensor& t, double s) { NMPERM_RUN("scale_", ({&t}), scale_(t, s)); }

void reduce_rows(ReduceOp op, const Tensor& x, Tensor& out, int64_t correction) {
  NMPERM_RUN("reduce", ({&x, &out}), reduce_rows(op, x, out, correction));
}
void reduce_cols(ReduceOp op, const Tensor& x, Tensor& out) { NMPERM_RUN("reduce", ({&x, &out}), reduce_cols(op, x, out)); }

void softmax_rows(const Tensor& x, Tensor& y, bool log) {
  NMPERM_RUN(log ? "log_softmax" : "softmax", ({&x, &y}), softmax_rows(x, y, log));
}
void softmax_rows_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool log) {
  NMPERM_RUN(log ? "log_softmax_backward" : "softmax_backward", ({&y, &dy, &dx}), softmax_rows_backward(y, dy, dx, log));
}

void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, Tensor& y, Tensor& mean, Tensor& rstd) {
  NMPERM_RUN("layer_norm", ({&x, &w, &b, &y, &mean, &rstd}), layer_norm(x, w, b, eps, y, mean, rstd));
}
void layer_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd, const Tensor& dy,
                         Tensor& dx, Tensor& dw, Tensor& db) {
  NMPERM_RUN("layer_norm_backward", ({&x, &w, &mean, &rstd, &dy, &dx, &dw, &db}),
             layer_norm_backward(x, w, mean, rstd, dy, dx, dw, db));
}
void rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) {
  NMPERM_RUN("rms_norm", ({&x, &w, &y, &rstd}), rms_norm(x, w, eps, y, rstd));
}
void rms_norm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dw) {
  NMPERM_RUN("rms_norm_backward", ({&x, &w, &rstd, &dy, &dx, &dw}), rms_norm_backward(x, w, rstd, dy, dx, dw));
}

void matmul(const Tensor& a, const Tensor& b, Tensor& c, double alpha, double beta, const Tensor& bias) {
  NMPERM_RUN("matmul", ({&c, &a, &b}), matmul(a, b, c, alpha, beta, bias));
}

void index_select(const Tensor& x, int64_t dim, const Tensor& idx, Tensor& out) {
  NMPERM_RUN("index_select", ({&x, &idx, &out}), index_select(x, dim, idx, out));
}
void index_add(Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src) {
  NMPERM_RUN("index_add", ({&out, &idx, &src}), index_add(out, dim, idx, src));
}
void gather(const Tensor& x, int64_t dim, const Tensor& idx, Tensor& out) {
  NMPERM_RUN("gather", ({&x, &idx, &out}), gather(x, dim, idx, out));
}
void scatter_add(Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src) {
  NMPERM_RUN("scatter_add", ({&out, &idx, &src}), scatter_add(out, dim, idx, src));
}

void cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index, double label_smoothing,
                   Tensor& loss_rows, Tensor& lse) {
  NMPERM_RUN("cross_entropy", ({&logits, &target, &loss_rows, &lse}),
             cross_entropy(logits, target, ignore_index, label_smoothing, loss_rows, lse));
}
void cross_entropy_backward(const Tensor& logits, const Tensor& target, const Tensor& lse, const Tensor& grad_rows,
                            int64_t ignore_index, double label_smoothing, Tensor& dlogits) {
  NMPERM_RUN("cross_entropy_backward", ({&logits, &target, &lse, &grad_rows, &dlogits}),
             cross_entropy_backward(logits, target, lse, grad_rows, ignore_index, label_smoothing, dlogits));
}

void rope(const Tensor& x, Tensor& out, int64_t pos_offset, const std::vector<double>& inv_freq, RopeStyle style,
          bool inverse) {
  NMPERM_RUN("rope", ({&x, &out}), rope(x, out, pos_offset, inv_freq, style, inverse));
}

void topk(const Tensor& x, int64_t k, bool largest, Tensor& values, Tensor& indices) {
  NMPERM_RUN("topk", ({&x, &values, &indices}), topk(x, k, largest, values, indices));
}

void attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse, double scale, bool causal) {
  NMPERM_RUN("attention", ({&q, &k, &v, &out, &lse}), attention(q, k, v, out, lse, scale, causal));
}
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv, double scale, bool causal) {
  NMPERM_RUN("attention_backward", ({&q, &k, &v, &out, &lse, &dout, &dq, &dk, &dv}),
             attention_backward(q, k, v, out, lse, dout, dq, dk, dv, scale, causal));
}

void sinkhorn(const Tensor& logits, int64_t iters, Tensor& p, Tensor& row_norm, Tensor& col_norm) {
  NMPERM_RUN("sinkhorn", ({&logits, &p, &row_norm, &col_norm}), sinkhorn(logits, iters, p, row_norm, col_norm));
}
void sinkhorn_backward(const Tensor& logits, const Tensor& row_norm, const Tensor& col_norm, const Tensor& dp,
                       Tensor& dlogits) {
  NMPERM_RUN("sinkhorn_backward", ({&logits, &row_norm, &col_norm, &dp, &dlogits}),
             sinkhorn_backward(logits, row_norm, col_norm, dp, dlogits));
}

void adamw(const std::vector<AdamWSlot>& slots, Tensor& m, Tensor& v, const AdamWParams& p, int64_t step) {
  for (const AdamWSlot& s : slots) device_of("adamw", {&m, &s.param, &s.grad});
  NMPERM_RUN("adamw", ({&m, &v}), adamw(slots, m, v, p, step));
}
double sum_squares(const std::vector<Tensor>& ts) {
  if (ts.empty()) return 0.0;
  for (const Tensor& t : ts)
    NMPERM_CHECK(t.defined() && t.device() == ts[0].device() && t.dtype() == ts[0].dtype(),
                 "sum_squares: tensors must share one dtype and device, got {} and {}", describe(ts[0]), describe(t));
  NMPERM_RUN("sum_squares", ({&ts[0]}), sum_squares(ts));
}

}  // namespace nmperm::kernels

namespace nmperm {

// Declared in core/tensor.h: the element copy core asks of the kernel layer.
void copy_elements(const Tensor& src, Tensor& dst) {
  using namespace kernels;
  NMPERM_RUN("copy", ({&src, &dst}), copy(src, dst));
}

}  // namespace nmperm

#undef NMPERM_RUN

// The differentiable op set: what models, permutation methods and users call. Each op
// runs its kernel and, when an input requires grad, records a Node whose backward sits
// next to the forward in the same file (elementwise.cpp, reduce.cpp, shape.cpp,
// matmul.cpp, nn.cpp, index.cpp). Shapes follow PyTorch's conventions.
#pragma once
#include <utility>
#include <vector>

#include "autograd/node.h"
#include "kernels/rope.h"

namespace nmperm {

// --- elementwise (elementwise.cpp)
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor gelu(const Tensor& x, bool tanh_approximation = false);
Tensor silu(const Tensor& x);
// silu(gate) * up (Llama's gated MLP) in one pass each way, with the bits of the two ops.
Tensor swiglu(const Tensor& gate, const Tensor& up);
Tensor softplus(const Tensor& x);  // log(1 + e^x)
Tensor abs(const Tensor& x);
Tensor square(const Tensor& x);
Tensor pow(const Tensor& x, double exponent);
// Binary ops broadcast like NumPy; both inputs must share a dtype.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
// Comparisons return 0/1 in the inputs' dtype and carry no gradient.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
// cond != 0 ? a : b, broadcasting all three; gradient flows to a and b.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
// Scalar forms (the scalar takes x's dtype).
Tensor add(const Tensor& x, double s);
Tensor mul(const Tensor& x, double s);
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& x);
Tensor operator+(const Tensor& x, double s);
Tensor operator-(const Tensor& x, double s);
Tensor operator*(const Tensor& x, double s);
Tensor operator/(const Tensor& x, double s);
Tensor operator*(double s, const Tensor& x);
// Differentiable dtype cast (f32 <-> f64).
Tensor cast(const Tensor& x, DType dtype);

// --- reductions (reduce.cpp); empty dims = all dims
Tensor sum(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);
Tensor max(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);
Tensor min(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);
Tensor logsumexp(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);
Tensor var(const Tensor& x, std::vector<int64_t> dims = {}, int64_t correction = 1, bool keepdim = false);
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);  // i64, no gradient
Tensor argmin(const Tensor& x, int64_t dim, bool keepdim = false);
// Sums x down to `shape` (the inverse of broadcasting): how broadcast gradients reduce.
Tensor sum_to(const Tensor& x, const Shape& shape);

// --- shapes (shape.cpp); views where possible
Tensor reshape(const Tensor& x, const Shape& shape);
Tensor flatten(const Tensor& x, int64_t start_dim = 0, int64_t end_dim = -1);
Tensor transpose(const Tensor& x, int64_t a, int64_t b);
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
Tensor expand(const Tensor& x, const Shape& shape);
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor squeeze(const Tensor& x, int64_t dim);
Tensor contiguous(const Tensor& x);
Tensor cat(const std::vector<Tensor>& xs, int64_t dim);
Tensor stack(const std::vector<Tensor>& xs, int64_t dim);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim);

// --- linear algebra (matmul.cpp)
// (..., M, K) @ (..., K, N) -> (..., M, N) with broadcast batch dims; transposed views
// of either side cost no copy. 1-d operands are not promoted: reshape them.
Tensor matmul(const Tensor& a, const Tensor& b);
// y = x W^T + b, W (out, in) as in PyTorch/Hugging Face; b may be undefined.
// Mixed precision, as torch.autocast does for nn.Linear: when W is stored in bf16/f16, or
// inside a LinearPrecision scope, x and W are rounded to that dtype and multiplied with
// f32 accumulation into an f32 output (b stays f32). Gradients reach an f32 x and W (the
// master copies) in f32, computed from the same 16-bit operands; a 16-bit W cannot train.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());

// Sets the dtype linear() multiplies in on this thread (F32, BF16 or F16) until destroyed.
class LinearPrecision {
 public:
  explicit LinearPrecision(DType dtype);
  ~LinearPrecision();
  LinearPrecision(const LinearPrecision&) = delete;
  LinearPrecision& operator=(const LinearPrecision&) = delete;

 private:
  DType saved_;
};
DType linear_precision();  // F32 outside every scope
// "f32", "bf16" or "f16" (the --precision names) as a dtype; anything else is an error.
DType precision_dtype(const std::string& name);

// --- neural-network ops (nn.cpp)
Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);
// Over the last dim; w, b of shape (C) may be undefined.
Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps = 1e-5);
Tensor rms_norm(const Tensor& x, const Tensor& w, double eps = 1e-6);
// x (B, H, T, D); positions pos_offset .. pos_offset + T - 1; the default RoPE of base theta,
// or any table of D/2 inverse frequencies (scaled RoPE variants, kernels/rope.h).
Tensor rope(const Tensor& x, int64_t pos_offset = 0, double theta = 10000.0,
            kernels::RopeStyle style = kernels::RopeStyle::RotateHalf);
Tensor rope(const Tensor& x, int64_t pos_offset, const std::vector<double>& inv_freq,
            kernels::RopeStyle style = kernels::RopeStyle::RotateHalf);
// q (B, H, T, D), k/v (B, Hkv, S, D); scale < 0 means 1/sqrt(D).
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal = false,
                                    double scale = -1.0);
enum class Reduction { Mean, Sum, None };
// logits (N, V), target (N) of i32/i64; mean over rows whose target != ignore_index.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index = -100,
                     double label_smoothing = 0.0, Reduction reduction = Reduction::Mean);

// --- indexing (index.cpp)
Tensor embedding(const Tensor& weight, const Tensor& ids);  // (V, C), ids any shape -> (..., C)
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& idx);
// idx has x's shape except along dim.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& idx);
// Returns x with src added at idx along dim (out of place); idx and src share a shape that
// matches x except along dim.
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& idx, const Tensor& src);
// Top-k along the last dim: (values, i64 indices), sorted; values are differentiable.
std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k, bool largest = true);

}  // namespace nmperm

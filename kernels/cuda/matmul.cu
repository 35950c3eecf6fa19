// CUDA matmul through cuBLAS: one strided-batched GEMM per call. Row-major C = A @ B is
// computed as the column-major C^T = B^T A^T, so no operand is ever copied; a transposed
// view (column-major storage) becomes CUBLAS_OP_T, a broadcast batch a zero stride.
// TF32 tensor cores only when the user opts in (set_allow_tf32).
#include <cublas_v2.h>

#include <algorithm>
#include <mutex>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/matmul.h"

namespace nmperm::kernels::cuda {

namespace {

const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cuBLAS error";
  }
}

#define NMPERM_CUBLAS_CHECK(call)                                                                          \
  do {                                                                                                     \
    cublasStatus_t st_ = (call);                                                                           \
    NMPERM_CHECK(st_ == CUBLAS_STATUS_SUCCESS, "cuBLAS error {} in {}", cublas_status_name(st_), #call);   \
  } while (0)

bool g_allow_tf32 = false;

cublasHandle_t handle() {
  static cublasHandle_t h = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    NMPERM_CUBLAS_CHECK(cublasCreate(&h));
    NMPERM_CUBLAS_CHECK(cublasSetStream(h, stream()));
  });
  NMPERM_CUBLAS_CHECK(cublasSetMathMode(h, g_allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  return h;
}

void gemm(float alpha, const float* A, const float* B, float beta, float* C, cublasOperation_t opa,
          cublasOperation_t opb, int m, int n, int k, int lda, long long sa, int ldb, long long sb, int ldc,
          long long sc, int batch) {
  NMPERM_CUBLAS_CHECK(cublasSgemmStridedBatched(handle(), opb, opa, n, m, k, &alpha, B, ldb, sb, A, lda, sa, &beta, C,
                                                ldc, sc, batch));
}
void gemm(double alpha, const double* A, const double* B, double beta, double* C, cublasOperation_t opa,
          cublasOperation_t opb, int m, int n, int k, int lda, long long sa, int ldb, long long sb, int ldc,
          long long sc, int batch) {
  NMPERM_CUBLAS_CHECK(cublasDgemmStridedBatched(handle(), opb, opa, n, m, k, &alpha, B, ldb, sb, A, lda, sa, &beta, C,
                                                ldc, sc, batch));
}

// bf16/f16 operands, f32 output and accumulation: cuBLAS's mixed-precision GEMM.
void gemm_half(DType dtype, float alpha, const void* A, const void* B, float beta, float* C, cublasOperation_t opa,
               cublasOperation_t opb, int m, int n, int k, int lda, long long sa, int ldb, long long sb, int ldc,
               long long sc, int batch) {
  cudaDataType t = dtype == DType::BF16 ? CUDA_R_16BF : CUDA_R_16F;
  NMPERM_CUBLAS_CHECK(cublasGemmStridedBatchedEx(handle(), opb, opa, n, m, k, &alpha, B, t, ldb, sb, A, t, lda, sa,
                                                 &beta, C, CUDA_R_32F, ldc, sc, batch, CUBLAS_COMPUTE_32F,
                                                 CUBLAS_GEMM_DEFAULT));
}

int narrow_int(int64_t v, const char* what) {
  NMPERM_CHECK(v <= int64_t(INT32_MAX), "matmul: {} = {} exceeds cuBLAS's 32-bit sizes", what, v);
  return int(v);
}

}  // namespace

void set_allow_tf32(bool allow) { g_allow_tf32 = allow; }

void matmul(const Tensor& a, const Tensor& b, Tensor& c, double alpha, double beta, const Tensor& bias) {
  check_matmul(a, b, c, bias, beta);
  int64_t batch = c.shape(0), M = c.shape(1), N = c.shape(2), K = a.shape(2);
  if (batch == 0 || M == 0 || N == 0) return;
  if (bias.defined()) {  // cuBLAS's gemm has no bias: write it into C and accumulate
    bias_into_rows(bias, c);
    beta = 1.0;
  }
  if (K == 0) {  // empty inner dimension: C = beta * C (cuBLAS would not touch C)
    NMPERM_CHECK(c.is_contiguous(), "matmul: an empty inner dimension needs a contiguous output");
    if (beta == 0) {
      NMPERM_CUDA_CHECK(cudaMemsetAsync(c.raw_data(), 0, size_t(c.numel()) * dtype_size(c.dtype()), stream()));
    } else {
      Tensor cc = c;
      scale_(cc, beta);
    }
    return;
  }
  MatView va = matmul_operand(a, "A"), vb = matmul_operand(b, "B");
  auto op = [](const MatView& v) { return v.trans ? CUBLAS_OP_T : CUBLAS_OP_N; };
  if (is_half(a.dtype())) {
    gemm_half(a.dtype(), float(alpha), a.raw_data(), b.raw_data(), float(beta), c.data<float>(), op(va), op(vb),
              narrow_int(M, "M"), narrow_int(N, "N"), narrow_int(K, "K"), narrow_int(va.ld, "lda"), va.bstride,
              narrow_int(vb.ld, "ldb"), vb.bstride, narrow_int(c.stride(1), "ldc"), c.stride(0),
              narrow_int(batch, "batch"));
    return;
  }
  on_float(a.dtype(), [&](auto T_tag) {
    using T = decltype(T_tag);
    gemm(T(alpha), ptr<T>(a) + a.offset(), ptr<T>(b) + b.offset(), T(beta), c.data<T>(),
         op(va), op(vb), narrow_int(M, "M"),
         narrow_int(N, "N"), narrow_int(K, "K"), narrow_int(va.ld, "lda"), va.bstride, narrow_int(vb.ld, "ldb"),
         vb.bstride, narrow_int(c.stride(1), "ldc"), c.stride(0), narrow_int(batch, "batch"));
  });
}

}  // namespace nmperm::kernels::cuda

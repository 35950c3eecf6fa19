// Emulated cuBLAS: handles, streams and math modes, and column-major (strided batched)
// GEMMs over CBLAS. The argument checks are cuBLAS's (documented for cublas<t>gemm):
// negative sizes or batch count, an unknown operation, a leading dimension below its
// minimum or a null scalar are CUBLAS_STATUS_INVALID_VALUE; a null handle is
// CUBLAS_STATUS_NOT_INITIALIZED. Every operand's whole extent, batches included, must lie
// in one live device allocation: on a GPU a stray operand is an illegal address during
// the GEMM, here it is CUBLAS_STATUS_EXECUTION_FAILED with the emulator's detail.
#include <cublas_v2.h>
#include <cblas.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "core/half.h"
#include "cuda_emulator/emulator.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
};

namespace {

std::mutex handles_mutex;
std::set<cublasHandle_t> handles;

bool live(cublasHandle_t h) {
  std::lock_guard lock(handles_mutex);
  return h && handles.count(h) > 0;
}

bool valid_op(cublasOperation_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C; }

// A column-major rows x cols operand with leading dimension ld, `batch` times `stride`
// apart: its elements, first to last, lie in one device allocation.
template <class T>
bool in_device(const T* p, long long rows, long long cols, long long ld, long long stride, int batch) {
  if (rows == 0 || cols == 0 || batch == 0) return true;
  long long lo = std::min(0LL, (batch - 1) * stride), hi = std::max(0LL, (batch - 1) * stride);
  long long last = hi + (cols - 1) * ld + rows - 1;
  const T* first = p + lo;
  return cuda_emu::find_allocation(first, size_t(last - lo + 1) * sizeof(T)).found;
}

CBLAS_TRANSPOSE trans(cublasOperation_t op) { return op == CUBLAS_OP_N ? CblasNoTrans : CblasTrans; }

void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasColMajor, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, double alpha, const double* A, int lda,
          const double* B, int ldb, double beta, double* C, int ldc) {
  cblas_dgemm(CblasColMajor, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

// A column-major rows x cols operand widened to a packed float copy (ld = rows).
template <class T> std::vector<float> widen(const T* p, int rows, int cols, int ld) {
  std::vector<float> out(size_t(rows) * size_t(cols));
  for (int j = 0; j < cols; ++j)
    for (int r = 0; r < rows; ++r) out[size_t(j) * rows + r] = float(p[size_t(j) * ld + r]);
  return out;
}

// T: the operands' type; C: the output's (and alpha's, beta's). bf16/f16 operands are
// widened exactly to f32 and multiplied in f32, which is what cuBLAS's COMPUTE_32F does
// up to the order of its sums.
template <class T, class C_>
cublasStatus_t gemm_batched(const char* fn, cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                            int k, const C_* alpha, const T* A, int lda, long long sa, const T* B, int ldb,
                            long long sb, const C_* beta, C_* C, int ldc, long long sc, int batch) {
  if (!live(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
  int a_rows = ta == CUBLAS_OP_N ? m : k, a_cols = ta == CUBLAS_OP_N ? k : m;
  int b_rows = tb == CUBLAS_OP_N ? k : n, b_cols = tb == CUBLAS_OP_N ? n : k;
  if (m < 0 || n < 0 || k < 0 || batch < 0 || !valid_op(ta) || !valid_op(tb) || lda < std::max(1, a_rows) ||
      ldb < std::max(1, b_rows) || ldc < std::max(1, m) || !alpha || !beta)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
  auto stray = [&](const char* which) {
    cuda_emu::fail(cudaErrorIllegalAddress, std::string(fn) + ": operand " + which +
                                                " is not wholly inside one live device allocation");
    return CUBLAS_STATUS_EXECUTION_FAILED;
  };
  if (k > 0 && !in_device(A, a_rows, a_cols, lda, sa, batch)) return stray("A");
  if (k > 0 && !in_device(B, b_rows, b_cols, ldb, sb, batch)) return stray("B");
  if (!in_device(C, m, n, ldc, sc, batch)) return stray("C");
  for (int i = 0; i < batch; ++i) {
    C_* c = C + i * sc;
    if (k == 0) {  // C = beta C; with beta = 0, C is not read (it may hold NaN)
      for (int j = 0; j < n; ++j)
        for (int r = 0; r < m; ++r) c[j * ldc + r] = *beta == C_(0) ? C_(0) : *beta * c[j * ldc + r];
      continue;
    }
    if constexpr (std::is_same_v<T, C_>) {
      gemm(trans(ta), trans(tb), m, n, k, *alpha, A + i * sa, lda, B + i * sb, ldb, *beta, c, ldc);
    } else {
      std::vector<float> a = widen(A + i * sa, a_rows, a_cols, lda), b = widen(B + i * sb, b_rows, b_cols, ldb);
      gemm(trans(ta), trans(tb), m, n, k, *alpha, a.data(), std::max(1, a_rows), b.data(), std::max(1, b_rows), *beta,
           c, ldc);
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasContext();
  std::lock_guard lock(handles_mutex);
  handles.insert(*handle);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  std::lock_guard lock(handles_mutex);
  if (!handle || !handles.erase(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!cuda_emu::valid_stream(stream)) return CUBLAS_STATUS_INVALID_VALUE;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t* stream) {
  if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!stream) return CUBLAS_STATUS_INVALID_VALUE;
  *stream = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode < CUBLAS_DEFAULT_MATH || mode > CUBLAS_TF32_TENSOR_OP_MATH) return CUBLAS_STATUS_INVALID_VALUE;
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t* mode) {
  if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!mode) return CUBLAS_STATUS_INVALID_VALUE;
  *mode = handle->math;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float* alpha, const float* A, int lda, const float* B, int ldb, const float* beta,
                           float* C, int ldc) {
  return gemm_batched("cublasSgemm", h, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}
cublasStatus_t cublasDgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const double* alpha, const double* A, int lda, const double* B, int ldb, const double* beta,
                           double* C, int ldc) {
  return gemm_batched("cublasDgemm", h, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float* alpha, const float* A, int lda, long long sa,
                                         const float* B, int ldb, long long sb, const float* beta, float* C, int ldc,
                                         long long sc, int batch) {
  return gemm_batched("cublasSgemmStridedBatched", h, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc,
                      batch);
}
cublasStatus_t cublasDgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const double* alpha, const double* A, int lda, long long sa,
                                         const double* B, int ldb, long long sb, const double* beta, double* C,
                                         int ldc, long long sc, int batch) {
  return gemm_batched("cublasDgemmStridedBatched", h, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc,
                      batch);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void* alpha, const void* A, cudaDataType Atype, int lda,
                                          long long sa, const void* B, cudaDataType Btype, int ldb, long long sb,
                                          const void* beta, void* C, cudaDataType Ctype, int ldc, long long sc,
                                          int batch, cublasComputeType_t compute, cublasGemmAlgo_t) {
  // The combinations nmperm uses: 16-bit operands, f32 output and accumulation.
  if (Atype != Btype || Ctype != CUDA_R_32F || compute != CUBLAS_COMPUTE_32F ||
      (Atype != CUDA_R_16BF && Atype != CUDA_R_16F))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    return gemm_batched("cublasGemmStridedBatchedEx", h, ta, tb, m, n, k, static_cast<const float*>(alpha),
                        static_cast<const T*>(A), lda, sa, static_cast<const T*>(B), ldb, sb,
                        static_cast<const float*>(beta), static_cast<float*>(C), ldc, sc, batch);
  };
  return Atype == CUDA_R_16BF ? run(nmperm::bf16{}) : run(nmperm::f16{});
}

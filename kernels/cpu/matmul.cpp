// CPU matmul: one gemm call when the batch folds into M, otherwise a loop of gemm calls
// (f32 through oneDNN's matmul or OpenBLAS by shape, f64 through OpenBLAS). Small
// per-batch products run one OpenBLAS gemm per OpenMP thread with OpenBLAS set to a
// single thread; large ones let the library thread each call.
#include "kernels/matmul.h"
#include "kernels/cpu/launchers.h"
#include "kernels/runtime.h"

#include <algorithm>
#include <cstdlib>
#include <dnnl.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>

#include "core/view.h"
#include "kernels/cpu/blas.h"

namespace nmperm::kernels {

// The argument checks and operand layouts shared with the CUDA matmul.
void check_matmul(const Tensor& a, const Tensor& b, const Tensor& c, const Tensor& bias, double beta) {
  NMPERM_CHECK(a.ndim() == 3 && b.ndim() == 3 && c.ndim() == 3, "matmul kernel wants 3-d views, got {} {} {}",
               a.shape(), b.shape(), c.shape());
  int64_t batch = c.shape(0), M = c.shape(1), N = c.shape(2), K = a.shape(2);
  NMPERM_CHECK(a.shape(0) == batch && b.shape(0) == batch && a.shape(1) == M && b.shape(1) == K && b.shape(2) == N,
               "matmul: shapes {} @ {} -> {} do not match", a.shape(), b.shape(), c.shape());
  // bf16/f16 operands accumulate into an f32 output; otherwise all three share a dtype.
  bool half_in = is_half(a.dtype()) && c.dtype() == DType::F32;
  NMPERM_CHECK(a.dtype() == b.dtype() && (a.dtype() == c.dtype() || half_in), "matmul: dtypes differ: {} {} {}",
               describe(a), describe(b), describe(c));
  NMPERM_CHECK(c.stride(2) == 1 && c.stride(1) >= N, "matmul: output must be row-major");
  if (bias.defined())
    NMPERM_CHECK(bias.ndim() == 1 && bias.shape(0) == N && bias.is_contiguous() && bias.dtype() == c.dtype() &&
                     bias.device() == c.device() && beta == 0,
                 "matmul: bias {} for output {} (beta {})", describe(bias), describe(c), beta);
}

void bias_into_rows(const Tensor& bias, Tensor& c) {
  c.copy_from(view::expand(view::reshape(bias, {1, 1, bias.shape(0)}), c.shape()));
}

MatView matmul_operand(const Tensor& t, const char* which) {
  int64_t r = t.shape(1), c = t.shape(2), sr = t.stride(1), sc = t.stride(2);
  if (sc == 1 && (sr >= std::max<int64_t>(c, 1) || r == 1)) return {false, std::max<int64_t>({sr, c, 1}), t.stride(0)};
  if (sr == 1 && (sc >= std::max<int64_t>(r, 1) || c == 1)) return {true, std::max<int64_t>({sc, r, 1}), t.stride(0)};
  NMPERM_FAIL("matmul: operand {} with strides {} is neither row- nor column-major", which, t.strides());
}

namespace cpu {

namespace {

// f32 and bf16 products through oneDNN's matmul primitive; bf16 runs on AMX tile units
// (or AVX512-BF16) and accumulates in f32: 3-7x OpenBLAS's f32 sgemm at model shapes on an
// AMX CPU. (Debian's OpenBLAS declares cblas_sbgemm but is built without it.) A primitive
// is made once per shape and layout and kept; executing one is thread-safe. oneDNN 2.6
// has no f16 matmul on CPUs, nor bf16 below AVX512: those operands are widened (exactly)
// to f32 for sgemm, which computes the same products with f32 accumulation.
struct DnnlKey {
  int64_t M, N, K, lda, ldb, ldc;
  bool ta, tb;
  float alpha, beta;
  bool f32_in;  // f32 operands (oneDNN's sgemm) instead of bf16
  bool bias;    // an f32 bias (N) added to every row
  auto tie() const { return std::tie(M, N, K, lda, ldb, ldc, ta, tb, alpha, beta, f32_in, bias); }
  bool operator<(const DnnlKey& o) const { return tie() < o.tie(); }
};

dnnl::engine& dnnl_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

struct DnnlGemm {
  dnnl::memory::desc a, b, c, bias;
  dnnl::matmul prim;
  bool ok = true;  // false: oneDNN has no such matmul on this CPU (bf16 without AVX512)
};

// Shared so that clearing the cache cannot pull a primitive from under a running call.
std::shared_ptr<const DnnlGemm> dnnl_gemm(const DnnlKey& k) {
  static std::mutex mu;
  static std::map<DnnlKey, std::shared_ptr<const DnnlGemm>> cache;
  std::lock_guard lock(mu);
  auto it = cache.find(k);
  if (it != cache.end()) return it->second;
  if (cache.size() >= 512) cache.clear();  // shapes of a run are few; this only bounds odd workloads
  using dt = dnnl::memory::data_type;
  dt in = k.f32_in ? dt::f32 : dt::bf16;
  // A (M, K) and B (K, N) as row-major or transposed (column-major) views.
  dnnl::memory::desc ad({k.M, k.K}, in, k.ta ? dnnl::memory::dims{1, k.lda} : dnnl::memory::dims{k.lda, 1});
  dnnl::memory::desc bd({k.K, k.N}, in, k.tb ? dnnl::memory::dims{1, k.ldb} : dnnl::memory::dims{k.ldb, 1});
  dnnl::memory::desc cd({k.M, k.N}, dt::f32, dnnl::memory::dims{k.ldc, 1});
  dnnl::memory::desc biasd = k.bias ? dnnl::memory::desc({1, k.N}, dt::f32, dnnl::memory::dims{k.N, 1})
                                    : dnnl::memory::desc();
  dnnl::primitive_attr attr;
  if (k.alpha != 1.0f) attr.set_output_scales(0, {k.alpha});
  if (k.beta != 0.0f) {
    dnnl::post_ops po;
    po.append_sum(k.beta);
    attr.set_post_ops(po);
  }
  dnnl::matmul::primitive_desc pd;
  try {
    pd = dnnl::matmul::primitive_desc(k.bias ? dnnl::matmul::desc(ad, bd, biasd, cd) : dnnl::matmul::desc(ad, bd, cd),
                                      attr, dnnl_engine());
  } catch (const dnnl::error&) {
    return cache[k] = std::make_shared<const DnnlGemm>(DnnlGemm{ad, bd, cd, biasd, {}, false});
  }
  return cache[k] = std::make_shared<const DnnlGemm>(DnnlGemm{ad, bd, cd, biasd, dnnl::matmul(pd)});
}

// C_i = alpha * A_i B_i + beta * C_i (+ bias) for i < batch through oneDNN (operands f32
// or bf16, C and bias f32); false when oneDNN has no such matmul on this CPU.
bool dnnl_matmul(bool f32_in, bool ta, bool tb, int64_t batch, int64_t M, int64_t N, int64_t K, double alpha,
                 const void* a, int64_t lda, int64_t a_bstride, const void* b, int64_t ldb, int64_t b_bstride,
                 double beta, float* c, int64_t ldc, int64_t c_bstride, const float* bias) {
  std::shared_ptr<const DnnlGemm> gp =
      dnnl_gemm({M, N, K, lda, ldb, ldc, ta, tb, float(alpha), float(beta), f32_in, bias != nullptr});
  const DnnlGemm& g = *gp;
  if (!g.ok) return false;
  size_t esize = f32_in ? 4 : 2;
  dnnl::stream s(dnnl_engine());
  const char* A = static_cast<const char*>(a);
  const char* B = static_cast<const char*>(b);
  for (int64_t i = 0; i < batch; ++i) {
    dnnl::memory am(g.a, dnnl_engine(), const_cast<char*>(A + esize * i * a_bstride));
    dnnl::memory bm(g.b, dnnl_engine(), const_cast<char*>(B + esize * i * b_bstride));
    dnnl::memory cm(g.c, dnnl_engine(), c + i * c_bstride);
    std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
    if (bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(g.bias, dnnl_engine(), const_cast<float*>(bias)));
    g.prim.execute(s, args);
  }
  s.wait();
  return true;
}

// Which library runs f32 products: oneDNN (default) or OpenBLAS (NMPERM_SGEMM=openblas).
// At the models' skinny shapes (thousands of tokens by 128-512 features) oneDNN's sgemm
// took 17-20% less time than OpenBLAS's in a training step on an AVX-512 Xeon (the
// README's performance section); at square 4096 shapes the two are level. Either is
// bitwise repeatable at a fixed thread count. f64 stays on OpenBLAS.
bool f32_through_onednn() {
  static const bool on = [] {
    const char* e = std::getenv("NMPERM_SGEMM");
    std::string v = e ? e : "onednn";
    NMPERM_CHECK(v == "onednn" || v == "openblas", "NMPERM_SGEMM={} is not one of onednn, openblas", v);
    return v == "onednn";
  }();
  return on;
}

// Whether oneDNN's f32 matmul suits a product with N output columns and B row-major
// (b_trans false) or transposed. oneDNN 2.6 reads a row-major B in place; at N >= 1024 that
// is not a power of two its sgemm then runs 1.5-3.5x slower than OpenBLAS's, which packs B
// first (M = 1024, K = 2048, N = 3072: 112 vs 36 ms; N = 5120: 197 vs 57 ms, 2 threads of an
// AVX-512 Xeon). These are the input and weight gradients of every linear layer whose input
// width is such an N: ViT-Base's second MLP layer (3072), most Qwen2 widths. At power-of-two
// N the two are within 10% either way, and below 1024 oneDNN is level or ahead, so
// OpenBLAS takes every row-major B from N = 1024 up: a rule of the shape alone, so a product
// goes to the same library, and gives the same bits, on every run. Transposed B (the
// forward of a linear layer, weights (out, in)) stays on oneDNN at every width.
bool onednn_suits_f32(bool b_trans, int64_t N) { return b_trans || N < 1024; }

}  // namespace

}  // namespace cpu

std::string matmul_libraries() {
  const dnnl_version_t* v = dnnl_version();
  std::string onednn = fmt::format("oneDNN {}.{}.{}", v->major, v->minor, v->patch), openblas = "OpenBLAS " + blas_core();
  if (!cpu::f32_through_onednn()) return fmt::format("{} (f32, f64, attention heads), {} (bf16)", openblas, onednn);
  return fmt::format("{} (f32, bf16), {} (f64, attention heads, f32 with B row-major and N >= 1024)", onednn, openblas);
}

namespace cpu {

void matmul(const Tensor& a, const Tensor& b, Tensor& c, double alpha, double beta, const Tensor& bias) {
  check_matmul(a, b, c, bias, beta);
  int64_t batch = c.shape(0), M = c.shape(1), N = c.shape(2), K = a.shape(2);
  if (batch == 0 || M == 0 || N == 0) return;
  MatView va = matmul_operand(a, "A"), vb = matmul_operand(b, "B");
  const float* bias_f32 = bias.defined() && bias.dtype() == DType::F32 ? bias.data<float>() : nullptr;
  // Paths that cannot add the bias in the product write it into C and accumulate.
  auto bias_first = [&] {
    if (!bias.defined()) return;
    bias_into_rows(bias, c);
    beta = 1.0;
    bias_f32 = nullptr;
  };
  if (K == 0) {  // empty inner dimension: C = beta * C (+ bias)
    bias_first();
    dispatch_float(c.dtype(), [&]<class T>() {
      T* C = c.data<T>();
      int64_t ldc = c.stride(1), cbs = c.stride(0);
      for (int64_t i = 0; i < batch; ++i)
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) C[i * cbs + m * ldc + n] = beta == 0 ? T(0) : T(beta) * C[i * cbs + m * ldc + n];
    });
    return;
  }
  if (a.dtype() == DType::BF16 &&
      dnnl_matmul(false, va.trans, vb.trans, batch, M, N, K, alpha, a.raw_data(), va.ld, va.bstride, b.raw_data(), vb.ld,
                  vb.bstride, beta, c.data<float>(), c.stride(1), c.stride(0), bias_f32))
    return;
  if (is_half(a.dtype())) return matmul(a.to(DType::F32), b.to(DType::F32), c, alpha, beta, bias);
  dispatch_float(a.dtype(), [&]<class T>() {
    const T* A = static_cast<const T*>(a.storage()->data) + a.offset();
    const T* B = static_cast<const T*>(b.storage()->data) + b.offset();
    T* C = c.data<T>();
    int64_t ldc = c.stride(1), cbs = c.stride(0);
    // f32 products of `nb` matrices of `rows` rows through oneDNN unless OpenBLAS is asked for
    // or suits the shape better.
    auto onednn = [&](int64_t nb, int64_t rows, int64_t a_bstride, int64_t b_bstride, int64_t c_bstride) {
      if constexpr (std::is_same_v<T, float>)
        return f32_through_onednn() && onednn_suits_f32(vb.trans, N) &&
               dnnl_matmul(true, va.trans, vb.trans, nb, rows, N, K, alpha, A, va.ld, a_bstride, B, vb.ld, b_bstride,
                           beta, C, ldc, c_bstride, bias_f32);
      return false;
    };
    // Fold the batch into M when A is row-major and packed across batches and B is shared.
    if (batch > 1 && vb.bstride == 0 && !va.trans && va.bstride == M * va.ld && va.ld == K && cbs == M * ldc &&
        ldc == N) {
      if (onednn(1, batch * M, 0, 0, 0)) return;
      bias_first();
      gemm<T>(false, vb.trans, batch * M, N, K, T(alpha), A, va.ld, B, vb.ld, T(beta), C, ldc);
      return;
    }
    if (batch == 1 || 2.0 * double(M) * double(N) * double(K) > 4e6) {
      if (onednn(batch, M, va.bstride, vb.bstride, cbs)) return;
      bias_first();
      for (int64_t i = 0; i < batch; ++i)
        gemm<T>(va.trans, vb.trans, M, N, K, T(alpha), A + i * va.bstride, va.ld, B + i * vb.bstride, vb.ld, T(beta),
                C + i * cbs, ldc);
      return;
    }
    bias_first();
    BlasSingleThread single;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < batch; ++i)
      gemm<T>(va.trans, vb.trans, M, N, K, T(alpha), A + i * va.bstride, va.ld, B + i * vb.bstride, vb.ld, T(beta),
              C + i * cbs, ldc);
  });
}

}  // namespace cpu

}  // namespace nmperm::kernels

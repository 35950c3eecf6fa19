// CPU op benchmarks (Google Benchmark). tools/bench/compare.py runs this binary and the
// same ops in PyTorch at the same thread count and prints the ratios.
//   NMPERM_THREADS=N bench_ops [--benchmark_format=json] [--benchmark_filter=REGEX]
// Shapes are those of the embedded models (hidden 128, T 128) and a larger layer.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <chrono>
#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "kernels/runtime.h"

using namespace nmperm;

namespace {

Tensor rnd(const Shape& s, uint64_t seed, bool grad = false) {
  Generator g(seed);
  Tensor t = randn(s, g);
  return grad ? t.set_requires_grad() : t;
}

void BM_matmul(benchmark::State& st) {
  int64_t M = st.range(0), K = st.range(1), N = st.range(2);
  Tensor a = rnd({M, K}, 1), b = rnd({K, N}, 2);
  for (auto _ : st) benchmark::DoNotOptimize(matmul(a, b).raw_data());
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// The same product through cblas_sgemm directly: the ceiling our matmul should reach.
void BM_openblas_sgemm(benchmark::State& st) {
  int M = int(st.range(0)), K = int(st.range(1)), N = int(st.range(2));
  Tensor a = rnd({M, K}, 1), b = rnd({K, N}, 2), c = zeros({M, N});
  for (auto _ : st) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a.data<float>(), K, b.data<float>(), N,
                0.0f, c.data<float>(), N);
    benchmark::DoNotOptimize(c.raw_data());
  }
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// Linear layer forward + backward (x (R, in) @ W^T), as in the models.
void BM_linear_fwdbwd(benchmark::State& st) {
  int64_t R = st.range(0), I = st.range(1), O = st.range(2);
  Tensor x = rnd({R, I}, 1, true), w = rnd({O, I}, 2, true), b = rnd({O}, 3, true), g = rnd({R, O}, 4);
  for (auto _ : st) {
    backward(linear(x, w, b), g);
    x.zero_grad(); w.zero_grad(); b.zero_grad();
  }
}

template <bool Backward> void BM_softmax(benchmark::State& st) {
  int64_t R = st.range(0), C = st.range(1);
  Tensor x = rnd({R, C}, 1, Backward), g = rnd({R, C}, 2);
  for (auto _ : st) {
    Tensor y = softmax(x, -1);
    if (Backward) { backward(y, g); x.zero_grad(); }
    benchmark::DoNotOptimize(y.raw_data());
  }
}

template <bool Backward> void BM_layer_norm(benchmark::State& st) {
  int64_t R = st.range(0), C = st.range(1);
  Tensor x = rnd({R, C}, 1, Backward), w = rnd({C}, 2, Backward), b = rnd({C}, 3, Backward), g = rnd({R, C}, 4);
  for (auto _ : st) {
    Tensor y = layer_norm(x, w, b, 1e-5);
    if (Backward) { backward(y, g); x.zero_grad(); w.zero_grad(); b.zero_grad(); }
    benchmark::DoNotOptimize(y.raw_data());
  }
}

template <bool Backward> void BM_rms_norm(benchmark::State& st) {
  int64_t R = st.range(0), C = st.range(1);
  Tensor x = rnd({R, C}, 1, Backward), w = rnd({C}, 2, Backward), g = rnd({R, C}, 4);
  for (auto _ : st) {
    Tensor y = rms_norm(x, w, 1e-6);
    if (Backward) { backward(y, g); x.zero_grad(); w.zero_grad(); }
    benchmark::DoNotOptimize(y.raw_data());
  }
}

template <bool Backward> void BM_attention(benchmark::State& st) {
  int64_t B = st.range(0), H = st.range(1), T = st.range(2), D = st.range(3), Hkv = st.range(4);
  bool causal = st.range(5);
  Tensor q = rnd({B, H, T, D}, 1, Backward), k = rnd({B, Hkv, T, D}, 2, Backward), v = rnd({B, Hkv, T, D}, 3, Backward);
  Tensor g = rnd({B, H, T, D}, 4);
  for (auto _ : st) {
    Tensor y = scaled_dot_product_attention(q, k, v, causal);
    if (Backward) { backward(y, g); q.zero_grad(); k.zero_grad(); v.zero_grad(); }
    benchmark::DoNotOptimize(y.raw_data());
  }
}

// SiLU forward + backward (the Llama MLP's activation): the fused unary kernels, one pass
// each way, against the same function composed from sigmoid and mul (three kernels
// forward, more backward, and intermediates saved).
template <bool Fused> void BM_silu(benchmark::State& st) {
  int64_t R = st.range(0), C = st.range(1);
  Tensor x = rnd({R, C}, 1, true), g = rnd({R, C}, 2);
  for (auto _ : st) {
    Tensor y = Fused ? silu(x) : mul(x, sigmoid(x));
    backward(y, g);
    x.zero_grad();
    benchmark::DoNotOptimize(y.raw_data());
  }
}

}  // namespace

// Args are mirrored in compare.py; keep the two lists in step.
BENCHMARK(BM_matmul)->Args({256, 256, 256})->Args({1024, 1024, 1024})->Args({4096, 128, 512})->Args({4096, 512, 128})->UseRealTime();
BENCHMARK(BM_openblas_sgemm)->Args({256, 256, 256})->Args({1024, 1024, 1024})->Args({4096, 128, 512})->Args({4096, 512, 128})->UseRealTime();
BENCHMARK(BM_linear_fwdbwd)->Args({4096, 128, 512})->Args({4096, 512, 128})->UseRealTime();
BENCHMARK(BM_softmax<false>)->Name("BM_softmax_fwd")->Args({4096, 128})->Args({1024, 1024})->UseRealTime();
BENCHMARK(BM_softmax<true>)->Name("BM_softmax_fwdbwd")->Args({4096, 128})->Args({1024, 1024})->UseRealTime();
BENCHMARK(BM_layer_norm<false>)->Name("BM_layer_norm_fwd")->Args({4096, 128})->Args({4096, 768})->UseRealTime();
BENCHMARK(BM_layer_norm<true>)->Name("BM_layer_norm_fwdbwd")->Args({4096, 128})->Args({4096, 768})->UseRealTime();
BENCHMARK(BM_rms_norm<false>)->Name("BM_rms_norm_fwd")->Args({4096, 128})->Args({4096, 768})->UseRealTime();
BENCHMARK(BM_rms_norm<true>)->Name("BM_rms_norm_fwdbwd")->Args({4096, 128})->Args({4096, 768})->UseRealTime();
BENCHMARK(BM_attention<false>)->Name("BM_attention_fwd")->Args({32, 4, 128, 32, 2, 1})->Args({8, 8, 256, 64, 8, 0})->UseRealTime();
BENCHMARK(BM_silu<true>)->Name("BM_silu_fwdbwd")->Args({4096, 512})->UseRealTime();
BENCHMARK(BM_silu<false>)->Name("BM_silu_composed_fwdbwd")->Args({4096, 512})->UseRealTime();
BENCHMARK(BM_attention<true>)->Name("BM_attention_fwdbwd")->Args({32, 4, 128, 32, 2, 1})->Args({8, 8, 256, 64, 8, 0})->UseRealTime();

// matmul against cblas_sgemm alternating call by call (median of 41 pairs per shape), so a
// noisy stretch of the machine hits both sides alike. Prints one JSON object per shape.
int interleaved_matmul() {
  const int64_t shapes[][3] = {{256, 256, 256}, {1024, 1024, 1024}, {4096, 128, 512}, {4096, 512, 128}};
  for (auto& s : shapes) {
    int64_t M = s[0], K = s[1], N = s[2];
    Tensor a = rnd({M, K}, 1), b = rnd({K, N}, 2), c = zeros({M, N});
    std::vector<double> ours, blas;
    auto ms = [](auto t0) {
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    };
    for (int i = 0; i < 41; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      { Tensor o = matmul(a, b); benchmark::DoNotOptimize(o.raw_data()); }
      ours.push_back(ms(t0));
      t0 = std::chrono::steady_clock::now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(M), int(N), int(K), 1.0f, a.data<float>(), int(K),
                  b.data<float>(), int(N), 0.0f, c.data<float>(), int(N));
      benchmark::DoNotOptimize(c.raw_data());
      blas.push_back(ms(t0));
    }
    std::sort(ours.begin(), ours.end());
    std::sort(blas.begin(), blas.end());
    std::printf("{\"shape\": [%lld, %lld, %lld], \"nmperm_ms\": %.4f, \"openblas_ms\": %.4f}\n", (long long)M,
                (long long)K, (long long)N, ours[20], blas[20]);
  }
  return 0;
}

int main(int argc, char** argv) {
  kernels::select_blas_kernels(argv);
  if (const char* t = std::getenv("NMPERM_THREADS")) kernels::set_num_threads(std::atoi(t));
  if (argc > 1 && std::string(argv[1]) == "--interleaved-matmul") return interleaved_matmul();
  benchmark::AddCustomContext("nmperm_threads", std::to_string(kernels::num_threads()));
  benchmark::AddCustomContext("blas", kernels::matmul_libraries() + "; " + openblas_get_config());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  {
    // Warm up (thread pools, page mapping, clock ramp) so the first benchmark is not penalised.
    Tensor a = rnd({512, 512}, 1), b = rnd({512, 512}, 2);
    auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(700)) matmul(a, b);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

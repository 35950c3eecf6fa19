// GPU microbenchmarks of the CUDA kernels at large sizes: each op's median time over
// timed repetitions (after warm-up), the bytes it must move or the flops it must do, and
// the achieved GB/s as a fraction of the device's peak bandwidth (memory-bound ops) or
// TFLOP/s (matmul). One JSON object per line; tools/bench/compare_cuda.py times the same
// ops in PyTorch and prints the ratios.
//   bench_cuda [--reps 20]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/storage.h"
#include "kernels/cuda/launchers.h"
#include "kernels/elementwise.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "kernels/optim.h"
#include "kernels/reduce.h"
#include "kernels/softmax.h"
#include "models/optim.h"

using namespace nmperm;
using namespace nmperm::kernels;

namespace {

int g_reps = 20;

double median_ms(const std::function<void()>& f) {
  for (int i = 0; i < 3; ++i) f();
  cuda_synchronize();
  std::vector<double> ms;
  for (int i = 0; i < g_reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    cuda_synchronize();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

Tensor dev(const Shape& s, double value = 0.5) { return full(s, value, DType::F32, Device::CUDA); }

void report_bw(const std::string& op, const std::string& shape, double bytes, const std::function<void()>& f) {
  double ms = median_ms(f), gbs = bytes / (ms * 1e-3) / 1e9;
  std::printf("{\"op\": \"%s\", \"shape\": \"%s\", \"ms\": %.4f, \"GB/s\": %.1f, \"peak_fraction\": %.3f}\n", op.c_str(),
              shape.c_str(), ms, gbs, gbs * 1e9 / cuda_peak_bandwidth());
  std::fflush(stdout);
}

void report_flops(const std::string& op, const std::string& shape, double flops, const std::function<void()>& f) {
  double ms = median_ms(f);
  std::printf("{\"op\": \"%s\", \"shape\": \"%s\", \"ms\": %.4f, \"TFLOP/s\": %.2f}\n", op.c_str(), shape.c_str(), ms,
              flops / (ms * 1e-3) / 1e12);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; i += 2)
    if (!std::strcmp(argv[i], "--reps")) g_reps = std::atoi(argv[i + 1]);
  if (!cuda_available()) {
    std::fprintf(stderr, "bench_cuda: no CUDA device\n");
    return 1;
  }
  std::fprintf(stderr, "bench_cuda: %s, peak bandwidth %.0f GB/s\n", cuda_device_name().c_str(),
               cuda_peak_bandwidth() / 1e9);
  const int64_t n = int64_t(1) << 26;  // 64 Mi floats = 256 MiB per tensor
  const double f4 = 4.0 * double(n);
  Tensor x = dev({n}), y = dev({n}), z = dev({n});
  report_bw("gelu", "67108864", 2 * f4, [&] { unary(UnaryOp::GeluErf, x, y); });
  report_bw("gelu_backward", "67108864", 3 * f4, [&] { unary_backward(UnaryOp::GeluErf, x, y, y, z); });
  report_bw("add", "67108864", 3 * f4, [&] { binary(BinaryOp::Add, x, y, z); });
  Tensor row = dev({1, 8192}), big = dev({8192, 8192}), bout = dev({8192, 8192});
  report_bw("add_broadcast_row", "8192x8192", 2 * f4, [&] { binary(BinaryOp::Add, big, row.as_strided({8192, 8192}, {0, 1}, 0), bout); });
  report_bw("transpose_copy", "8192x8192", 2 * f4, [&] { cuda::copy(big.as_strided({8192, 8192}, {1, 8192}, 0), bout); });
  Tensor rows = dev({65536, 1024}), rows2 = dev({65536, 1024}), rows3 = dev({65536, 1024});
  Tensor r1 = dev({65536}), r2 = dev({65536}), w = dev({1024}), dw = dev({1024}), db = dev({1024});
  report_bw("sum_rows", "65536x1024", f4, [&] { reduce_rows(ReduceOp::Sum, rows, r1); });
  report_bw("softmax", "65536x1024", 2 * f4, [&] { softmax_rows(rows, rows2, false); });
  report_bw("softmax_backward", "65536x1024", 3 * f4, [&] { softmax_rows_backward(rows2, rows, rows3, false); });
  report_bw("layer_norm", "65536x1024", 2 * f4, [&] { layer_norm(rows, w, w, 1e-5, rows2, r1, r2); });
  report_bw("layer_norm_backward", "65536x1024", 5 * f4,
            [&] { layer_norm_backward(rows, w, r1, r2, rows2, rows3, dw, db); });
  report_bw("rms_norm", "65536x1024", 2 * f4, [&] { rms_norm(rows, w, 1e-6, rows2, r1); });
  report_bw("rms_norm_backward", "65536x1024", 5 * f4, [&] { rms_norm_backward(rows, w, r1, rows2, rows3, dw); });
  Tensor p = dev({n / 4}), g = dev({n / 4}), m = dev({n / 4}, 0), v = dev({n / 4}, 0);
  int64_t step = 0;
  report_bw("adamw", "16777216", 7 * f4 / 4, [&] { adamw(p, g, m, v, AdamWParams{}, ++step); });
  report_bw("sum_squares", "67108864", f4, [&] { sum_squares(x); });
  // The optimizer over a model-like parameter list: one fused launch for 128 tensors.
  std::vector<Tensor> many;
  for (int i = 0; i < 64; ++i)
    for (const Shape& s : {Shape{512, 512}, Shape{1024}}) {
      many.push_back(dev(s).set_requires_grad());
      many.back().set_grad(dev(s));
    }
  AdamW many_opt(many, AdamWParams{});
  report_bw("adamw_many", "64x(512x512)+64x1024", 7.0 * 4 * 64 * (512 * 512 + 1024), [&] { many_opt.step(); });
  for (int64_t s : {1024, 4096, 8192}) {
    Tensor a = dev({1, s, s}, 0.01), b = dev({1, s, s}, 0.01), c = dev({1, s, s});
    std::string shape = std::to_string(s) + "^3";
    report_flops("matmul_f32", shape, 2.0 * double(s) * double(s) * double(s), [&] { matmul(a, b, c); });
    cuda::set_allow_tf32(true);
    report_flops("matmul_tf32", shape, 2.0 * double(s) * double(s) * double(s), [&] { matmul(a, b, c); });
    cuda::set_allow_tf32(false);
  }
  Tensor ba = dev({512, 128, 64}, 0.01), bb = dev({512, 64, 128}, 0.01), bc = dev({512, 128, 128});
  report_flops("bmm_f32", "512x(128x64x128)", 2.0 * 512 * 128 * 64 * 128, [&] { matmul(ba, bb, bc); });
  return 0;
}

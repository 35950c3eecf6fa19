// Permutation methods on one wide site: a seeded (n, n) weight with log-normal activation
// norms and Wanda scores (default n = 4096).
//   1. One learning step of the learned method for that site, for G = 4 and G = 1:
//      Sinkhorn (20 iterations) -> assignment -> W_eff with the method's straight-through
//      path (the gradient reaches P only through the mask) -> Smooth-L1 between dense and
//      pruned outputs on 128 random input rows -> backward -> AdamW on the costs. Median
//      of the timed steps, with the share of each part.
//   2. Wall time of every search method (none, random, channel-swap, ria) with the kept
//      Wanda fraction, and for the learned methods 300 x their measured step time.
// usage: [NMPERM_THREADS=N] bench_permute [n] [steps] [sweeps] [escapes] [--device cpu|cuda] [--profile]
//   sweeps / escapes: the channel-swap and ria limits. With --device cuda the learning
//   steps run on the GPU (the assignment on the host) and part 2 is skipped: the searches
//   are CPU code. --profile adds, per learning step, the host milliseconds in each op
//   family (core/profile.h), over separate steps after the timed ones (CPU only).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/profile.h"
#include "core/storage.h"
#include "kernels/runtime.h"
#include "models/optim.h"
#include "permute/learned.h"
#include "permute/sinkhorn.h"

using namespace nmperm;

namespace {

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct StepTimes {
  double total = 0, sinkhorn = 0, assignment = 0, backward = 0;  // sinkhorn: its forward
};

// One learning step of a site with G groups; returns the median of `steps` timed steps.
StepTimes learning_step(const Tensor& w, const Tensor& scores, int64_t G, int64_t steps, int64_t iters, bool profiled) {
  int64_t n = w.shape(1), B = n / G;
  Device device = w.device();
  auto sync = [&] {  // kernels queue asynchronously: time whole parts
    if (device == Device::CUDA) cuda_synchronize();
  };
  Generator gen(3);
  Tensor x = randn({128, n}, gen).to(device);
  Tensor cost = mul(randn({G, B, B}, gen), 0.01);
  {  // start at the identity, as the method does
    float* c = cost.data<float>();
    for (int64_t g = 0; g < G; ++g)
      for (int64_t i = 0; i < B; ++i) c[(g * B + i) * B + i] -= 1.0f;
  }
  cost = cost.to(device).set_requires_grad();
  AdamW adam({cost}, {.lr = 0.1, .weight_decay = 0.0});
  Tensor dense;
  {
    NoGradGuard ng;
    dense = linear(x, w);
  }
  double scale = mean(scores).item();
  auto step = [&] {
    StepTimes t;
    auto t0 = std::chrono::steady_clock::now();
    adam.zero_grad();
    auto ts = std::chrono::steady_clock::now();
    Tensor soft = sinkhorn(mul(cost, -1.0 / 0.5), iters);
    sync();
    t.sinkhorn = since(ts);
    auto ta = std::chrono::steady_clock::now();
    Perm hard = assignment_permutation(cost, false);
    t.assignment = since(ta);
    Tensor weff = effective_weight(w, scores, hard, soft, NMPattern{}, scale, true);
    Tensor loss = smooth_l1(linear(x, weff), dense);
    sync();
    auto tb = std::chrono::steady_clock::now();
    backward(loss);
    sync();
    t.backward = since(tb);
    adam.step();
    sync();
    t.total = since(t0);
    return t;
  };
  std::vector<StepTimes> all;
  for (int64_t s = 0; s <= steps; ++s) {  // step 0 warms up
    StepTimes t = step();
    if (s > 0) all.push_back(t);
  }
  if (profiled) {  // separate steps, so that the timed ones carry no profiling
    profile::reset();
    {
      profile::Enabled on;
      for (int64_t s = 0; s < steps; ++s) step();
    }
    auto t = profile::totals();
    std::printf("    profile, ms per step:");
    for (int f = 0; f < profile::kFamilies; ++f)
      if (t[size_t(f)] > 0) std::printf(" %s %.1f", profile::family_name(profile::Family(f)), t[size_t(f)] * 1e3 / double(steps));
    std::printf("\n");
  }
  std::sort(all.begin(), all.end(), [](const StepTimes& a, const StepTimes& b) { return a.total < b.total; });
  return all[all.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  kernels::select_blas_kernels(argv);
  if (const char* t = std::getenv("NMPERM_THREADS")) kernels::set_num_threads(std::atoi(t));
  std::vector<int64_t> num{4096, 3, 100, 20};  // n, steps, sweeps, escapes
  Device device = Device::CPU;
  bool profiled = false;
  for (int i = 1, k = 0; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--profile")) {
      profiled = true;
    } else if (!std::strcmp(argv[i], "--device") && i + 1 < argc) {
      device = !std::strcmp(argv[++i], "cuda") ? Device::CUDA : Device::CPU;
    } else if (k < 4) {
      num[size_t(k++)] = std::atoll(argv[i]);
    }
  }
  int64_t n = num[0], steps = num[1], sweeps = num[2], escapes = num[3];
  if (profiled && device == Device::CUDA) {
    std::fprintf(stderr, "bench_permute: --profile times the host side only; CUDA kernels run asynchronously\n");
    return 2;
  }
  try {
    if (device == Device::CUDA) {
      NMPERM_CHECK(cuda_available(), "--device cuda: no CUDA device is available");
      std::printf("bench_permute: one %lldx%lld site, Wanda scores, 2:4, on %s\n", (long long)n, (long long)n,
                  cuda_device_name().c_str());
    } else {
      std::printf("bench_permute: one %lldx%lld site, Wanda scores, 2:4; %d threads, %s\n", (long long)n,
                  (long long)n, kernels::num_threads(), kernels::matmul_libraries().c_str());
    }
    Generator gen(1);
    Tensor w = mul(randn({n, n}, gen), 0.02);
    Tensor norms = exp(randn({n}, gen));  // log-normal: a few channels carry most activation
    Tensor scores = importance(w, norms, Score::Wanda);
    NMPattern pat;
    Tensor w_dev = w.to(device), scores_dev = scores.to(device);

    std::printf("\nlearning step (median of %lld, after one warm-up step):\n", (long long)steps);
    std::printf("  %-6s %10s %12s %12s %12s\n", "G", "step s", "sinkhorn s", "assign s", "backward s");
    double step_g4 = 0;
    for (int64_t G : {4, 1}) {
      StepTimes t = learning_step(w_dev, scores_dev, G, steps, 20, profiled);
      if (G == 4) step_g4 = t.total;
      std::printf("  %-6lld %10.3f %12.3f %12.3f %12.3f\n", (long long)G, t.total, t.sinkhorn, t.assignment,
                  t.backward);
      std::fflush(stdout);
    }
    StepTimes permllm = learning_step(w_dev, scores_dev, n / 64, steps, 5, profiled);
    std::printf("  %-6s %10.3f %12.3f %12.3f %12.3f  (PermLLM: blocks of 64, 5 Sinkhorn iterations)\n", "n/64",
                permllm.total, permllm.sinkhorn, permllm.assignment, permllm.backward);
    if (device == Device::CUDA) return 0;

    std::printf("\nmethods on the whole matrix (at most %lld sweeps / rounds, %lld escapes):\n  %-14s %10s %10s\n",
                (long long)sweeps, (long long)escapes, "method", "seconds", "kept");
    for (const char* m : {"none", "random", "ria", "channel-swap"}) {
      auto t0 = std::chrono::steady_clock::now();
      Perm p = search_permutation(m, scores, pat, {.seed = 0, .max_sweeps = sweeps, .escapes = escapes});
      double s = since(t0);
      std::printf("  %-14s %10.2f %10.4f\n", m, s, kept_fraction(scores, p, pat));
      std::fflush(stdout);
    }
    std::printf("  %-14s %10.1f %10s  (300 steps x the measured step, blocks of 64, 5 Sinkhorn iterations)\n",
                "permllm", 300 * permllm.total, "-");
    std::printf("  %-14s %10.1f %10s  (300 steps x the measured G = 4 step)\n", "learned", 300 * step_g4, "-");
    std::printf("  unstructured bound kept %.4f\n", kept_fraction(scores, unstructured_mask(scores, pat)));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}

// Training-step benchmark of the embedded default models: forward + backward + gradient
// clipping + AdamW, on synthetic data of the real shapes (ViT: 128 images of 28x28x1;
// Llama: 32 windows of 128 bytes). Prints one JSON object with the median step time of
// each model; tools/bench/compare_train.py runs the same steps in PyTorch beside it.
//   NMPERM_THREADS=N bench_train [--steps 10] [--warmup 3] [--device cpu|cuda] [--precision f32|bf16|f16]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/storage.h"
#include "kernels/runtime.h"
#include "models/checkpoint.h"
#include "models/optim.h"

using namespace nmperm;

namespace {

bool on_gpu = false;

template <class F> double median_step_ms(int warmup, int steps, F&& step) {
  for (int i = 0; i < warmup; ++i) step();
  std::vector<double> ms;
  for (int i = 0; i < steps; ++i) {
    if (on_gpu) cuda_synchronize();
    auto t0 = std::chrono::steady_clock::now();
    step();
    if (on_gpu) cuda_synchronize();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  kernels::select_blas_kernels(argv);
  if (const char* t = std::getenv("NMPERM_THREADS")) kernels::set_num_threads(std::atoi(t));
  int steps = 10, warmup = 3;
  std::string precision = "f32";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--warmup")) warmup = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--device")) on_gpu = !std::strcmp(argv[i + 1], "cuda");
    else if (!std::strcmp(argv[i], "--precision")) precision = argv[i + 1];
    else {
      std::fprintf(stderr, "bench_train: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  LinearPrecision scope(precision_dtype(precision));  // mixed precision: f32 masters, 16-bit linear layers
  if (on_gpu && !cuda_available()) {
    std::fprintf(stderr, "bench_train: --device cuda but no CUDA device is available\n");
    return 1;
  }
  const Device dev = on_gpu ? Device::CUDA : Device::CPU;
  // Parameters on the benchmark's device, still requiring grad.
  auto place = [&](Tensor& t) {
    if (on_gpu) t = t.detach().to(dev).set_requires_grad();
  };
  Generator gen(0);

  ViT vit(ViTConfig{}, gen);
  std::vector<Tensor> vp;
  vit.visit([&](const std::string&, Tensor& t) {
    place(t);
    vp.push_back(t);
  });
  AdamW vopt(vp, {.lr = 1e-3, .weight_decay = 0.05});
  Tensor images = randn({128, 1, 28, 28}, gen).to(dev);
  std::vector<int64_t> lab(128);
  for (int64_t i = 0; i < 128; ++i) lab[size_t(i)] = i % 10;
  Tensor labels = from_vector(lab, {128}).to(dev);
  double vit_ms = median_step_ms(warmup, steps, [&] {
    vopt.zero_grad();
    Tensor loss = cross_entropy(vit.forward(images), labels);
    backward(loss);
    clip_grad_norm(vp, 1.0);
    vopt.step();
  });

  Llama llama(LlamaConfig{}, gen);
  std::vector<Tensor> lp;
  llama.visit([&](const std::string&, Tensor& t) {
    place(t);
    lp.push_back(t);
  });
  if (llama.cfg.tie_word_embeddings) llama.lm_head.weight = llama.embed_tokens;
  AdamW lopt(lp, {.lr = 1e-3, .weight_decay = 0.05});
  int64_t B = 32, T = 128;
  std::vector<int64_t> toks(size_t(B * (T + 1)));
  for (auto& t : toks) t = gen.randint(256);
  Tensor w = from_vector(toks, {B, T + 1}).to(dev);
  Tensor x = contiguous(narrow(w, 1, 0, T)), y = reshape(contiguous(narrow(w, 1, 1, T)), {B * T});
  double llama_ms = median_step_ms(warmup, steps, [&] {
    lopt.zero_grad();
    Tensor loss = cross_entropy(reshape(llama.forward(x), {B * T, 256}), y);
    backward(loss);
    clip_grad_norm(lp, 1.0);
    lopt.step();
  });
  std::printf("{\"vit_ms\": %.3f, \"llama_ms\": %.3f, \"threads\": %d, \"blas\": \"%s\", \"device\": \"%s\", "
              "\"precision\": \"%s\"}\n",
              vit_ms, llama_ms, kernels::num_threads(), kernels::blas_core().c_str(),
              on_gpu ? cuda_device_name().c_str() : "cpu", precision.c_str());
  return 0;
}

// Training-step benchmark: forward + backward + gradient clipping + AdamW, on synthetic
// data of the models' shapes. By default the embedded default models (ViT: 128 images of
// 28x28x1; Llama: 32 windows of 128 bytes), which tools/bench/compare_train.py runs in
// PyTorch beside it; --vit-config / --llama-config take any Hugging Face config.json
// instead (random weights at its shapes), to see how the figures move with width.
// Prints one JSON object with the median step time of each model, and of the Llama's
// evaluation (forward and loss without gradients, the unit of `nmperm eval`; under
// --precision bf16/f16 the linear weights are kept in 16 bits, as `nmperm eval` keeps them).
// --profile adds, per model, the host milliseconds per step in each op family
// (core/profile.h), measured over separate steps after the timed ones; "autograd and
// other" is the rest of the step (graph building and walking, views, the loop itself).
//   NMPERM_THREADS=N bench_train [--steps 10] [--warmup 3] [--device cpu|cuda] [--precision f32|bf16|f16]
//                                [--profile] [--models vit,llama] [--vit-config F] [--vit-batch 128]
//                                [--llama-config F] [--llama-batch 32] [--llama-seq 128]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/profile.h"
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

// {"family": ms per step, ...} over `steps` profiled steps, the rest of the step as
// "autograd and other".
template <class F> std::string profile_json(int steps, F&& step) {
  profile::reset();
  auto t0 = std::chrono::steady_clock::now();
  {
    profile::Enabled on;
    for (int i = 0; i < steps; ++i) step();
  }
  double wall = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / steps;
  std::string out = "{";
  double inside = 0;
  auto t = profile::totals();
  for (int f = 0; f < profile::kFamilies; ++f) {
    double ms = t[size_t(f)] * 1e3 / steps;
    inside += ms;
    if (ms > 0) out += fmt::format("\"{}\": {:.3f}, ", profile::family_name(profile::Family(f)), ms);
  }
  return out + fmt::format("\"autograd and other\": {:.3f}, \"step\": {:.3f}}}", wall - inside, wall);
}

}  // namespace

int main(int argc, char** argv) try {
  kernels::select_blas_kernels(argv);
  if (const char* t = std::getenv("NMPERM_THREADS")) kernels::set_num_threads(std::atoi(t));
  int steps = 10, warmup = 3;
  bool profiled = false;
  std::string precision = "f32", models = "vit,llama", vit_config, llama_config;
  int64_t vit_batch = 128, llama_batch = 32, llama_seq = 128;
  for (int i = 1; i < argc; i += 2) {
    if (!std::strcmp(argv[i], "--profile")) {
      profiled = true;
      --i;
    } else if (i + 1 == argc) {
      std::fprintf(stderr, "bench_train: %s needs a value\n", argv[i]);
      return 2;
    } else if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--warmup")) warmup = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--device")) on_gpu = !std::strcmp(argv[i + 1], "cuda");
    else if (!std::strcmp(argv[i], "--precision")) precision = argv[i + 1];
    else if (!std::strcmp(argv[i], "--models")) models = argv[i + 1];
    else if (!std::strcmp(argv[i], "--vit-config")) vit_config = argv[i + 1];
    else if (!std::strcmp(argv[i], "--llama-config")) llama_config = argv[i + 1];
    else if (!std::strcmp(argv[i], "--vit-batch")) vit_batch = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--llama-batch")) llama_batch = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--llama-seq")) llama_seq = std::atoll(argv[i + 1]);
    else {
      std::fprintf(stderr, "bench_train: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  const bool run_vit = models == "vit" || models == "vit,llama", run_llama = models == "llama" || models == "vit,llama";
  if (!run_vit && !run_llama) {
    std::fprintf(stderr, "bench_train: --models must be vit, llama or vit,llama, not '%s'\n", models.c_str());
    return 2;
  }
  if (vit_batch < 1 || llama_batch < 1 || llama_seq < 1) {
    std::fprintf(stderr, "bench_train: --vit-batch, --llama-batch and --llama-seq must be positive\n");
    return 2;
  }
  LinearPrecision scope(precision_dtype(precision));  // mixed precision: f32 masters, 16-bit linear layers
  if (profiled && on_gpu) {
    std::fprintf(stderr, "bench_train: --profile times the host side only; CUDA kernels run asynchronously\n");
    return 2;
  }
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
  std::string out;  // the JSON members so far
  auto member = [&](const std::string& m) { out += (out.empty() ? "" : ", ") + m; };

  if (run_vit) {
    ViTConfig cfg = vit_config.empty() ? ViTConfig{} : ViTConfig::from_json(read_json(vit_config));
    cfg.validate();
    ViT vit(cfg, gen);
    std::vector<Tensor> vp;
    vit.visit([&](const std::string&, Tensor& t) {
      place(t);
      vp.push_back(t);
    });
    AdamW vopt(vp, {.lr = 1e-3, .weight_decay = 0.05});
    Tensor images = randn({vit_batch, cfg.num_channels, cfg.image_size, cfg.image_size}, gen).to(dev);
    std::vector<int64_t> lab(static_cast<size_t>(vit_batch));
    for (int64_t i = 0; i < vit_batch; ++i) lab[size_t(i)] = i % cfg.num_labels;
    Tensor labels = from_vector(lab, {vit_batch}).to(dev);
    auto vit_step = [&] {
      {
        profile::Region opt(profile::Family::Optimizer);
        vopt.zero_grad();
      }
      Tensor loss = cross_entropy(vit.forward(images), labels);
      backward(loss);
      profile::Region opt(profile::Family::Optimizer);
      vopt.step(clip_scale(grad_norm(vp), 1.0));
    };
    member(fmt::format("\"vit_ms\": {:.3f}", median_step_ms(warmup, steps, vit_step)));
    if (profiled) member(fmt::format("\"vit_profile\": {}", profile_json(steps, vit_step)));
    member(fmt::format("\"vit_config\": \"{}\", \"vit_batch\": {}", vit_config.empty() ? "embedded" : vit_config,
                       vit_batch));
  }

  if (run_llama) {
    LlamaConfig cfg = llama_config.empty() ? LlamaConfig{} : LlamaConfig::from_json(read_json(llama_config));
    cfg.validate();
    Llama llama(cfg, gen);
    std::vector<Tensor> lp;
    llama.visit([&](const std::string&, Tensor& t) {
      place(t);
      lp.push_back(t);
    });
    if (llama.cfg.tie_word_embeddings) llama.lm_head.weight = llama.embed_tokens;
    AdamW lopt(lp, {.lr = 1e-3, .weight_decay = 0.05});
    const int64_t B = llama_batch, T = llama_seq, V = cfg.vocab_size;
    std::vector<int64_t> toks(size_t(B * (T + 1)));
    for (auto& t : toks) t = gen.randint(V);
    Tensor w = from_vector(toks, {B, T + 1}).to(dev);
    Tensor x = contiguous(narrow(w, 1, 0, T)), y = reshape(contiguous(narrow(w, 1, 1, T)), {B * T});
    auto llama_step = [&] {
      {
        profile::Region opt(profile::Family::Optimizer);
        lopt.zero_grad();
      }
      Tensor loss = cross_entropy(reshape(llama.forward(x), {B * T, V}), y);
      backward(loss);
      profile::Region opt(profile::Family::Optimizer);
      lopt.step(clip_scale(grad_norm(lp), 1.0));
    };
    member(fmt::format("\"llama_ms\": {:.3f}", median_step_ms(warmup, steps, llama_step)));
    if (profiled) member(fmt::format("\"llama_profile\": {}", profile_json(steps, llama_step)));
    // The evaluation as `nmperm eval` runs it: under 16-bit precision the linear weights are
    // kept in 16 bits (converted once, not on every forward); a tied lm_head stays f32.
    if (const DType half = precision_dtype(precision); is_half(half))
      llama.visit_linears([&](const std::string&, Linear& l) { l.weight = l.weight.detach().to(half); });
    auto llama_eval = [&] {
      NoGradGuard no_grad;
      (void)cross_entropy(reshape(llama.forward(x), {B * T, V}), y).item();
    };
    member(fmt::format("\"llama_eval_ms\": {:.3f}", median_step_ms(warmup, steps, llama_eval)));
    if (profiled) member(fmt::format("\"llama_eval_profile\": {}", profile_json(steps, llama_eval)));
    member(fmt::format("\"llama_config\": \"{}\", \"llama_batch\": {}, \"llama_seq\": {}",
                       llama_config.empty() ? "embedded" : llama_config, B, T));
  }
  std::printf("{%s, \"threads\": %d, \"blas\": \"%s\", \"device\": \"%s\", \"precision\": \"%s\"}\n", out.c_str(),
              kernels::num_threads(), kernels::matmul_libraries().c_str(), on_gpu ? cuda_device_name().c_str() : "cpu",
              precision.c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_train: %s\n", e.what());
  return 1;
}

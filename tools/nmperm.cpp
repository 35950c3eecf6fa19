// nmperm command-line tool.
//   nmperm demo   end-to-end showcase of the engine: trains an MLP on Fashion-MNIST with
//                 our autograd, AdamW and CBLAS matmuls, then reports test accuracy.
// Exit codes: 0 success, 1 runtime error (bad file, bad data, ...), 2 usage error.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "autograd/ops.h"
#include "kernels/dispatch.h"
#include "models/data.h"
#include "models/optim.h"

using namespace nmperm;

namespace {

struct DemoOptions {
  std::string data = kFashionMnistDir;
  int epochs = 5;
  int batch = 128;
  double lr = 1e-3;
  int hidden = 256;
  uint64_t seed = 0;
  int threads = 0;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Uniform(-1/sqrt(in), 1/sqrt(in)) like PyTorch's nn.Linear default.
Tensor init_linear(int64_t out, int64_t in, Generator& gen) {
  Tensor w = rand({out, in}, gen);
  float bound = 1.0f / std::sqrt(float(in));
  float* p = w.data<float>();
  for (int64_t i = 0; i < w.numel(); ++i) p[i] = (2 * p[i] - 1) * bound;
  return w.set_requires_grad();
}

int run_demo(const DemoOptions& o) {
  if (o.threads > 0) kernels::set_num_threads(o.threads);
  std::printf("nmperm demo (engine showcase): a 2-layer MLP on Fashion-MNIST, trained with nmperm's own autograd\n");
  std::printf("threads: %d, OpenBLAS kernels: %s, data: %s\n", kernels::num_threads(), kernels::blas_core().c_str(),
              o.data.c_str());
  ImageSet train = load_fashion_mnist(o.data, "train"), test = load_fashion_mnist(o.data, "t10k");
  int64_t N = train.size(), D = train.images.numel() / N;
  std::printf("train %lld images, test %lld images, %lld features\n", (long long)N, (long long)test.size(),
              (long long)D);
  Tensor xtr = reshape(train.images, {N, D}), xte = reshape(test.images, {test.size(), D});
  // Normalise with the training set's statistics.
  double mu = mean(xtr).item(), sd = std::sqrt(var(xtr, {}, 0).item());
  xtr = (xtr - mu) / sd;
  xte = (xte - mu) / sd;

  Generator gen(o.seed);
  Tensor w1 = init_linear(o.hidden, D, gen), b1 = zeros({o.hidden}).set_requires_grad();
  Tensor w2 = init_linear(10, o.hidden, gen), b2 = zeros({10}).set_requires_grad();
  AdamW opt({w1, b1, w2, b2}, {.lr = o.lr, .weight_decay = 0.0});
  auto model = [&](const Tensor& x) { return linear(gelu(linear(x, w1, b1)), w2, b2); };

  int64_t steps_per_epoch = N / o.batch, total = steps_per_epoch * o.epochs, step = 0;
  auto t0 = std::chrono::steady_clock::now();
  double ema = 0;
  for (int e = 0; e < o.epochs; ++e) {
    // Seeded shuffle (Fisher-Yates on a counter-based stream: same order for a seed).
    std::vector<int64_t> order(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) order[size_t(i)] = i;
    for (int64_t i = N - 1; i > 0; --i) std::swap(order[size_t(i)], order[size_t(gen.randint(i + 1))]);
    Tensor perm = from_vector(order, {N});
    for (int64_t s = 0; s < steps_per_epoch; ++s, ++step) {
      Tensor idx = narrow(perm, 0, s * o.batch, o.batch).contiguous();
      Tensor x = index_select(xtr, 0, idx), y = index_select(train.labels, 0, idx);
      Tensor loss = cross_entropy(model(x), y);
      opt.zero_grad();
      backward(loss);
      clip_grad_norm(opt.params, 1.0);
      opt.step();
      double l = loss.item();
      NMPERM_CHECK(std::isfinite(l), "training loss became {} at step {}", l, step);
      ema = step == 0 ? l : 0.95 * ema + 0.05 * l;
      if ((step + 1) % 20 == 0 || step + 1 == total) {
        double el = seconds_since(t0), eta = el / double(step + 1) * double(total - step - 1);
        std::printf("\r  epoch %d/%d  step %5lld/%lld  loss %.4f  %7.0f img/s  ETA %4.0fs", e + 1, o.epochs,
                    (long long)step + 1, (long long)total, ema, double((step + 1) * o.batch) / el, eta);
        std::fflush(stdout);
      }
    }
  }
  std::printf("\n");
  NoGradGuard ng;
  Tensor pred = argmax(model(xte), 1);
  int64_t correct = 0;
  auto pv = pred.to_vector<int64_t>(), lv = test.labels.to_vector<int64_t>();
  for (size_t i = 0; i < pv.size(); ++i) correct += pv[i] == lv[i];
  double test_loss = cross_entropy(model(xte), test.labels).item();
  std::printf("test accuracy %.4f (%lld/%lld), test loss %.4f, training time %.1fs\n", double(correct) / double(pv.size()),
              (long long)correct, (long long)pv.size(), test_loss, seconds_since(t0));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  kernels::select_blas_kernels(argv);
  CLI::App app{"nmperm: tensors, autodiff, transformers and learned channel permutations for N:M sparsity"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "nmperm 0.1.0");
  app.footer("Exit codes: 0 success, 1 runtime error, 2 usage error. Run 'nmperm SUBCOMMAND --help' for details.");

  DemoOptions demo;
  auto* d = app.add_subcommand("demo", "End-to-end showcase: train an MLP on Fashion-MNIST and report test accuracy");
  d->add_option("--data", demo.data, "Folder with the Fashion-MNIST IDX files")->capture_default_str();
  d->add_option("--epochs", demo.epochs, "Training epochs")->capture_default_str()->check(CLI::PositiveNumber);
  d->add_option("--batch", demo.batch, "Batch size")->capture_default_str()->check(CLI::PositiveNumber);
  d->add_option("--lr", demo.lr, "AdamW learning rate")->capture_default_str()->check(CLI::PositiveNumber);
  d->add_option("--hidden", demo.hidden, "Hidden width")->capture_default_str()->check(CLI::PositiveNumber);
  d->add_option("--seed", demo.seed, "Random seed (initialisation and shuffling)")->capture_default_str();
  d->add_option("--threads", demo.threads, "CPU threads (0 = OpenMP default)")->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "error: %s\nRun with --help for usage.\n", e.what());
    return 2;
  }
  try {
    if (d->parsed()) return run_demo(demo);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nerror: %s\n", e.what());
    return 1;
  }
  return 0;
}

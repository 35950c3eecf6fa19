// nmperm command-line tool.
//   nmperm train  train a ViT (Fashion-MNIST) or a Llama (KJV bytes or a token file)
//   nmperm eval   evaluate any ViT / Llama checkpoint (ours or exported by Hugging Face)
//   nmperm calibrate       activation norms of every linear layer over calibration data
//   nmperm permute-matrix  search an N:M channel permutation for one weight matrix
//   nmperm prune  prune a checkpoint to N:M with one or more permutation methods
//   nmperm demo   end-to-end showcase of the engine: trains an MLP on Fashion-MNIST with
//                 our autograd, AdamW and CBLAS matmuls, then reports test accuracy.
// Exit codes: 0 success, 1 runtime error (bad file, bad data, ...), 2 usage error.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>

#include "autograd/ops.h"
#include "kernels/dispatch.h"
#include <filesystem>
#include <fstream>

#include "models/calibrate.h"
#include "models/checkpoint.h"
#include "models/data.h"
#include "models/optim.h"
#include "models/train.h"
#include "permute/baselines.h"
#include "permute/prune.h"

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

std::string default_cache() {
  if (const char* c = std::getenv("NMPERM_CACHE")) return c;
  if (const char* x = std::getenv("XDG_CACHE_HOME")) return std::string(x) + "/nmperm";
  if (const char* h = std::getenv("HOME")) return std::string(h) + "/.cache/nmperm";
  return ".nmperm-cache";
}

struct DataOptions {
  std::string data;          // vit: IDX folder; llama: "kjv" or a token file
  std::string val;           // llama: validation token file
  std::string token_format = "auto";
  std::string cache = default_cache();
};

TrainData load_data(const std::string& arch, const DataOptions& o, bool need_train) {
  TrainData d;
  if (arch == "vit") {
    std::string dir = o.data.empty() ? kFashionMnistDir : o.data;
    if (need_train) d.train_images = load_fashion_mnist(dir, "train");
    d.test_images = load_fashion_mnist(dir, "t10k");
  } else {
    d.tokens = (o.data.empty() || o.data == "kjv") ? load_kjv_bytes(o.cache)
                                                   : load_token_data(o.data, o.val, o.token_format);
  }
  return d;
}

// The embedded default architectures.
ViTConfig default_vit() { return ViTConfig{}; }  // 28x28x1, patch 4, hidden 128, 4 layers, 4 heads, MLP 512
LlamaConfig default_llama() { return LlamaConfig{}; }  // bytes, hidden 128, 4 layers, 4/2 heads, 384, ctx 128

struct TrainCli {
  TrainConfig cfg;
  DataOptions data;
  std::string model_config, init;
  bool resume = false;
  int threads = 0;
};

int run_train(TrainCli& o) {
  if (o.threads > 0) kernels::set_num_threads(o.threads);
  TrainConfig& cfg = o.cfg;
  NMPERM_CHECK(cfg.arch == "vit" || cfg.arch == "llama", "--arch must be vit or llama, got '{}'", cfg.arch);
  TrainData data = load_data(cfg.arch, o.data, true);
  Model model;
  if (!o.init.empty()) {
    model = load_checkpoint(o.init);
    NMPERM_CHECK(model.arch() == cfg.arch, "--init checkpoint is a {} model, --arch says {}", model.arch(), cfg.arch);
  } else {
    Generator gen(cfg.seed);
    nlohmann::json mc = nlohmann::json::object();
    if (!o.model_config.empty()) {
      std::ifstream f(o.model_config);
      NMPERM_CHECK(f, "cannot open --model-config '{}'", o.model_config);
      mc = nlohmann::json::parse(f, nullptr, false);
      NMPERM_CHECK(!mc.is_discarded(), "--model-config '{}' is not valid JSON", o.model_config);
    }
    if (cfg.arch == "vit") {
      ViTConfig vc = mc.empty() ? default_vit() : ViTConfig::from_json(mc);
      const ImageSet& tr = data.train_images;
      NMPERM_CHECK(tr.images.shape(2) == vc.image_size && tr.images.shape(1) == vc.num_channels,
                   "the data's images are {}x{}x{}, the model expects {}x{}x{}", tr.images.shape(1),
                   tr.images.shape(2), tr.images.shape(3), vc.num_channels, vc.image_size, vc.image_size);
      model.vit = std::make_unique<ViT>(vc, gen);
      // Normalise with the training set's statistics (written to preprocessor_config.json).
      double mu = mean(tr.images).item(), sd = std::sqrt(var(tr.images, {}, 0).item());
      model.preprocess.image_mean = {mu};
      model.preprocess.image_std = {sd};
    } else {
      LlamaConfig lc = mc.empty() ? default_llama() : LlamaConfig::from_json(mc);
      if (mc.empty()) lc.vocab_size = std::max<int64_t>(lc.vocab_size, data.tokens.vocab);
      model.llama = std::make_unique<Llama>(lc, gen);
    }
  }
  std::printf("nmperm train: %s, %lld parameters, %s; %lld steps of batch %lld on %d threads (OpenBLAS %s)\n",
              model.arch().c_str(), (long long)model.num_parameters(),
              cfg.arch == "vit" ? fmt::format("{} training images", data.train_images.size()).c_str()
                                : data.tokens.description.c_str(),
              (long long)cfg.steps, (long long)cfg.batch, kernels::num_threads(), kernels::blas_core().c_str());
  auto t0 = std::chrono::steady_clock::now();
  EvalResult r = train(model, cfg, data, o.resume);
  std::printf("done in %.1fs: %s\ncheckpoint: %s\n", seconds_since(t0), r.to_json(model.arch()).dump().c_str(),
              cfg.out_dir.c_str());
  return 0;
}

struct EvalCli {
  std::string checkpoint;
  DataOptions data;
  int64_t windows = 0;
  int threads = 0;
  bool json = false;
};

int run_eval(EvalCli& o) {
  if (o.threads > 0) kernels::set_num_threads(o.threads);
  Model model = load_checkpoint(o.checkpoint);
  TrainData data = load_data(model.arch(), o.data, false);
  auto t0 = std::chrono::steady_clock::now();
  EvalResult r = evaluate(model, data, o.windows);
  nlohmann::json j = r.to_json(model.arch());
  j["checkpoint"] = o.checkpoint;
  j["arch"] = model.arch();
  j["seconds"] = seconds_since(t0);
  bool bytes = model.llama && (o.data.data.empty() || o.data.data == "kjv");
  if (bytes) j["bits_per_byte"] = r.loss / std::log(2.0);
  if (o.json) {
    std::printf("%s\n", j.dump().c_str());
  } else if (model.vit) {
    std::printf("%s: test accuracy %.4f, test loss %.4f (%lld images)\n", o.checkpoint.c_str(), r.accuracy, r.loss,
                (long long)r.count);
  } else {
    std::printf("%s: validation loss %.4f, perplexity %.3f, bits per %s %.4f (%lld tokens)\n", o.checkpoint.c_str(),
                r.loss, std::exp(r.loss), bytes ? "byte" : "token", r.loss / std::log(2.0), (long long)r.count);
  }
  return 0;
}

struct PermuteMatrixCli {
  std::string weights, tensor, act_norms, act_tensor, pattern = "2:4", score = "wanda", method = "ria";
  uint64_t seed = 0;
  int64_t sweeps = 100, escapes = 20;
  int threads = 0;
};

// One matrix: the kept-score fraction for the identity, for the method and for the
// unstructured bound, the permutation and the search time, as one JSON object.
int run_permute_matrix(PermuteMatrixCli& o) {
  if (o.threads > 0) kernels::set_num_threads(o.threads);
  SafeTensors st = load_safetensors(o.weights);
  const Tensor* w = st.find(o.tensor);
  NMPERM_CHECK(w, "'{}' has no tensor '{}'", o.weights, o.tensor);
  NMPERM_CHECK(w->ndim() == 2, "tensor '{}' is {}, expected a (out, in) weight matrix", o.tensor, describe(*w));
  Score score = parse_score(o.score);
  NMPattern pat = NMPattern::parse(o.pattern);
  pat.check_fits(w->shape(1), o.tensor);
  Tensor norms;
  if (!o.act_norms.empty()) {
    SafeTensors an = load_safetensors(o.act_norms);
    const Tensor* t = an.find(o.act_tensor.empty() ? o.tensor : o.act_tensor);
    NMPERM_CHECK(t, "'{}' has no tensor '{}'", o.act_norms, o.act_tensor.empty() ? o.tensor : o.act_tensor);
    norms = *t;
  }
  NMPERM_CHECK(score == Score::Magnitude || norms.defined(),
               "score '{}' needs activation norms: pass --act-norms FILE [--act-norms-tensor NAME]", o.score);
  Tensor s = importance(*w, norms, score);
  auto t0 = std::chrono::steady_clock::now();
  Perm p = search_permutation(o.method, s, pat, {.seed = o.seed, .max_sweeps = o.sweeps, .escapes = o.escapes});
  double secs = seconds_since(t0);
  nlohmann::json j = {{"tensor", o.tensor},
                      {"shape", w->shape()},
                      {"pattern", o.pattern},
                      {"score", o.score},
                      {"method", o.method},
                      {"kept_identity", kept_fraction(s, identity_perm(w->shape(1)), pat)},
                      {"kept_method", kept_fraction(s, p, pat)},
                      {"kept_unstructured", kept_fraction(s, unstructured_mask(s, pat))},
                      {"seconds", secs},
                      {"permutation", p}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

struct CalibrateCli {
  std::string checkpoint, out;
  DataOptions data;
  CalibrationOptions opt;
  int threads = 0;
};

int run_calibrate(CalibrateCli& o) {
  if (o.threads > 0) kernels::set_num_threads(o.threads);
  Model model = load_checkpoint(o.checkpoint);
  TrainData data = load_data(model.arch(), o.data, true);
  auto t0 = std::chrono::steady_clock::now();
  auto norms = activation_norms(model, data, o.opt);
  std::vector<std::pair<std::string, Tensor>> tensors(norms.begin(), norms.end());
  save_safetensors(o.out, tensors,
                   {{"checkpoint", o.checkpoint},
                    {"batches", std::to_string(o.opt.batches)},
                    {"batch", std::to_string(o.opt.batch)}});
  std::printf("activation norms of %zu linear layers from %lld %s in %.1fs -> %s\n", tensors.size(),
              (long long)(o.opt.batches * o.opt.batch), model.vit ? "images" : "token windows", seconds_since(t0),
              o.out.c_str());
  return 0;
}

struct PruneCli {
  std::string checkpoint, out, report, pattern = "2:4", score = "wanda";
  std::vector<std::string> methods{"none"};
  uint64_t seed = 0;
  int64_t seeds = 1;
  DataOptions data;
  CalibrationOptions calib;
  int64_t eval_windows = 0;
  int threads = 0;
  // learned-method settings given on the command line (others keep learn_defaults)
  std::optional<int64_t> steps, groups, iters, batch;
  std::optional<double> lr, alpha, eps_start, eps_end;
  std::string warm_start = "none";
  int64_t sweeps = 100, escapes = 20;
};

nlohmann::json eval_json(Model& m, const TrainData& data, int64_t windows) {
  EvalResult r = evaluate(m, data, windows);
  nlohmann::json j = r.to_json(m.arch());
  if (m.llama) j["perplexity"] = std::exp(r.loss);
  return j;
}

// Methods whose result depends on the seed run once per seed; the others once.
bool seeded(const std::string& m) { return m != "none" && m != "ria"; }

int run_prune(PruneCli& o) {
  if (o.threads > 0) kernels::set_num_threads(o.threads);
  NMPattern pattern = NMPattern::parse(o.pattern);
  Score score = parse_score(o.score);
  Model dense = load_checkpoint(o.checkpoint);
  TrainData data = load_data(dense.arch(), o.data, true);
  std::fprintf(stderr, "nmperm prune: %s (%s, %lld parameters), %s, %s scores, methods:", o.checkpoint.c_str(),
               dense.arch().c_str(), (long long)dense.num_parameters(), o.pattern.c_str(), o.score.c_str());
  for (auto& m : o.methods) std::fprintf(stderr, " %s", m.c_str());
  std::fprintf(stderr, "; %d threads\n", kernels::num_threads());
  for (const Site& s : permutation_sites(dense)) pattern.check_fits(s.channels, "site '" + s.name + "'");

  auto t0 = std::chrono::steady_clock::now();
  nlohmann::json report = {{"checkpoint", o.checkpoint}, {"arch", dense.arch()}, {"pattern", o.pattern},
                           {"score", o.score},           {"seed", o.seed},        {"seeds", o.seeds},
                           {"threads", kernels::num_threads()}, {"blas", kernels::blas_core()},
                           {"version", "nmperm 0.1.0"}, {"calibration", {{"batches", o.calib.batches}, {"batch", o.calib.batch}}}};
  report["dense"] = eval_json(dense, data, o.eval_windows);
  std::fprintf(stderr, "dense: %s\n", report["dense"].dump().c_str());
  auto norms = activation_norms(dense, data, o.calib);
  report["runs"] = nlohmann::json::array();
  auto save_report = [&] {
    if (!o.report.empty()) write_file_atomic(o.report, report.dump(2) + "\n");
  };
  for (const std::string& method : o.methods) {
    int64_t runs = seeded(method) ? o.seeds : 1;
    for (int64_t k = 0; k < runs; ++k) {
      PruneOptions po;
      po.pattern = pattern;
      po.score = score;
      po.method = method;
      po.seed = o.seed + uint64_t(k);
      po.search = {.seed = po.seed, .max_sweeps = o.sweeps, .escapes = o.escapes};
      po.learn = learn_defaults(method);
      if (o.steps) po.learn.steps = *o.steps;
      if (o.groups) po.learn.groups = *o.groups;
      if (o.iters) po.learn.sinkhorn_iters = *o.iters;
      if (o.batch) po.learn.batch = *o.batch;
      if (o.lr) po.learn.lr = *o.lr;
      if (o.alpha) po.learn.alpha = *o.alpha;
      if (o.eps_start) po.learn.eps_start = *o.eps_start;
      if (o.eps_end) po.learn.eps_end = *o.eps_end;
      po.warm_start = method == "learned" ? o.warm_start : "none";
      std::fprintf(stderr, "%s (seed %llu)\n", method.c_str(), (unsigned long long)po.seed);
      Model m = load_checkpoint(o.checkpoint);
      auto t1 = std::chrono::steady_clock::now();
      PruneResult r = prune_model(m, data, norms, po);
      double secs = seconds_since(t1);
      nlohmann::json run = {{"method", method},
                            {"seed", po.seed},
                            {"eval", eval_json(m, data, o.eval_windows)},
                            {"mean_kept", r.mean_kept},
                            {"mean_kept_identity", r.mean_kept_identity},
                            {"mean_kept_unstructured", r.mean_kept_bound},
                            {"seconds", secs},
                            {"search_seconds", r.search_seconds},
                            {"layers", r.layers},
                            {"sites", r.sites}};
      if (method == "permllm" || method == "learned") {
        run["learn"] = {{"options", po.learn.to_json()},
                        {"warm_start", po.warm_start},
                        {"best_step", r.learn.best_step},
                        {"start_holdout", r.learn.start_holdout},
                        {"best_holdout", r.learn.best_holdout},
                        {"curve", r.learn.curve}};
      }
      if (!o.out.empty()) {
        std::string dir = o.out + "/" + method + (runs > 1 ? fmt::format("-seed{}", po.seed) : "");
        save_checkpoint(m, dir, {{"pruned", o.pattern}, {"permute", method}});
        std::map<std::string, std::string> meta = {{"pattern", o.pattern}, {"score", o.score}, {"method", method}};
        save_permutations(dir + "/permutations.safetensors", r.perms, meta);
        run["checkpoint"] = dir;
      }
      std::fprintf(stderr, "  %s: %s, mean kept %.4f (identity %.4f, bound %.4f), %.1fs\n", method.c_str(),
                   run["eval"].dump().c_str(), r.mean_kept, r.mean_kept_identity, r.mean_kept_bound, secs);
      report["runs"].push_back(run);
      save_report();
    }
  }
  report["seconds"] = seconds_since(t0);
  save_report();
  // The table: metric per method (mean and spread over seeds).
  std::printf("%-14s %-22s %-22s %-10s %s\n", "method", dense.vit ? "accuracy" : "loss", dense.vit ? "test loss" : "perplexity",
              "kept", "seconds");
  auto metric = [&](const nlohmann::json& e, int which) {
    if (dense.vit) return which == 0 ? e["accuracy"].get<double>() : e["loss"].get<double>();
    return which == 0 ? e["loss"].get<double>() : std::exp(e["loss"].get<double>());
  };
  std::printf("%-14s %-22.4f %-22.4f %-10s %s\n", "dense", metric(report["dense"], 0), metric(report["dense"], 1), "1",
              "-");
  for (const std::string& method : o.methods) {
    std::vector<nlohmann::json> rs;
    for (auto& run : report["runs"])
      if (run["method"] == method) rs.push_back(run);
    auto stat = [&](auto get) {
      double lo = INFINITY, hi = -INFINITY, sum = 0;
      for (auto& run : rs) {
        double v = get(run);
        lo = std::min(lo, v), hi = std::max(hi, v), sum += v;
      }
      double mu = sum / double(rs.size());
      return rs.size() > 1 ? fmt::format("{:.4f} ± {:.4f}", mu, (hi - lo) / 2) : fmt::format("{:.4f}", mu);
    };
    std::printf("%-14s %-22s %-22s %-10s %s\n", method.c_str(),
                stat([&](auto& r) { return metric(r["eval"], 0); }).c_str(),
                stat([&](auto& r) { return metric(r["eval"], 1); }).c_str(),
                stat([&](auto& r) { return r["mean_kept"].template get<double>(); }).c_str(),
                stat([&](auto& r) { return r["seconds"].template get<double>(); }).c_str());
  }
  return 0;
}

void add_data_options(CLI::App* c, DataOptions& d) {
  c->add_option("--data", d.data,
                "vit: folder with Fashion-MNIST IDX files (default: Debian's dataset-fashion-mnist); "
                "llama: 'kjv' (default, the King James Bible as bytes) or a token file (llm.c .bin, .u16, .u32)");
  c->add_option("--val", d.val, "llama: validation token file (default: the last 5% of --data)");
  c->add_option("--token-format", d.token_format, "auto, llmc, u16 or u32")->capture_default_str();
  c->add_option("--cache", d.cache, "cache folder (exported KJV text)")->capture_default_str();
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

  TrainCli tr;
  auto* t = app.add_subcommand("train", "Train a ViT or Llama (fresh, from --init, or resumed)");
  t->add_option("--arch", tr.cfg.arch, "vit or llama")->required()->check(CLI::IsMember({"vit", "llama"}));
  t->add_option("--out", tr.cfg.out_dir, "output folder (checkpoints, metrics.jsonl)")->required();
  t->add_option("--model-config", tr.model_config,
                "Hugging Face config.json for a fresh model (default: the embedded default architecture)");
  t->add_option("--init", tr.init, "start from this checkpoint instead of a fresh model");
  t->add_flag("--resume", tr.resume, "continue from the newest checkpoint in --out");
  t->add_option("--steps", tr.cfg.steps, "optimizer steps")->capture_default_str()->check(CLI::PositiveNumber);
  t->add_option("--batch", tr.cfg.batch, "images or token windows per step")->capture_default_str()->check(CLI::PositiveNumber);
  t->add_option("--lr", tr.cfg.lr, "peak learning rate (AdamW)")->capture_default_str()->check(CLI::PositiveNumber);
  t->add_option("--min-lr-ratio", tr.cfg.min_lr_ratio, "final lr as a fraction of --lr (cosine)")->capture_default_str();
  t->add_option("--warmup", tr.cfg.warmup, "linear warm-up steps")->capture_default_str()->check(CLI::NonNegativeNumber);
  t->add_option("--weight-decay", tr.cfg.weight_decay, "AdamW weight decay (matrices only)")->capture_default_str();
  t->add_option("--clip", tr.cfg.clip, "global gradient-norm clip (0 = off)")->capture_default_str();
  t->add_option("--eval-every", tr.cfg.eval_every, "steps between evaluations")->capture_default_str()->check(CLI::PositiveNumber);
  t->add_option("--ckpt-every", tr.cfg.ckpt_every, "steps between checkpoints")->capture_default_str()->check(CLI::PositiveNumber);
  t->add_option("--eval-windows", tr.cfg.eval_windows, "llama: validation windows per evaluation (0 = all)")->capture_default_str();
  t->add_option("--seed", tr.cfg.seed, "seed for initialisation and data order")->capture_default_str();
  t->add_option("--threads", tr.threads, "CPU threads (0 = OpenMP default)")->capture_default_str();
  add_data_options(t, tr.data);

  EvalCli ev;
  auto* e = app.add_subcommand("eval", "Evaluate a checkpoint: ViT test accuracy, or Llama loss/perplexity/bits per byte");
  e->add_option("--checkpoint", ev.checkpoint, "checkpoint folder or .safetensors file (config.json beside it)")->required();
  e->add_option("--windows", ev.windows, "llama: at most this many validation windows (0 = all)")->capture_default_str();
  e->add_option("--threads", ev.threads, "CPU threads (0 = OpenMP default)")->capture_default_str();
  e->add_flag("--json", ev.json, "print one JSON object");
  add_data_options(e, ev.data);

  CalibrateCli cal;
  auto* cc = app.add_subcommand("calibrate", "Per-input-channel activation norms of every linear layer (for Wanda/RIA)");
  cc->add_option("--checkpoint", cal.checkpoint, "checkpoint folder or file")->required();
  cc->add_option("--out", cal.out, "output safetensors file (one (in) vector per weight name)")->required();
  cc->add_option("--batches", cal.opt.batches, "forward passes")->capture_default_str()->check(CLI::PositiveNumber);
  cc->add_option("--batch", cal.opt.batch, "images or token windows per pass")->capture_default_str()->check(CLI::PositiveNumber);
  cc->add_option("--threads", cal.threads, "CPU threads (0 = OpenMP default)")->capture_default_str();
  add_data_options(cc, cal.data);

  PermuteMatrixCli pm;
  auto* pmc = app.add_subcommand("permute-matrix",
                                 "Search an input-channel permutation for one weight matrix and print JSON");
  pmc->add_option("--weights", pm.weights, "safetensors file holding the matrix")->required();
  pmc->add_option("--tensor", pm.tensor, "name of the (out, in) weight in that file")->required();
  pmc->add_option("--act-norms", pm.act_norms, "safetensors file with per-input-channel activation norms");
  pmc->add_option("--act-norms-tensor", pm.act_tensor, "tensor name in --act-norms (default: --tensor)");
  pmc->add_option("--pattern", pm.pattern, "N:M pattern")->capture_default_str();
  pmc->add_option("--score", pm.score, "importance score")->capture_default_str()->check(
      CLI::IsMember({"magnitude", "wanda", "ria"}));
  pmc->add_option("--permute", pm.method, "method (none, random, channel-swap, ria)")->capture_default_str()->check(
      CLI::IsMember({"none", "random", "channel-swap", "ria"}));
  pmc->add_option("--seed", pm.seed, "seed (random, channel-swap escapes)")->capture_default_str();
  pmc->add_option("--sweeps", pm.sweeps, "channel-swap sweeps / ria rounds at most")->capture_default_str();
  pmc->add_option("--escapes", pm.escapes, "channel-swap random escapes")->capture_default_str();
  pmc->add_option("--threads", pm.threads, "CPU threads (0 = OpenMP default)")->capture_default_str();
  bool pm_json = true;
  pmc->add_flag("--json", pm_json, "print JSON (the only output format of this command)");

  PruneCli pr;
  auto* pc = app.add_subcommand("prune", "Prune a checkpoint to N:M with one or more permutation methods and evaluate");
  pc->add_option("--checkpoint", pr.checkpoint, "dense checkpoint folder or file")->required();
  pc->add_option("--pattern", pr.pattern, "N:M pattern (M must divide every pruned layer's input channels)")->capture_default_str();
  pc->add_option("--score", pr.score, "importance score")->capture_default_str()->check(CLI::IsMember({"magnitude", "wanda", "ria"}));
  pc->add_option("--permute", pr.methods,
                 "permutation methods, comma separated: none, random, channel-swap, ria, permllm, learned")
      ->delimiter(',')->capture_default_str()
      ->check(CLI::IsMember({"none", "random", "channel-swap", "ria", "permllm", "learned"}));
  pc->add_option("--seed", pr.seed, "seed of the first run")->capture_default_str();
  pc->add_option("--seeds", pr.seeds, "runs with seeds seed, seed+1, ... for methods with randomness")
      ->capture_default_str()->check(CLI::PositiveNumber);
  pc->add_option("--out", pr.out, "save each pruned checkpoint and its permutations.safetensors in OUT/METHOD[-seedS]");
  pc->add_option("--report", pr.report, "write the JSON report here (rewritten after every run)");
  pc->add_option("--calib-batches", pr.calib.batches, "calibration forward passes")->capture_default_str()->check(CLI::PositiveNumber);
  pc->add_option("--calib-batch", pr.calib.batch, "images or token windows per calibration pass")->capture_default_str()->check(CLI::PositiveNumber);
  pc->add_option("--eval-windows", pr.eval_windows, "llama: validation windows to evaluate (0 = all)")->capture_default_str();
  pc->add_option("--steps", pr.steps, "learned/permllm: training steps (default 300; per block in block mode)");
  pc->add_option("--lr", pr.lr, "learned/permllm: AdamW learning rate of the costs (default 0.1 / 1e-3)");
  pc->add_option("--groups", pr.groups, "learned: permutation groups per site (default 4)");
  pc->add_option("--sinkhorn-iters", pr.iters, "learned/permllm: Sinkhorn iterations (default 20 / 5)");
  pc->add_option("--learn-batch", pr.batch, "learned/permllm: images or token windows per step (default 128 / 16)");
  pc->add_option("--alpha", pr.alpha, "learned: weight of the Smooth-L1 distillation (default 1e-5)");
  pc->add_option("--eps-start", pr.eps_start, "learned/permllm: first Sinkhorn epsilon (default 1)");
  pc->add_option("--eps-end", pr.eps_end, "learned/permllm: last Sinkhorn epsilon (default 0.05 / 0.1)");
  pc->add_option("--warm-start", pr.warm_start, "learned: start from this method's permutation (per group)")
      ->capture_default_str()->check(CLI::IsMember({"none", "random", "channel-swap", "ria"}));
  pc->add_option("--sweeps", pr.sweeps, "channel-swap sweeps / ria rounds at most")->capture_default_str();
  pc->add_option("--escapes", pr.escapes, "channel-swap random escapes")->capture_default_str();
  pc->add_option("--threads", pr.threads, "CPU threads (0 = OpenMP default)")->capture_default_str();
  add_data_options(pc, pr.data);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "error: %s\nRun with --help for usage.\n", e.what());
    return 2;
  }
  try {
    if (d->parsed()) return run_demo(demo);
    if (t->parsed()) return run_train(tr);
    if (e->parsed()) return run_eval(ev);
    if (pmc->parsed()) return run_permute_matrix(pm);
    if (cc->parsed()) return run_calibrate(cal);
    if (pc->parsed()) return run_prune(pr);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nerror: %s\n", e.what());
    return 1;
  }
  return 0;
}

// nmperm command-line tool.
//   nmperm train  train a ViT (Fashion-MNIST) or a Llama (KJV bytes or a token file)
//   nmperm eval   evaluate any ViT / Llama checkpoint (ours or exported by Hugging Face)
//   nmperm calibrate       activation norms of every linear layer over calibration data
//   nmperm permute-matrix  search an N:M channel permutation for one weight matrix
//   nmperm prune  prune a checkpoint to N:M with one or more permutation methods
//   nmperm demo   the main job: embedded models, every permutation method, a report folder
// Exit codes: 0 success, 1 runtime error (bad file, bad data, ...), 2 usage error.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <set>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>

#include "autograd/ops.h"
#include "core/storage.h"
#include "kernels/runtime.h"
#include <filesystem>
#include <fstream>

#include "models/calibrate.h"
#include "models/checkpoint.h"
#include "models/data.h"
#include "models/optim.h"
#include "models/train.h"
#include "permute/baselines.h"
#include "permute/blockwise.h"
#include "permute/compare.h"
#include "tools/cli.h"

using namespace nmperm;
using namespace nmperm::cli;

namespace {

// --device: "cpu" or "cuda" (a clear error when CUDA is asked for and absent).
Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::CPU;
  NMPERM_CHECK(name == "cuda", "--device must be cpu or cuda, got '{}'", name);
#ifdef NMPERM_WITH_CUDA
  NMPERM_CHECK(cuda_available(), "--device cuda: no CUDA device is available");
#else
  NMPERM_FAIL("--device cuda: this build has no CUDA (configure it where nvcc is installed)");
#endif
  return Device::CUDA;
}

std::vector<std::string> with_auto(std::vector<std::string> choices) {
  choices.insert(choices.begin(), "auto");
  return choices;
}

std::string device_description(Device d) {
  return d == Device::CUDA ? "GPU " + cuda_device_name()
                           : fmt::format("{} CPU threads (OpenBLAS {})", kernels::num_threads(), kernels::blas_core());
}

void add_device_option(CLI::App* c, std::string& device) {
  c->add_option("--device", device, "cpu or cuda")->capture_default_str()->check(CLI::IsMember({"cpu", "cuda"}));
}

void add_precision_option(CLI::App* c, std::string& precision, const char* what) {
  c->add_option("--precision", precision,
                fmt::format("f32, or bf16 / f16: linear layers multiply in 16 bits with f32 accumulation ({}); "
                            "norms, softmax, attention and losses stay f32. bf16 runs on AMX / AVX512-BF16 through "
                            "oneDNN and on CUDA tensor cores; f16 is widened to f32 on CPUs",
                            what))
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16", "f16"}));
}

// A real checkpoint's context (131,072 tokens for Llama-3.2) makes windows nobody evaluates in.
void warn_long_windows(const Model& m, const TrainData& d) {
  if (m.network->data_kind() == DataKind::Tokens && d.tokens.seqlen == 0 && context_of(m, d) > 8192)
    warn(fmt::format("windows of {} tokens (the model's max_position_embeddings); the field evaluates with --seqlen "
                     "2048 (or 4096)", context_of(m, d)));
}

struct TrainCli {
  TrainConfig cfg;
  DataOptions data;
  std::string model_config, init, device = "cpu";
  bool resume = false;
  int threads = 0;
};

int run_train(TrainCli& o) {
  if (o.threads > 0) kernels::set_num_threads(o.threads);
  TrainConfig& cfg = o.cfg;
  NMPERM_CHECK(find_architecture(cfg.arch), "--arch must be {}, got '{}'", fmt::join(architecture_names(), " or "),
               cfg.arch);
  Device device = parse_device(o.device);
  NMPERM_CHECK(o.data.text.empty() && o.data.calib.empty(),
               "train reads token files (--data) or the KJV default; --text / --calib are for eval, calibrate, prune");
  TrainData data = load_data(architecture(cfg.arch).data, o.data, true);
  Model model;
  if (!o.init.empty()) {
    model = load_checkpoint(o.init);
    NMPERM_CHECK(model.arch() == cfg.arch, "--init checkpoint is a {} model, --arch says {}", model.arch(), cfg.arch);
  } else {
    nlohmann::json mc = nlohmann::json::object();
    if (!o.model_config.empty()) {
      std::ifstream f(o.model_config);
      NMPERM_CHECK(f, "cannot open --model-config '{}'", o.model_config);
      mc = nlohmann::json::parse(f, nullptr, false);
      NMPERM_CHECK(!mc.is_discarded(), "--model-config '{}' is not valid JSON", o.model_config);
    }
    model = fresh_model(cfg.arch, mc, data, cfg.seed);
  }
  model.to(device);
  std::printf("nmperm train: %s, %lld parameters, %s; %lld steps of batch %lld on %s\n", model.arch().c_str(),
              (long long)model.num_parameters(),
              model.network->takes_images() ? fmt::format("{} training images", data.train_images.size()).c_str()
                                : data.tokens.description.c_str(),
              (long long)cfg.steps, (long long)cfg.batch,
              (device_description(model.device()) + ", precision " + cfg.precision).c_str());
  auto t0 = std::chrono::steady_clock::now();
  EvalResult r = train(model, cfg, data, o.resume);
  std::printf("done in %.1fs: %s\ncheckpoint: %s\n", seconds_since(t0), r.to_json(model.arch()).dump().c_str(),
              cfg.out_dir.c_str());
  return 0;
}

// A decoder checkpoint is opened without reading its weights (its files are checked
// now); a ViT is small and loaded whole.
Model probe_checkpoint(const std::string& checkpoint, std::optional<CheckpointFiles>& files) {
  CheckpointFiles f = CheckpointFiles::open(checkpoint);
  if (!architecture_of(f.config, fmt::format("checkpoint '{}'", checkpoint)).block_by_block)
    return load_checkpoint(checkpoint);
  Model m = model_shell(f);
  files.emplace(std::move(f));
  return m;
}

struct EvalCli {
  std::string checkpoint, device = "cpu", pipeline = "auto", precision = "f32";
  DataOptions data;
  int64_t windows = 0;
  int threads = 0;
  bool json = false;
};

int run_eval(EvalCli& o) {
  if (o.threads > 0) kernels::set_num_threads(o.threads);
  LinearPrecision precision(precision_dtype(o.precision));
  Device device = parse_device(o.device);
  std::optional<CheckpointFiles> files;
  Model model = probe_checkpoint(o.checkpoint, files);
  NMPERM_CHECK(!model.network->takes_images() || o.windows == 0,
               "--windows applies to language models; the model is a ViT");
  TrainData data = load_data(model.network->data_kind(), o.data, false, &model);
  const bool tokens = model.network->data_kind() == DataKind::Tokens;
  const bool by_block = architecture(model.arch()).block_by_block;
  warn_long_windows(model, data);
  // A decoder model is read whole when it fits where it runs, else one block at a time.
  if (o.pipeline == "auto" && by_block) {
    std::string why;
    o.pipeline = auto_eval_pipeline(model, data, o.windows, device, why);
    std::fprintf(stderr, "eval: pipeline %s (%s)\n",
                 o.pipeline == "whole"    ? (device == Device::CUDA ? "whole, the model on the GPU" : "whole")
                 : device == Device::CUDA ? "block, each block moved to the GPU as it runs"
                                          : "block",
                 why.c_str());
  }
  if (o.pipeline == "auto") o.pipeline = "whole";
  NMPERM_CHECK(o.pipeline == "whole" || by_block, "--pipeline block is for decoder models (llama, mistral, qwen2)");
  if (o.pipeline == "whole" && files) {
    files.reset();
    model = load_checkpoint(o.checkpoint);
  }
  model.to(device);
  if (o.pipeline == "whole" && is_half(linear_precision()))  // the linear weights in 16 bits: half their memory
    model.store_linear_weights(linear_precision());
  auto t0 = std::chrono::steady_clock::now();
  EvalResult r = o.pipeline == "block" ? evaluate_blockwise(o.checkpoint, data, o.windows, Split::Test, device)
                                       : evaluate(model, data, o.windows);
  nlohmann::json j = r.to_json(model.arch());
  j["checkpoint"] = o.checkpoint;
  j["arch"] = model.arch();
  j["seconds"] = seconds_since(t0);
  j["precision"] = o.precision;
  bool bytes = tokens && (o.data.data.empty() || o.data.data == "kjv") && o.data.val.empty() && o.data.text.empty();
  if (bytes) j["bits_per_byte"] = r.loss / std::log(2.0);
  if (tokens) {
    j["perplexity"] = std::exp(r.loss);
    j["seqlen"] = context_of(model, data);
    j["data"] = data.tokens.description;
  }
  if (o.json) {
    std::printf("%s\n", j.dump().c_str());
  } else if (!tokens) {
    std::printf("%s: test accuracy %.4f, test loss %.4f (%lld images, %s)\n", o.checkpoint.c_str(), r.accuracy, r.loss,
                (long long)r.count, o.precision.c_str());
  } else {
    std::printf("%s on %s:\n  perplexity %.4f, loss %.4f nats, %.4f bits per %s; %lld windows of %lld tokens, %lld "
                "tokens predicted (%s)\n",
                o.checkpoint.c_str(), data.tokens.description.c_str(), std::exp(r.loss), r.loss,
                r.loss / std::log(2.0), bytes ? "byte" : "token", (long long)r.windows,
                (long long)context_of(model, data), (long long)r.count, o.precision.c_str());
  }
  return 0;
}

// Learned-method settings given on the command line (the others keep learn_defaults).
struct LearnCli {
  std::optional<int64_t> steps, groups, iters, batch, holdout;
  std::optional<double> lr, alpha, eps_start, eps_end;
  std::optional<std::string> objective;
  std::vector<std::string> sets;  // KEY=VALUE of any LearnOptions key
  void apply(nlohmann::json& learn) const {
    auto set = [&](const char* key, const auto& v) {
      if (v) learn[key] = *v;
    };
    set("steps", steps), set("groups", groups), set("sinkhorn_iters", iters), set("batch", batch);
    set("holdout", holdout);
    set("lr", lr), set("alpha", alpha), set("eps_start", eps_start), set("eps_end", eps_end);
    set("objective", objective);
    for (const std::string& kv : sets) {
      auto eq = kv.find('=');
      NMPERM_CHECK(eq != std::string::npos && eq > 0, "--learn-set wants KEY=VALUE, got '{}'", kv);
      std::string value = kv.substr(eq + 1);
      nlohmann::json v = nlohmann::json::parse(value, nullptr, false);  // a number, true/false, or a string
      learn[kv.substr(0, eq)] = v.is_discarded() ? nlohmann::json(value) : v;
    }
  }
};

// with_model: the options that need a model and data (batch, held-out set, objective, alpha).
void add_learn_options(CLI::App* c, LearnCli& l, bool with_model) {
  c->add_option("--steps", l.steps, "learned/permllm: training steps (default 300; per block in block mode)");
  c->add_option("--lr", l.lr, "learned/permllm: AdamW learning rate of the costs (default 0.1 / 1e-3)");
  c->add_option("--groups", l.groups, "learned: permutation groups per site (default 4)");
  c->add_option("--sinkhorn-iters", l.iters, "learned/permllm: Sinkhorn iterations (default 20 / 5)");
  c->add_option("--eps-start", l.eps_start, "learned/permllm: first Sinkhorn epsilon (default 1)");
  c->add_option("--eps-end", l.eps_end, "learned/permllm: last Sinkhorn epsilon (default 0.05 / 0.1)");
  c->add_option("--learn-set", l.sets,
                "learned/permllm: KEY=VALUE for any learning option of the report's 'learn.options' (e.g. "
                "gradient=mask, init_scale=2, mask_temperature=0.5); unknown keys are an error");
  if (!with_model) return;
  c->add_option("--learn-batch", l.batch, "learned/permllm: images or token windows per step (default 128 / 16)");
  c->add_option("--holdout", l.holdout,
                "learned/permllm: training images / token windows held out to pick the best permutation "
                "(default 1024 / 128; block by block: calibration windows, default a quarter of them)")
      ->check(CLI::PositiveNumber);
  c->add_option("--objective", l.objective,
                "learned: 'task' (end to end: cross-entropy + alpha * relative squared error of block outputs, "
                "default), 'block' (block by block: Smooth-L1 of each block's output on its input, the dense one or "
                "with --pipeline block the calibration convention's), "
                "'layer-cosine' (1 - cos of each layer's output) or 'output-cosine' (1 - cos of the last block's "
                "output, PermLLM's default)")
      ->check(CLI::IsMember({"task", "block", "layer-cosine", "output-cosine"}));
  c->add_option("--alpha", l.alpha,
                "learned: weight of the distillation term, the mean over blocks of |pruned - dense|^2 / |dense|^2 "
                "of the block outputs (default 1)");
}

// Method options given for methods that do not run are an error, not silently dropped.
void refuse_unused(const std::set<std::string>& given, const std::vector<std::string>& methods) {
  auto runs = [&](std::initializer_list<const char*> ms) {
    for (const char* m : ms)
      if (std::find(methods.begin(), methods.end(), m) != methods.end()) return true;
    return false;
  };
  auto check = [&](std::initializer_list<const char*> options, std::initializer_list<const char*> users,
                   const char* who) {
    if (runs(users)) return;
    for (const char* opt : options)
      NMPERM_CHECK(!given.count(opt), "{} is not used: it applies to {}, which --permute does not run", opt, who);
  };
  check({"--steps", "--lr", "--sinkhorn-iters", "--eps-start", "--eps-end", "--learn-set", "--learn-batch", "--holdout"},
        {"learned", "permllm"}, "learned / permllm");
  check({"--groups", "--objective", "--alpha", "--warm-start"}, {"learned"}, "learned");
  check({"--sweeps"}, {"channel-swap", "ria"}, "channel-swap / ria");
  check({"--escapes", "--window"}, {"channel-swap"}, "channel-swap");
}

struct PermuteMatrixCli {
  std::string weights, tensor, act_norms, act_tensor, pattern = "2:4", score = "wanda", method = "ria";
  std::string warm_start = "none";
  uint64_t seed = 0;
  int64_t sweeps = 100, escapes = 20;
  LearnCli learn;
  bool progress = false;
  int threads = 0;
  std::set<std::string> given;
};

// One matrix: the kept-score fraction for the identity, for the method and for the
// unstructured bound, the permutation and the search time, as one JSON object.
int run_permute_matrix(PermuteMatrixCli& o) {
  if (o.threads > 0) kernels::set_num_threads(o.threads);
  refuse_unused(o.given, {o.method});
  NMPERM_CHECK(!o.given.count("--act-norms-tensor") || !o.act_norms.empty(), "--act-norms-tensor needs --act-norms");
  const bool learns = permute_method(o.method).learned;
  NMPERM_CHECK(!o.given.count("--progress") || learns, "--progress applies to learned / permllm");
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
  SearchOptions search{.seed = o.seed, .max_sweeps = o.sweeps, .escapes = o.escapes};
  auto t0 = std::chrono::steady_clock::now();
  nlohmann::json learned;
  Perm p;
  if (learns) {
    LearnOptions lo = learn_defaults(o.method);
    nlohmann::json overrides = nlohmann::json::object();
    o.learn.apply(overrides);
    merge_learn_options(lo, overrides);
    lo.seed = o.seed;
    lo.progress = o.progress;
    Perm warm = o.method == "learned" && o.warm_start != "none" ? search_permutation(o.warm_start, s, pat, search) : Perm();
    LearnResult r = learn_matrix_permutation(o.tensor, *w, norms, s, pat, lo, warm);
    p = r.perms.at(o.tensor);
    learned = {{"options", lo.to_json()},
               {"warm_start", o.method == "learned" ? o.warm_start : "none"},
               {"objective_start", r.start_holdout},
               {"objective_best", r.best_holdout},
               {"best_step", r.best_step}};
  } else {
    p = search_permutation(o.method, s, pat, search);
  }
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
  if (!learned.is_null()) j["learn"] = learned;
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

struct CalibrateCli {
  std::string checkpoint, out, precision = "f32";
  DataOptions data;
  CalibrationOptions opt;
  int64_t nsamples = 0;
  int threads = 0;
};

// --nsamples N: N calibration windows (or images), in passes of at most the --calib-batch
// size that divide N. Without it, a --calib text gets the field's 128 windows unless the
// passes were sized (batches_option, batch_option: the subcommand's names for them).
void apply_nsamples(int64_t nsamples, const DataOptions& d, const char* batches_option, const char* batch_option,
                    CalibrationOptions& c) {
  if (nsamples <= 0 && !d.calib.empty() && !d.given.count(batches_option) && !d.given.count(batch_option))
    nsamples = 128;
  if (nsamples <= 0) return;
  int64_t b = std::min(c.batch, nsamples);
  while (nsamples % b) --b;
  c.batch = b;
  c.batches = nsamples / b;
}

int run_calibrate(CalibrateCli& o) {
  if (o.threads > 0) kernels::set_num_threads(o.threads);
  LinearPrecision precision(precision_dtype(o.precision));
  std::optional<CheckpointFiles> files;
  Model model = probe_checkpoint(o.checkpoint, files);
  apply_nsamples(o.nsamples, o.data, "--batches", "--batch", o.opt);
  TrainData data = load_data(model.network->data_kind(), o.data, true, &model);
  auto t0 = std::chrono::steady_clock::now();
  // Decoder models one block at a time (the same sums in the same order: the same norms).
  auto norms = files ? activation_norms_blockwise(o.checkpoint, data, o.opt) : activation_norms(model, data, o.opt);
  std::vector<std::pair<std::string, Tensor>> tensors(norms.begin(), norms.end());
  save_safetensors(o.out, tensors,
                   {{"checkpoint", o.checkpoint},
                    {"batches", std::to_string(o.opt.batches)},
                    {"batch", std::to_string(o.opt.batch)}});
  std::printf("activation norms of %zu linear layers from %lld %s in %.1fs -> %s\n", tensors.size(),
              (long long)(o.opt.batches * o.opt.batch), model.network->takes_images() ? "images" : "token windows",
              seconds_since(t0), o.out.c_str());
  return 0;
}

struct PruneCli {
  int64_t nsamples = 0;
  std::string checkpoint, report, device = "cpu", pipeline = "auto", calibration = "auto";
  CompareOptions cmp;
  DataOptions data;
  int threads = 0;
  LearnCli learn;
};

int run_prune(PruneCli& o) {
  if (o.threads > 0) kernels::set_num_threads(o.threads);
  o.cmp.device = parse_device(o.device);
  refuse_unused(o.data.given, o.cmp.methods);
  NMPERM_CHECK(!o.cmp.out_dir.empty() || !o.data.given.count("--layout"), "--layout applies to the --out checkpoints");
  std::optional<CheckpointFiles> files;
  Model probe = probe_checkpoint(o.checkpoint, files);
  apply_nsamples(o.nsamples, o.data, "--calib-batches", "--calib-batch", o.cmp.calib);
  TrainData data = load_data(probe.network->data_kind(), o.data, true, &probe);
  warn_long_windows(probe, data);
  o.learn.apply(o.cmp.learn);
  {
    LearnOptions check;  // unknown learning options fail now, not after the dense evaluation
    merge_learn_options(check, o.cmp.learn);
  }
  // The pipeline: block by block for decoder models pruned by search methods; the whole
  // model where a learned method runs (or for a ViT): its default objective trains against
  // the whole model. `--pipeline block` learns block by block (objective block or
  // layer-cosine).
  bool learned = false;
  for (const std::string& m : o.cmp.methods) learned |= permute_method(m).learned;
  const bool by_block = architecture(probe.arch()).block_by_block;
  const bool tokens = probe.network->data_kind() == DataKind::Tokens;
  if (o.pipeline == "auto") o.pipeline = by_block && !learned ? "block" : "whole";
  NMPERM_CHECK(o.pipeline == "whole" || by_block, "--pipeline block is for decoder models (llama, mistral, qwen2)");
  if (o.calibration == "auto") o.calibration = o.pipeline == "block" ? "sequential" : "dense";
  NMPERM_CHECK(o.calibration == "dense" || o.pipeline == "block",
               "--calibration sequential runs block by block (--pipeline block): {}",
               "use --pipeline block");
  NMPERM_CHECK(!o.cmp.resume || o.pipeline == "block", "--resume applies to the block pipeline");
  o.cmp.pipeline = o.pipeline;
  o.cmp.calibration = o.calibration;
  if (by_block && o.pipeline == "whole") {
    double need = whole_model_memory(probe, data, o.cmp), avail = available_memory(o.cmp.device);
    NMPERM_CHECK(need <= avail,
                 "the whole-model pipeline holds this model twice in f32 (the dense model and each run's copy): about "
                 "{:.1f} GiB, and {:.1f} GiB is available{}{}",
                 need / (1 << 30), avail / (1 << 30), o.cmp.device == Device::CUDA ? " on the GPU" : "",
                 learned ? "; the learned methods learn block by block with --pipeline block --objective block"
                         : "; use --pipeline block");
  }
  std::fprintf(stderr, "nmperm prune: %s (%s, %.0f parameters), %s, %s scores; models on %s; %s\n",
               o.checkpoint.c_str(), probe.arch().c_str(), probe.network->parameter_count(), o.cmp.pattern.c_str(),
               o.cmp.score.c_str(), (device_description(o.cmp.device) + ", precision " + o.cmp.precision).c_str(),
               o.pipeline == "block" ? fmt::format("block by block, {} calibration", o.calibration).c_str()
                                     : "whole model, dense calibration");
  const int64_t window = context_of(probe, data);
  probe = Model();  // compare_methods loads its own copies: do not hold a third one
  files.reset();
  nlohmann::json report = compare_methods(o.checkpoint, data, o.cmp, [&](const nlohmann::json& r) {
    if (!o.report.empty()) write_file_atomic(o.report, r.dump(2) + "\n");
  });
  if (report.contains("dense_val"))
    std::printf("validation split (for choosing settings):\n%s\n", methods_table(report, false, Split::Validation).c_str());
  std::string about;
  if (tokens)
    about = fmt::format(" ({}; {} windows of {} tokens)", data.tokens.description,
                        report["dense"].value("windows", int64_t(0)), window);
  std::printf("test split%s:\n%s", about.c_str(), methods_table(report, false, Split::Test).c_str());
  return 0;
}

// need_train: the subcommand calibrates or trains (--calib, --calib-seed are offered).
void add_data_options(CLI::App* c, DataOptions& d, bool need_train) {
  c->add_option("--data", d.data,
                need_train ? "vit: folder with Fashion-MNIST IDX files (default: Debian's dataset-fashion-mnist); "
                             "llama: 'kjv' (default, the King James Bible as bytes) or a token file (llm.c .bin, .u16, "
                             ".u32)"
                           : "vit: folder with Fashion-MNIST IDX files (its t10k test files are evaluated); llama: "
                             "'kjv' (default: its test split) or a token file, evaluated whole");
  c->add_option("--val", d.val,
                need_train ? "llama: evaluation (test) token file (default: the last 5% of --data)"
                           : "llama: the token file to evaluate, whole (the same as --data FILE)");
  c->add_option("--text", d.text,
                "llama: a text corpus to evaluate (.txt as WikiText-2's wiki.test.raw, .jsonl/.json with a \"text\" "
                "field as C4, optionally .gz), tokenized with the checkpoint's tokenizer (cached), joined with "
                "\"\\n\\n\"; perplexity over non-overlapping --seqlen windows, the remainder dropped");
  c->add_option("--images", d.images,
                "vit: an image folder to evaluate (DIR/<class>/*.jpg|png, ImageNet-style), decoded and resized as the "
                "checkpoint's preprocessor_config.json says (Pillow's resampling)");
  if (need_train)
    c->add_option("--calib-images", d.calib_images, "vit, with --images: the calibration image folder");
  c->add_option("--classes", d.classes,
                "vit, with --images: class names, one per line, line i = label i (default: the checkpoint's id2label, "
                "else the sorted folder names)");
  c->add_option("--pillow", d.pillow,
                "vit, with --images: resize as this Pillow release does, 13 (and later) or 12 (and earlier, e.g. "
                "Debian's 9.4): they order the two resampling passes differently, which moves some pixels by one "
                "level; use the Pillow your reference figures came from")
      ->check(CLI::IsMember({12, 13}))
      ->capture_default_str();
  if (need_train)
    c->add_option("--calib", d.calib,
                  "llama, with --text: the calibration text (same formats); --nsamples windows of --seqlen tokens at "
                  "random starts (--calib-seed)");
  c->add_option("--seqlen", d.seqlen,
                "llama: window length of the field's protocol (default 2048 with --text, capped at the model's "
                "context); with a token file or KJV it switches to that protocol too")
      ->check(CLI::PositiveNumber);
  if (need_train)
    c->add_option("--calib-seed", d.calib_seed, "llama, field protocol: seed of the calibration windows' starts")
        ->capture_default_str();
  if (need_train) c->add_option("--val-images", d.val_images,
                "vit: the last N training images are held out as the validation split, never trained on "
                "(default: 5000, at most 1/12 of the images)");
  c->add_option("--token-format", d.token_format, "auto, llmc, u16 or u32")->capture_default_str();
  c->add_option("--cache", d.cache,
                "cache folder for the exported KJV text (default: $NMPERM_CACHE, $XDG_CACHE_HOME/nmperm or "
                "~/.cache/nmperm)");
}

}  // namespace

int main(int argc, char** argv) {
  kernels::select_blas_kernels(argv);
  CLI::App app{"nmperm: tensors, autodiff, transformers and learned channel permutations for N:M sparsity"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "nmperm " NMPERM_VERSION);
  app.footer("Exit codes: 0 success, 1 runtime error, 2 usage error. Run 'nmperm SUBCOMMAND --help' for details.");

  DemoCli demo;
  auto* d = app.add_subcommand(
      "demo",
      "The main job: train (or reuse cached) embedded ViT and Llama, prune them to 2:4 with Wanda scores and every "
      "permutation method, evaluate, and write a report folder (report.json, report.md, plots)");
  d->add_flag("--quick", demo.quick, "reduced run (under 5 minutes on 2 cores): 1 seed, short learning, subsets");
  d->add_option("--out", demo.out, "report folder (also holds the pruned checkpoints)")->capture_default_str();
  d->add_option("--models", demo.models, "comma-separated: vit, llama")->capture_default_str();
  d->add_option("--seeds", demo.seeds, "seeds per method with randomness (default 3, or 1 with --quick)");
  d->add_option("--seed", demo.seed, "first seed")->capture_default_str();
  d->add_option("--config", demo.config, "rerun the run recorded in this report.json (same options and seeds)");
  d->add_option("--vit-data", demo.vit_data.data, "Fashion-MNIST folder (default: Debian's dataset-fashion-mnist)");
  d->add_option("--cache", demo.llama_data.cache,
                "cache folder for trained models and the exported KJV text (default: $NMPERM_CACHE, "
                "$XDG_CACHE_HOME/nmperm or ~/.cache/nmperm)");
  d->add_option("--threads", demo.threads, "CPU threads (0 = OpenMP default)")->capture_default_str();

  TrainCli tr;
  auto* t = app.add_subcommand("train", "Train a ViT or Llama (fresh, from --init, or resumed)");
  t->add_option("--arch", tr.cfg.arch, "vit or llama")->required()->check(CLI::IsMember(architecture_names()));
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
  t->add_option("--beta1", tr.cfg.beta1, "AdamW first-moment decay")->capture_default_str()->check(CLI::Range(0.0, 0.999999));
  t->add_option("--beta2", tr.cfg.beta2, "AdamW second-moment decay")->capture_default_str()->check(CLI::Range(0.0, 0.999999));
  t->add_option("--label-smoothing", tr.cfg.label_smoothing, "label smoothing of the training loss (0 = off)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.999));
  t->add_option("--clip", tr.cfg.clip, "global gradient-norm clip (0 = off)")->capture_default_str();
  t->add_option("--eval-every", tr.cfg.eval_every, "steps between evaluations")->capture_default_str()->check(CLI::PositiveNumber);
  t->add_option("--ckpt-every", tr.cfg.ckpt_every, "steps between checkpoints")->capture_default_str()->check(CLI::PositiveNumber);
  t->add_option("--eval-windows", tr.cfg.eval_windows, "llama: windows per evaluation of the watched split (0 = all)")->capture_default_str();
  t->add_option("--seed", tr.cfg.seed, "seed for initialisation and data order")->capture_default_str();
  t->add_option("--threads", tr.threads, "CPU threads (0 = OpenMP default)")->capture_default_str();
  add_device_option(t, tr.device);
  add_precision_option(t, tr.cfg.precision, "mixed-precision training: parameters, gradients and AdamW stay f32");
  add_data_options(t, tr.data, true);

  EvalCli ev;
  auto* e = app.add_subcommand("eval", "Evaluate a checkpoint: ViT test accuracy, or Llama loss/perplexity/bits per byte");
  e->add_option("--checkpoint", ev.checkpoint, "checkpoint folder or .safetensors file (config.json beside it)")->required();
  e->add_option("--windows", ev.windows, "llama: at most this many validation windows (0 = all)")->capture_default_str();
  e->add_option("--threads", ev.threads, "CPU threads (0 = OpenMP default)")->capture_default_str();
  add_device_option(e, ev.device);
  e->add_flag("--json", ev.json, "print one JSON object");
  e->add_option("--pipeline", ev.pipeline,
                "llama: 'whole' (the model in memory, f32) or 'block' (one block in memory at a time, read from the "
                "mapped shards: any size); auto: whole when it fits in the available memory (and, with --device cuda, in "
                "the GPU's free memory), printed with the figures")
      ->capture_default_str()->check(CLI::IsMember({"auto", "whole", "block"}));
  add_precision_option(e, ev.precision, "inference");
  add_data_options(e, ev.data, false);

  CalibrateCli cal;
  auto* cc = app.add_subcommand("calibrate", "Per-input-channel activation norms of every linear layer (for Wanda/RIA)");
  cc->add_option("--checkpoint", cal.checkpoint, "checkpoint folder or file")->required();
  cc->add_option("--out", cal.out, "output safetensors file (one (in) vector per weight name)")->required();
  cc->add_option("--batches", cal.opt.batches, "forward passes")->capture_default_str()->check(CLI::PositiveNumber);
  cc->add_option("--batch", cal.opt.batch, "images or token windows per pass")->capture_default_str()->check(CLI::PositiveNumber);
  cc->add_option("--threads", cal.threads, "CPU threads (0 = OpenMP default)")->capture_default_str();
  cc->add_option("--nsamples", cal.nsamples, "calibration windows (llama) or images (vit), instead of --batches x --batch")
      ->check(CLI::PositiveNumber)->excludes("--batches");
  add_precision_option(cc, cal.precision, "the calibration forward passes");
  add_data_options(cc, cal.data, true);

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
  pmc->add_option("--permute", pm.method,
                  "method; the learned two optimise the expected output error (learned) or output cosine (permllm) "
                  "for uncorrelated inputs with the --act-norms norms:" + permute_methods_help())
      ->capture_default_str()
      ->check(CLI::IsMember(permute_method_names()));
  pmc->add_option("--seed", pm.seed, "seed (random, channel-swap escapes, learned initial noise)")->capture_default_str();
  pmc->add_option("--warm-start", pm.warm_start, "learned: start from this search method's permutation (per group)")
      ->capture_default_str()->check(CLI::IsMember(permute_method_names(true)));
  add_learn_options(pmc, pm.learn, false);
  pmc->add_flag("--progress", pm.progress, "learned/permllm: show progress on stderr");
  pmc->add_option("--sweeps", pm.sweeps, "channel-swap sweeps / ria rounds at most")->capture_default_str();
  pmc->add_option("--escapes", pm.escapes, "channel-swap random escapes")->capture_default_str();
  pmc->add_option("--threads", pm.threads, "CPU threads (0 = OpenMP default)")->capture_default_str();
  bool pm_json = true;
  pmc->add_flag("--json", pm_json, "print JSON (the only output format of this command)");

  PruneCli pr;
  auto* pc = app.add_subcommand("prune", "Prune a checkpoint to N:M with one or more permutation methods and evaluate");
  pc->add_option("--checkpoint", pr.checkpoint, "dense checkpoint folder or file")->required();
  pc->add_option("--pattern", pr.cmp.pattern, "N:M pattern (M must divide every pruned layer's input channels)")->capture_default_str();
  pc->add_option("--score", pr.cmp.score, "importance score")->capture_default_str()->check(CLI::IsMember({"magnitude", "wanda", "ria"}));
  pc->add_option("--permute", pr.cmp.methods, "permutation methods, comma separated:" + permute_methods_help())
      ->delimiter(',')->capture_default_str()
      ->check(CLI::IsMember(permute_method_names()));
  pc->add_option("--seed", pr.cmp.seed, "seed of the first run")->capture_default_str();
  pc->add_option("--seeds", pr.cmp.seeds, "runs with seeds seed, seed+1, ... for methods with randomness")
      ->capture_default_str()->check(CLI::PositiveNumber);
  pc->add_option("--out", pr.cmp.out_dir,
                 "save each pruned checkpoint and its permutations.safetensors in OUT/METHOD[-seedS], in the source's "
                 "dtype and sharding, with its tokenizer and generation files");
  pc->add_option("--layout", pr.cmp.layout,
                 "of the --out checkpoints: 'original' (a standard Hugging Face folder, every weight in its original "
                 "input-channel order: transformers, vLLM and lm-eval load it unchanged) or 'permuted' (the permuted "
                 "order where every run of M inputs keeps N, as 2:4 kernels want, with input_permutation tensors that "
                 "only nmperm reads)")
      ->capture_default_str()->check(CLI::IsMember({"original", "permuted"}));
  pc->add_option("--report", pr.report, "write the JSON report here (rewritten after every run)");
  pc->add_option("--calib-batches", pr.cmp.calib.batches, "calibration forward passes")->capture_default_str()->check(CLI::PositiveNumber);
  pc->add_option("--calib-batch", pr.cmp.calib.batch, "images or token windows per calibration pass")->capture_default_str()->check(CLI::PositiveNumber);
  pc->add_option("--eval-windows", pr.cmp.eval_windows, "llama: windows of each split to evaluate (0 = all)")->capture_default_str();
  add_learn_options(pc, pr.learn, true);
  pc->add_option("--warm-start", pr.cmp.warm_start,
                 "learned: start from this search method's permutation (the costs learn a refinement per group); "
                 "auto: the architecture's default (ria)")
      ->capture_default_str()->check(CLI::IsMember(with_auto(permute_method_names(true))));
  pc->add_option("--sweeps", pr.cmp.search.max_sweeps, "channel-swap sweeps / ria rounds at most")->capture_default_str();
  pc->add_option("--escapes", pr.cmp.search.escapes, "channel-swap random escapes")->capture_default_str();
  pc->add_option("--window", pr.cmp.search.window, "channel-swap: groups per window on wide layers (0 = all pairs)")
      ->capture_default_str();
  pc->add_option("--threads", pr.threads, "CPU threads (0 = OpenMP default)")->capture_default_str();
  add_device_option(pc, pr.device);
  add_precision_option(pc, pr.cmp.precision,
                       "every forward pass: calibration, learning, evaluation; scores and masks read f32 weights");
  pc->add_option("--nsamples", pr.nsamples,
                 "calibration windows (llama) or images (vit), instead of --calib-batches x --calib-batch (default "
                 "128 windows with --calib, as the field uses)")
      ->check(CLI::PositiveNumber)->excludes("--calib-batches");
  pc->add_option("--pipeline", pr.pipeline,
                 "'block': one transformer block in memory at a time, read from the mapped shards and written out as "
                 "it is pruned (decoder models, any size; a learned method learns each block against its own output: "
                 "--objective block, or --learn-set objective=layer-cosine for permllm); 'whole': the whole model in memory "
                 "twice (f32; every method and objective, ViTs). auto: block for decoder models unless a learned "
                 "method runs")
      ->capture_default_str()->check(CLI::IsMember({"auto", "whole", "block"}));
  pc->add_option("--calibration", pr.calibration,
                 "inputs each block is calibrated on: 'sequential' (the outputs of the pruned blocks before it, as "
                 "Wanda and SparseGPT run; block pipeline; a learned method learns from them too) or 'dense' (the "
                 "dense model's, one-shot). auto: sequential block by block, else dense")
      ->capture_default_str()->check(CLI::IsMember({"auto", "dense", "sequential"}));
  pc->add_flag("--resume", pr.cmp.resume,
               "block pipeline with --out: continue an interrupted run after the last block it saved (the result "
               "is bitwise the uninterrupted run's)");
  add_data_options(pc, pr.data, true);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "error: %s\nRun with --help for usage.\n", e.what());
    return 2;
  }
  // Which data options were given: the data loader refuses those its data does not use.
  for (auto [sub, given] : {std::pair{t, &tr.data.given}, {e, &ev.data.given}, {cc, &cal.data.given},
                            {pc, &pr.data.given}, {pmc, &pm.given}})
    for (const CLI::Option* opt : sub->get_options())
      if (opt->count() > 0) given->insert(opt->get_name());
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

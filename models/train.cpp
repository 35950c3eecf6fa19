#include "models/train.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/progress.h"
#include "models/optim.h"

namespace nmperm {

namespace fs = std::filesystem;
using json = nlohmann::json;

json TrainConfig::to_json() const {
  return {{"arch", arch},          {"steps", steps},
          {"batch", batch},        {"warmup", warmup},
          {"lr", lr},              {"min_lr_ratio", min_lr_ratio},
          {"weight_decay", weight_decay}, {"clip", clip},
          {"beta1", beta1},        {"beta2", beta2}, {"label_smoothing", label_smoothing},
          {"eval_every", eval_every}, {"ckpt_every", ckpt_every},
          {"keep_checkpoints", keep_checkpoints}, {"eval_windows", eval_windows},
          {"seed", seed},          {"precision", precision}};
}

TrainConfig TrainConfig::from_json(const json& j) {
  TrainConfig c;
  c.arch = j.value("arch", c.arch);
  c.steps = j.value("steps", c.steps);
  c.batch = j.value("batch", c.batch);
  c.warmup = j.value("warmup", c.warmup);
  c.lr = j.value("lr", c.lr);
  c.min_lr_ratio = j.value("min_lr_ratio", c.min_lr_ratio);
  c.weight_decay = j.value("weight_decay", c.weight_decay);
  c.clip = j.value("clip", c.clip);
  c.beta1 = j.value("beta1", c.beta1);
  c.beta2 = j.value("beta2", c.beta2);
  c.label_smoothing = j.value("label_smoothing", c.label_smoothing);
  c.eval_every = j.value("eval_every", c.eval_every);
  c.ckpt_every = j.value("ckpt_every", c.ckpt_every);
  c.keep_checkpoints = j.value("keep_checkpoints", c.keep_checkpoints);
  c.eval_windows = j.value("eval_windows", c.eval_windows);
  c.seed = j.value("seed", c.seed);
  c.precision = j.value("precision", c.precision);
  return c;
}

json EvalResult::to_json(const std::string& arch, bool with_items) const {
  const bool images = architecture(arch).takes_images();
  json j = images ? json{{"accuracy", accuracy}, {"loss", loss}, {"examples", count}}
                         : json{{"loss", loss},
                                {"perplexity", std::exp(loss)},
                                {"bits_per_token", loss / std::log(2.0)},
                                {"tokens", count},
                                {"windows", windows}};
  if (with_items) j["items"] = items;
  return j;
}

const char* split_name(Split s) { return s == Split::Test ? "test" : "validation"; }

bool has_validation(const Model& m, const TrainData& d) {
  return m.network->takes_images() ? d.val_images.size() > 0 : int64_t(d.tokens.val.size()) > context_of(m, d);
}

double lr_at(const TrainConfig& c, int64_t step) {
  if (step < c.warmup) return c.lr * double(step + 1) / double(c.warmup);
  double t = c.steps > c.warmup ? double(step - c.warmup) / double(c.steps - c.warmup) : 1.0;
  t = std::min(1.0, std::max(0.0, t));
  double min_lr = c.lr * c.min_lr_ratio;
  return min_lr + 0.5 * (c.lr - min_lr) * (1.0 + std::cos(M_PI * t));
}

int64_t context_of(const Model& m, const TrainData& d) {
  if (m.network->data_kind() != DataKind::Tokens) return 0;
  int64_t ctx = m.network->context();
  return d.tokens.seqlen > 0 ? std::min(d.tokens.seqlen, ctx) : ctx;
}

namespace {

// Rows [start, start + n) of an image set's seeded epoch order.
std::vector<int64_t> epoch_order(int64_t N, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) order[size_t(i)] = i;
  Generator g(seed * 1000003 + uint64_t(epoch) + 1);
  for (int64_t i = N - 1; i > 0; --i) std::swap(order[size_t(i)], order[size_t(g.randint(i + 1))]);
  return order;
}

// The (B, T + 1) token windows of training step `step` (pure function of seed and step).
Tensor token_windows(const std::vector<int32_t>& tokens, int64_t B, int64_t T, uint64_t seed, int64_t step) {
  int64_t span = int64_t(tokens.size()) - T - 1;
  NMPERM_CHECK(span > 0, "the token stream ({} tokens) is shorter than one window of {}", tokens.size(), T + 1);
  Tensor w = Tensor::empty({B, T + 1}, DType::I64);
  int64_t* p = w.data<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    auto r = philox4x32(seed ^ 0x5eedULL, uint64_t(step) * uint64_t(B) + uint64_t(b));
    uint64_t x = (uint64_t(r[0]) << 32) | r[1];
    int64_t start = int64_t(x % uint64_t(span + 1));
    for (int64_t t = 0; t <= T; ++t) p[b * (T + 1) + t] = tokens[size_t(start + t)];
  }
  return w;
}

Batch lm_batch(const Tensor& windows) {
  int64_t T = windows.shape(1) - 1;
  return {contiguous(narrow(windows, 1, 0, T)), contiguous(narrow(windows, 1, 1, T))};
}

// Data problems are reported before any work: a run must not train for hours and then
// find that its validation set is too short to evaluate.
void check_data(const Model& m, const TrainData& d, bool training, Split split = Split::Test) {
  if (m.network->takes_images()) {
    NMPERM_CHECK((split == Split::Test ? d.test_images : d.val_images).size() > 0, "the {} set holds no images",
                 split_name(split));
    NMPERM_CHECK(!training || d.train_images.size() > 0, "the training set holds no images");
    return;
  }
  NMPERM_CHECK(d.tokens.vocab <= m.network->vocab_size(),
               "the data uses token ids up to {} but the model's vocab is {}", d.tokens.vocab - 1,
               m.network->vocab_size());
  int64_t window = context_of(m, d) + (d.tokens.field_protocol ? 0 : 1);
  const char* what = d.tokens.field_protocol ? "--seqlen" : "the model's context + 1";
  const auto& eval = split == Split::Test ? d.tokens.test : d.tokens.val;
  NMPERM_CHECK(int64_t(eval.size()) >= window, "the {} stream ({} tokens) is shorter than one window of {} ({})",
               split_name(split), eval.size(), window, what);
  NMPERM_CHECK(!training || int64_t(d.tokens.train.size()) > window,
               "the training stream ({} tokens) is shorter than one window of {} ({})", d.tokens.train.size(), window,
               what);
}

std::string step_dir(int64_t step) { return fmt::format("step_{:07d}", step); }

void save_training_state(Model& model, AdamW& opt, const TrainConfig& cfg, int64_t step) {
  fs::path dir = fs::path(cfg.out_dir) / step_dir(step);
  try {
    save_checkpoint(model, dir.string(), {{"step", std::to_string(step)}});
    std::vector<std::pair<std::string, Tensor>> state;
    size_t i = 0;
    model.visit([&](const std::string& name, Tensor&) {
      state.emplace_back("m." + name, opt.m[i]);
      state.emplace_back("v." + name, opt.v[i]);
      ++i;
    });
    save_safetensors((dir / "trainer_state.safetensors").string(), state,
                     {{"step", std::to_string(step)}, {"train_config", cfg.to_json().dump()}});
  } catch (const Error& e) {
    std::error_code ignored;
    fs::remove_all(dir, ignored);  // a half-written step folder must not look like a checkpoint
    NMPERM_FAIL("training stopped: the checkpoint of step {} could not be saved ({}); the last good checkpoint "
                "in '{}' is kept",
                step, e.what(), cfg.out_dir);
  }
  // Publish: only now does the checkpoint become the one a resume uses.
  write_file_atomic((fs::path(cfg.out_dir) / "latest").string(), step_dir(step) + "\n");
  // Keep the newest few.
  std::vector<std::string> dirs;
  for (auto& e : fs::directory_iterator(cfg.out_dir))
    if (e.is_directory() && e.path().filename().string().starts_with("step_")) dirs.push_back(e.path().string());
  std::sort(dirs.begin(), dirs.end());
  for (size_t k = 0; k + size_t(cfg.keep_checkpoints) < dirs.size(); ++k) fs::remove_all(dirs[k]);
}

// Restores parameters, moments and the step from OUT/latest; returns the step (0 if none).
int64_t restore_training_state(Model& model, AdamW& opt, const TrainConfig& cfg) {
  fs::path latest = fs::path(cfg.out_dir) / "latest";
  if (!fs::exists(latest)) return 0;
  std::ifstream f(latest);
  std::string name;
  f >> name;
  fs::path dir = fs::path(cfg.out_dir) / name;
  Model saved = load_checkpoint(dir.string());
  NMPERM_CHECK(saved.arch() == model.arch() && saved.config_json() == model.config_json(),
               "cannot resume: the checkpoint in '{}' is for a different model configuration", dir.string());
  SafeTensors weights = load_safetensors((dir / "model.safetensors").string());
  assign_parameters(model, weights, dir.string());
  SafeTensors state = load_safetensors((dir / "trainer_state.safetensors").string());
  size_t i = 0;
  model.visit([&](const std::string& pname, Tensor&) {
    opt.m[i].copy_from(state.at("m." + pname));
    opt.v[i].copy_from(state.at("v." + pname));
    ++i;
  });
  int64_t step = std::stoll(state.metadata.at("step"));
  opt.step_count = step;
  return step;
}

}  // namespace

std::vector<int64_t> epoch_batch(int64_t N, int64_t batch, uint64_t seed, int64_t step) {
  NMPERM_CHECK(batch > 0 && N >= batch, "{} examples is fewer than one batch of {}", N, batch);
  int64_t per_epoch = N / batch, epoch = step / per_epoch, pos = step % per_epoch;
  std::vector<int64_t> order = epoch_order(N, seed, epoch);
  return std::vector<int64_t>(order.begin() + pos * batch, order.begin() + (pos + 1) * batch);
}

Batch train_batch(const Model& model, const TrainData& data, int64_t batch, uint64_t seed, int64_t step) {
  if (model.network->takes_images()) {
    int64_t N = data.train_images.size();
    NMPERM_CHECK(N >= batch, "{} training images is fewer than one batch of {}", N, batch);
    Tensor ix = from_vector(epoch_batch(N, batch, seed, step), {batch});
    Device d = model.device();
    return {model.preprocess.apply(index_select(data.train_images.images, 0, ix).to(d)),
            index_select(data.train_images.labels, 0, ix).to(d)};
  }
  return lm_batch(token_windows(data.tokens.train, batch, context_of(model, data), seed, step).to(model.device()));
}

Tensor task_loss(const Tensor& logits, const Batch& b, double label_smoothing) {
  int64_t V = logits.shape(-1);
  return cross_entropy(reshape(logits, {-1, V}), reshape(b.target, {-1}), -100, label_smoothing);
}

Tensor batch_loss(Model& model, const TrainConfig& cfg, const TrainData& data, int64_t step) {
  Batch b = train_batch(model, data, cfg.batch, cfg.seed, step);
  return task_loss(model.forward(b.input), b, cfg.label_smoothing);
}

EvalResult evaluate(Model& model, const TrainData& data, int64_t max_windows, int64_t batch, Split split) {
  NoGradGuard ng;
  EvalResult r;
  check_data(model, data, false, split);
  if (model.network->takes_images()) {
    const ImageSet& s = split == Split::Test ? data.test_images : data.val_images;
    batch = batch > 0 ? batch : 500;
    double loss_sum = 0;
    int64_t correct = 0;
    for (int64_t at = 0; at < s.size(); at += batch) {
      int64_t n = std::min(batch, s.size() - at);
      Tensor x = model.preprocess.apply(contiguous(narrow(s.images, 0, at, n)).to(model.device()));
      Tensor y = contiguous(narrow(s.labels, 0, at, n)).to(model.device());
      Tensor logits = model.forward(x);
      for (double l : cross_entropy(logits, y, -100, 0.0, Reduction::None).to(Device::CPU).to(DType::F64).to_vector<double>()) {
        r.items.push_back(l);
        loss_sum += l;
      }
      auto pred = argmax(logits, 1).to_vector<int64_t>();
      auto lab = y.to_vector<int64_t>();
      for (size_t i = 0; i < pred.size(); ++i) correct += pred[i] == lab[i];
    }
    r.count = s.size();
    r.loss = loss_sum / double(r.count);
    r.accuracy = double(correct) / double(r.count);
    return r;
  }
  for (const Batch& b : lm_eval_batches(model, data, max_windows, batch, split))
    score_lm_batch(r, model.forward(b.input.to(model.device())), b.target.to(model.device()));
  finish_lm_eval(r);
  return r;
}

int64_t lm_eval_windows(const Model& model, const TrainData& data, int64_t max_windows, Split split) {
  const auto& s = split == Split::Test ? data.tokens.test : data.tokens.val;
  const int64_t T = context_of(model, data), W = data.tokens.field_protocol ? T : T + 1;
  int64_t n = std::max<int64_t>(0, (int64_t(s.size()) - (W - T)) / T);
  return max_windows > 0 ? std::min(n, max_windows) : n;
}

std::vector<Batch> lm_eval_batches(const Model& model, const TrainData& data, int64_t max_windows, int64_t batch,
                                   Split split) {
  check_data(model, data, false, split);
  // Consecutive non-overlapping windows of the stream, every W tokens scoring W - 1
  // (W = T + 1 with stride T, or under the field's protocol W = T with stride T).
  const auto& val = split == Split::Test ? data.tokens.test : data.tokens.val;
  const bool field = data.tokens.field_protocol;
  const int64_t T = context_of(model, data), W = field ? T : T + 1;
  const int64_t windows = lm_eval_windows(model, data, max_windows, split);  // >= 1: see check_data
  batch = batch > 0 ? batch : std::max<int64_t>(1, 2048 / T);
  std::vector<Batch> out;
  for (int64_t w0 = 0; w0 < windows; w0 += batch) {
    int64_t n = std::min(batch, windows - w0);
    Tensor w = Tensor::empty({n, W}, DType::I64);
    int64_t* p = w.data<int64_t>();
    for (int64_t b = 0; b < n; ++b)
      for (int64_t t = 0; t < W; ++t) p[b * W + t] = val[size_t((w0 + b) * T + t)];
    out.push_back(lm_batch(w));
  }
  return out;
}

void score_lm_batch(EvalResult& r, const Tensor& logits, const Tensor& target) {
  int64_t n = target.shape(0), P = target.shape(1);
  Tensor nll = cross_entropy(reshape(logits, {-1, logits.shape(-1)}), reshape(target, {-1}), -100, 0.0, Reduction::None);
  for (double l : mean(reshape(nll, {n, P}), {1}).to(Device::CPU).to(DType::F64).to_vector<double>())
    r.items.push_back(l);
  r.windows += n;
  r.count += n * P;
}

void finish_lm_eval(EvalResult& r) {
  double loss_sum = 0;
  const double P = double(r.count) / double(r.windows);
  for (double l : r.items) loss_sum += l * P;
  r.loss = loss_sum / double(r.count);
}

EvalResult train(Model& model, const TrainConfig& cfg, const TrainData& data, bool resume, bool progress) {
  NMPERM_CHECK(!cfg.out_dir.empty(), "train: an output folder is required");
  NMPERM_CHECK(cfg.steps > 0 && cfg.batch > 0, "train: steps and batch must be positive");
  check_data(model, data, true);
  LinearPrecision precision(precision_dtype(cfg.precision));
  fs::create_directories(cfg.out_dir);
  std::vector<Tensor> params = model.parameters();
  AdamW opt(params, {.lr = cfg.lr, .beta1 = cfg.beta1, .beta2 = cfg.beta2, .eps = 1e-8, .weight_decay = cfg.weight_decay});
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].ndim() < 2) opt.decay[i] = 0.0;  // no decay on biases and norm weights
  int64_t start = resume ? restore_training_state(model, opt, cfg) : 0;
  if (start > 0 && progress) std::fprintf(stderr, "resuming from step %lld\n", (long long)start);
  write_file_atomic((fs::path(cfg.out_dir) / "train_config.json").string(), cfg.to_json().dump(2) + "\n");

  std::ofstream metrics(fs::path(cfg.out_dir) / "metrics.jsonl", std::ios::app);
  Progress bar(progress);
  const bool images = model.network->takes_images();
  int64_t per_step = cfg.batch * (images ? 1 : context_of(model, data));
  double ema = 0;
  // Training is watched on the validation split when the data has one (choices of recipe
  // are made there), the test split otherwise.
  const Split watch = has_validation(model, data) ? Split::Validation : Split::Test;
  const char* watched = watch == Split::Test ? "test" : "val";
  EvalResult last;
  for (int64_t step = start; step < cfg.steps; ++step) {
    double lr = lr_at(cfg, step);
    opt.hp.lr = lr;
    opt.zero_grad();
    Tensor loss = batch_loss(model, cfg, data, step);
    double l = loss.item();
    NMPERM_CHECK(std::isfinite(l),
                 "training stopped: the loss is {} at step {}; the last good checkpoint in '{}' is kept "
                 "(try a lower --lr)",
                 l, step, cfg.out_dir);
    backward(loss);
    double gnorm = grad_norm(params);
    opt.step(clip_scale(gnorm, cfg.clip > 0 ? cfg.clip : INFINITY));  // throws on NaN/Inf, before any step
    ema = step == start ? l : 0.98 * ema + 0.02 * l;
    double el = bar.elapsed();
    double rate = double(step + 1 - start) / el;
    bool eval_now = (step + 1) % cfg.eval_every == 0 || step + 1 == cfg.steps;
    json rec = {{"step", step + 1}, {"loss", l}, {"lr", lr}, {"grad_norm", gnorm}, {"elapsed_s", el}};
    if (eval_now) {
      last = evaluate(model, data, cfg.eval_windows, 0, watch);
      rec["eval"] = last.to_json(model.arch());
      rec["eval"]["split"] = split_name(watch);
    }
    metrics << rec.dump() << "\n";
    metrics.flush();
    {
      std::string line = fmt::format("step {:>6}/{}  loss {:.4f}  lr {:.2e}  {:.0f} {}/s  ETA {}", step + 1, cfg.steps,
                                     ema, lr, rate * double(per_step), images ? "img" : "tok",
                                     fmt_time(double(cfg.steps - step - 1) / rate));
      if (eval_now)
        line += images ? fmt::format("  | {} acc {:.4f} loss {:.4f}", watched, last.accuracy, last.loss)
                          : fmt::format("  | {} loss {:.4f} ppl {:.2f}", watched, last.loss, std::exp(last.loss));
      bar.show(line, eval_now);
    }
    if ((step + 1) % cfg.ckpt_every == 0 || step + 1 == cfg.steps) save_training_state(model, opt, cfg, step + 1);
  }
  if (start >= cfg.steps) last = evaluate(model, data, cfg.eval_windows, 0, watch);
  save_checkpoint(model, cfg.out_dir, {{"steps", std::to_string(cfg.steps)}});
  return last;
}

}  // namespace nmperm

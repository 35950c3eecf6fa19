#include "permute/blockwise.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/progress.h"
#include "core/storage.h"

namespace nmperm {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr double kGiB = double(1 << 30);

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double layer_parameters(const LlamaConfig& c) {
  double V = double(c.vocab_size), C = double(c.hidden_size);
  return (c.parameter_count() - V * C * (c.tie_word_embeddings ? 1 : 2) - C) / double(c.num_hidden_layers);
}

// The hidden states that flow from block to block, one tensor per batch.
struct Streams {
  std::vector<Tensor> calib, test, val;
};

// One block-by-block pass over a checkpoint: the model without parameters, the files it
// reads its blocks from, the batches it carries.
struct Pass {
  const CheckpointFiles& files;
  Model model;
  Llama& L;
  Pass(const CheckpointFiles& f, Device d) : files(f), model(model_shell(f)), L(model.as<Llama>()) { model.to(d); }

  std::vector<Tensor> embed(const std::vector<Tensor>& ids) {
    NoGradGuard ng;
    L.embed_tokens = load_tensor(model, files, "model.embed_tokens.weight");
    std::vector<Tensor> out;
    for (const Tensor& x : ids) out.push_back(L.embed(x.to(model.device())));
    L.embed_tokens = Tensor();
    release_host_cache();
    return out;
  }
  void through(size_t i, std::vector<Tensor>& states) {
    NoGradGuard ng;
    for (Tensor& h : states) h = L.block(i, h);
  }
  EvalResult score(const std::vector<Tensor>& states, const std::vector<Batch>& batches) {
    NoGradGuard ng;
    L.final_norm = make_norm(L.cfg.hidden_size, L.cfg.rms_norm_eps, true);
    L.final_norm.weight = load_tensor(model, files, "model.norm.weight");
    L.lm_head.weight = load_tensor(model, files, L.cfg.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
    EvalResult r;
    for (size_t b = 0; b < batches.size(); ++b)
      score_lm_batch(r, L.head(states[b]), batches[b].target.to(model.device()));
    finish_lm_eval(r);
    L.final_norm = Norm();
    L.lm_head = Linear();
    release_host_cache();
    return r;
  }
  // Runs the states through block i with an observer: its layers' input norms by weight name.
  std::map<std::string, Tensor> calibrate(size_t i, std::vector<Tensor>& states) {
    InputSumSquares obs;
    {
      ObserverGuard guard(&obs);
      through(i, states);
    }
    std::map<std::string, Tensor> out;
    L.visit_block_linears(i, [&](const std::string& prefix, Linear& l) { out[prefix + ".weight"] = obs.norms(l.weight); });
    return out;
  }
  // The lm_head's input norms: those of the final norm's outputs.
  Tensor head_norms(const std::vector<Tensor>& states) {
    NoGradGuard ng;
    Norm n = make_norm(L.cfg.hidden_size, L.cfg.rms_norm_eps, true);
    n.weight = load_tensor(model, files, "model.norm.weight");
    InputSumSquares obs;
    for (const Tensor& h : states) obs.add(&obs, n(h));
    return obs.norms(static_cast<const void*>(&obs));
  }
  void load(size_t i) { load_block(model, files, i); }
  void free(size_t i) {
    free_block(model, i);
    release_host_cache();
  }
};

// A learned method on block i: the warm start's search, then costs that learn against the
// block's output on its calibration inputs. The blocks' results accumulate in `acc`: the
// curve (each point names its block as "stage"), the sums over blocks of the starting and
// best held-out objectives, the first block's soft permutation.
std::map<std::string, Perm> learn_block(Pass& pass, size_t i, std::vector<Site>& sites, const SiteScores& scores,
                                        const std::vector<Tensor>& calib, const PruneOptions& po, LearnResult& acc,
                                        int64_t first_site, int64_t total_sites) {
  std::map<std::string, Perm> warm;
  if (po.warm_start != "none") {
    NMPERM_CHECK(!permute_method(po.warm_start).learned, "--warm-start must be a search method, got '{}'", po.warm_start);
    warm = search_sites(po.warm_start, sites, scores, po, first_site, total_sites);
  }
  LearnOptions lo = po.learn;
  lo.seed = po.seed;
  lo.progress = po.progress;
  LearnResult r = learn_block_permutations(pass.model, i, sites, scores, po.pattern, cat(calib, 0), lo, warm);
  for (json& point : r.curve) acc.curve.push_back(point);
  acc.start_holdout += r.start_holdout;
  acc.best_holdout += r.best_holdout;
  acc.best_step = r.best_step;
  acc.seconds += r.seconds;
  if (!acc.soft_block.defined()) acc.soft_block = r.soft_block.to(Device::CPU);
  return r.perms;
}

// What an interrupted learned run keeps of `acc` in its state, and back.
json learn_state(const LearnResult& r) {
  return {{"curve", r.curve},         {"start_holdout", r.start_holdout}, {"best_holdout", r.best_holdout},
          {"best_step", r.best_step}, {"seconds", r.seconds},             {"soft_block", r.soft_block.to_vector<float>()},
          {"soft_block_size", r.soft_block.shape(0)}};
}
LearnResult learn_from_state(const json& j) {
  LearnResult r;
  r.curve = j.at("curve");
  r.start_holdout = j.at("start_holdout");
  r.best_holdout = j.at("best_holdout");
  r.best_step = j.at("best_step");
  r.seconds = j.at("seconds");
  const int64_t B = j.at("soft_block_size");
  r.soft_block = from_vector(j.at("soft_block").get<std::vector<float>>(), {B, B});
  return r;
}

std::vector<Tensor> inputs_of(const std::vector<Batch>& batches) {
  std::vector<Tensor> out;
  for (const Batch& b : batches) out.push_back(b.input);
  return out;
}

// The pruned model's shards, written as its blocks finish: the source's files, tensors,
// dtypes and order (input gathers, if the source had any, are not carried over: every
// weight is written in its original input-channel order).
class Output {
 public:
  Output(const CheckpointFiles& files, const std::string& dir, const std::map<std::string, std::string>& meta,
         bool resume)
      : dir_(dir), sharded_(!files.shards.empty()) {
    fs::create_directories(dir);
    for (const auto& f : files.files) {
      std::string name = sharded_ ? fs::path(f->path()).filename().string() : "model.safetensors";
      std::vector<TensorEntry> plan;
      for (const TensorEntry& e : f->header().entries)
        if (!e.name.ends_with(".input_permutation")) {
          plan.push_back({e.name, e.dtype, e.shape, 0, 0});
          shard_of_[e.name] = name;
        }
      writers_[name] = std::make_unique<SafeTensorsWriter>((fs::path(dir) / name).string(), plan, meta, resume);
    }
  }
  void write(const std::string& name, const Tensor& t) { writer(name).write(name, t); }
  void copy(const CheckpointFiles& files, const std::string& name) {
    const auto& [file, entry] = files.tensors.at(name);
    writer(name).write_bytes(name, file->bytes(*entry), entry->end - entry->begin);
    file->release(*entry);
  }
  void write_block(Llama& L, size_t i) {
    std::map<std::string, const Linear*> linears;
    L.visit_block_linears(i, [&](const std::string& prefix, Linear& l) { linears[prefix + ".weight"] = &l; });
    L.visit_block(i, [&](const std::string& name, Tensor& t) {
      auto it = linears.find(name);
      bool gathered = it != linears.end() && it->second->input_perm.defined();
      write(name, gathered ? weight_in_original_order(*it->second) : t.detach());
    });
  }
  void sync() {
    for (auto& [n, w] : writers_) w->sync();
  }
  void finish() {
    json weight_map = json::object();
    uint64_t total = 0;
    for (auto& [n, w] : writers_) {
      w->finish();
      for (const TensorEntry& e : w->entries()) {
        weight_map[e.name] = n;
        total += e.end - e.begin;
      }
    }
    if (sharded_) {
      json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
      write_file_atomic((fs::path(dir_) / "model.safetensors.index.json").string(), index.dump(2) + "\n");
    }
  }

 private:
  SafeTensorsWriter& writer(const std::string& name) {
    auto it = shard_of_.find(name);
    NMPERM_CHECK(it != shard_of_.end(), "output: tensor '{}' is not in the source checkpoint", name);
    return *writers_.at(it->second);
  }
  std::string dir_;
  bool sharded_;
  std::map<std::string, std::unique_ptr<SafeTensorsWriter>> writers_;
  std::map<std::string, std::string> shard_of_;
};

// Saved state: tensors by name and one JSON object, in one file written atomically.
void save_state(const fs::path& path, const json& state, const Streams& s,
                const std::map<std::string, Tensor>& extra = {}) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  auto add = [&](const char* what, const std::vector<Tensor>& v) {
    for (size_t b = 0; b < v.size(); ++b) tensors.emplace_back(fmt::format("{}.{}", what, b), v[b]);
  };
  add("calib", s.calib), add("test", s.test), add("val", s.val);
  for (auto& [n, t] : extra) tensors.emplace_back("extra." + n, t);
  fs::create_directories(path.parent_path());
  save_safetensors(path.string(), tensors, {{"state", state.dump()}});
}

// The state at path when it exists and was written for `fingerprint`; else null.
json load_state(const fs::path& path, const json& fingerprint, Streams& s, std::map<std::string, Tensor>& extra,
                Device d) {
  if (!fs::exists(path)) return nullptr;
  SafeTensors st = load_safetensors(path.string());
  json state = json::parse(st.metadata.at("state"));
  NMPERM_CHECK(state.at("fingerprint") == fingerprint,
               "resume: '{}' was written by a run with other settings, data or checkpoint; remove it (or the whole "
               "--out folder) to start afresh, or run with the settings it records:\n{}",
               path.string(), state.at("fingerprint").dump());
  auto take = [&](const std::string& what, std::vector<Tensor>& v) {
    v.clear();
    for (size_t b = 0;; ++b) {
      const Tensor* t = st.find(fmt::format("{}.{}", what, b));
      if (!t) break;
      v.push_back(t->to(d));
    }
  };
  take("calib", s.calib), take("test", s.test), take("val", s.val);
  for (auto& [n, t] : st.tensors)
    if (n.starts_with("extra.")) extra[n.substr(6)] = t;
  return state;
}

// What must match for saved state to be reused.
json fingerprint_of(const std::string& checkpoint, const TrainData& data, const CompareOptions& o) {
  json opts = o.to_json();
  opts.erase("methods");
  opts.erase("seeds");
  return {{"checkpoint", fs::absolute(checkpoint).string()},
          {"options", opts},
          {"data", data.tokens.description},
          {"tokens", {data.tokens.train.size(), data.tokens.val.size(), data.tokens.test.size()}},
          {"seqlen", data.tokens.seqlen},
          {"calib_seed", data.tokens.calib_seed},
          {"device", o.device == Device::CUDA ? "cuda" : "cpu"}};
}

// The dense model block by block: the states of s to its last block's outputs and, when s
// has calibration states, every block's activation norms on them (and the lm_head's).
std::map<std::string, Tensor> dense_pass(Pass& pass, Streams& s, bool progress) {
  std::map<std::string, Tensor> norms;
  Progress bar(progress);
  const size_t blocks = pass.L.layers.size();
  for (size_t i = 0; i < blocks; ++i) {
    pass.load(i);
    if (!s.calib.empty()) norms.merge(pass.calibrate(i, s.calib));
    pass.through(i, s.test);
    pass.through(i, s.val);
    pass.free(i);
    bar.show(fmt::format("  dense: block {}/{}, {} elapsed, ETA {}", i + 1, blocks, fmt_time(bar.elapsed()),
                         bar.eta(double(i + 1), double(blocks))),
             true);
  }
  if (!s.calib.empty()) norms["lm_head.weight"] = pass.head_norms(s.calib);
  return norms;
}

}  // namespace

std::map<std::string, Tensor> activation_norms_blockwise(const std::string& checkpoint, const TrainData& data,
                                                         const CalibrationOptions& opt, Device device, bool progress) {
  CheckpointFiles files = CheckpointFiles::open(checkpoint);
  Pass pass(files, device);
  Streams s;
  s.calib = pass.embed(calibration_windows(pass.model, data, opt));
  return dense_pass(pass, s, progress);
}

std::string MemoryEstimate::str() const {
  return fmt::format("about {:.1f} GiB (one block {:.1f}, embeddings {:.1f}, hidden states {:.1f}, one batch {:.1f}{})",
                     total / kGiB, block / kGiB, embeddings / kGiB, activations / kGiB, working / kGiB,
                     learning > 0 ? fmt::format(", learning {:.1f}", learning / kGiB) : "");
}

double available_memory(Device d) {
  if (d == Device::CUDA) return double(cuda_free_memory());
  std::ifstream f("/proc/meminfo");
  std::string key;
  double kb = 0;
  while (f >> key >> kb) {
    if (key == "MemAvailable:") return kb * 1024;
    f.ignore(1 << 10, '\n');
  }
  return INFINITY;
}

MemoryEstimate blockwise_memory(const Model& model, const TrainData& data, const CompareOptions& o) {
  const LlamaConfig& c = model.as<Llama>().cfg;
  const double C = double(c.hidden_size), V = double(c.vocab_size), I = double(c.intermediate_size);
  const int64_t T = context_of(model, data);
  const double calib_tokens = double(o.calib.batches * o.calib.batch * T);
  const double eval_tokens =
      double(T) * double(lm_eval_windows(model, data, o.eval_windows, Split::Test) +
                        lm_eval_windows(model, data, o.eval_windows, Split::Validation));
  // The largest batch in flight: its MLP and attention intermediates (a few copies each).
  const double batch_tokens = double(std::max<int64_t>(o.calib.batch, std::max<int64_t>(1, 2048 / T)) * T);
  const double working = batch_tokens * 4 * (4 * I + 4 * C) + double(o.calib.batch) * double(c.num_attention_heads) * double(T) * double(T) * 4 * 2;
  MemoryEstimate e;
  e.block = layer_parameters(c) * 4 * 1.5;  // the block and the scores and masks of its widest site
  e.embeddings = V * C * 4;
  e.working = working + double(std::max<int64_t>(1, 2048 / T) * T) * V * 4 * 2;  // and one batch's logits
  e.activations = (calib_tokens + eval_tokens) * C * 4;
  // RIA (the learned methods' default warm start too) holds at its widest site, down_proj
  // with G = intermediate / M groups, a G x G gain matrix and, while they fit its budget,
  // every slot's hinge sums kept across rounds (M more).
  const NMPattern pattern = NMPattern::parse(o.pattern);
  auto uses_ria = [](const std::string& m) { return m == "ria" || permute_method(m).learned; };
  if (std::any_of(o.methods.begin(), o.methods.end(), uses_ria)) {
    const double G = I / double(pattern.m), kept = double(pattern.m) * G * G * 8;
    e.block += G * G * 8 + (kept <= double(o.search.ria_cache_bytes) ? kept : G * G * 8);
  }
  // A learned method's block: its calibration inputs twice more (gathered into one tensor,
  // and the dense outputs they learn towards), every consumer's W_eff with its
  // straight-through chain (about 8 weight-sized tensors), every site's costs with their
  // gradients, Adam moments and Sinkhorn states (about 10 copies of G B^2), and one
  // learning batch's activations kept for the backward.
  for (const std::string& m : o.methods) {
    if (!permute_method(m).learned) continue;
    const LearnOptions lo = run_prune_options(o, m, o.seed).learn;
    double costs = 0;
    for (auto [channels, sites] : {std::pair{c.hidden_size, 3.0}, {c.intermediate_size, 1.0}})
      costs += sites * double(channels) * double(channels) / double(site_groups(channels, lo, pattern));
    const double batch = double((lo.batch > 0 ? lo.batch : 16) * T);
    e.learning = std::max(e.learning, 2 * calib_tokens * C * 4 + layer_parameters(c) * 4 * 8 + costs * 4 * 10 +
                                          batch * 4 * (4 * I + 8 * C) * 3);
  }
  e.total = e.activations + e.working + e.learning + std::max(e.block, e.embeddings) + 0.25 * kGiB;
  return e;
}

double whole_model_memory(const Model& model, const TrainData& data, const CompareOptions& o) {
  // The dense model and each run's copy, both whole, plus one batch in flight.
  return 2 * model.network->parameter_count() * 4 + blockwise_memory(model, data, o).working + 0.25 * kGiB;
}

std::string auto_eval_pipeline(const Model& model, const TrainData& data, int64_t windows, Device d, std::string& why) {
  CompareOptions sizing;
  sizing.eval_windows = windows;
  sizing.calib.batches = sizing.calib.batch = 0;
  const double need = whole_model_memory(model, data, sizing) / 2;  // evaluation holds one copy
  const double host = available_memory(Device::CPU);
  const double gpu = d == Device::CUDA ? available_memory(Device::CUDA) : INFINITY;
  const bool whole = need <= host && need <= gpu;
  why = fmt::format("the whole model needs about {:.2f} GiB; {:.2f} GiB available on the host", need / kGiB,
                    host / kGiB);
  if (d == Device::CUDA) why += fmt::format(", {:.2f} GiB free on the GPU", gpu / kGiB);
  return whole ? "whole" : "block";
}

EvalResult evaluate_blockwise(const std::string& checkpoint, const TrainData& data, int64_t max_windows, Split split,
                              Device device, bool progress) {
  CheckpointFiles files = CheckpointFiles::open(checkpoint);
  Pass pass(files, device);
  std::vector<Batch> batches = lm_eval_batches(pass.model, data, max_windows, 0, split);
  std::vector<Tensor> states = pass.embed(inputs_of(batches));
  Progress bar(progress);
  const size_t L = pass.L.layers.size();
  for (size_t i = 0; i < L; ++i) {
    pass.load(i);
    pass.through(i, states);
    pass.free(i);
    bar.show(fmt::format("  eval: block {}/{}, {} elapsed, ETA {}", i + 1, L, fmt_time(bar.elapsed()),
                         bar.eta(double(i + 1), double(L))),
             i + 1 == L);
  }
  return pass.score(states, batches);
}

json compare_blockwise(const std::string& checkpoint, const TrainData& data, const CompareOptions& o,
                       const ReportCallback& on_update) {
  const NMPattern pattern = NMPattern::parse(o.pattern);
  const Score score = parse_score(o.score);
  const bool sequential = o.calibration == "sequential";
  NMPERM_CHECK(o.seeds > 0, "seeds must be positive");
  for (const std::string& m : o.methods) {
    if (!permute_method(m).learned) continue;
    Objective obj = run_prune_options(o, m, o.seed).learn.objective;
    NMPERM_CHECK(obj == Objective::Block || obj == Objective::LayerCosine,
                 "--permute {} block by block learns each block against its own output: the '{}' objective trains "
                 "against the whole model; use --objective block (or --learn-set objective=block|layer-cosine), or "
                 "the whole-model pipeline (--pipeline whole), which needs the whole model in memory",
                 m, name_of(obj));
  }
  NMPERM_CHECK(parse_layout(o.layout) == Layout::Original,
               "--layout permuted is written by the whole-model pipeline only; block by block writes the original "
               "layout (a standard Hugging Face folder)");
  NMPERM_CHECK(!o.resume || !o.out_dir.empty(), "--resume needs --out, where an interrupted run keeps its state");
  CheckpointFiles files = CheckpointFiles::open(checkpoint);
  Pass pass(files, o.device);
  Llama& L = pass.L;
  const LlamaConfig& cfg = L.cfg;
  {
    int64_t D = cfg.dim();
    for (auto [what, channels] : {std::pair{"self_attn.qkv_proj", cfg.hidden_size},
                                  {"self_attn.o_proj", cfg.num_attention_heads * D},
                                  {"mlp.gate_up_proj", cfg.hidden_size},
                                  {"mlp.down_proj", cfg.intermediate_size}})
      pattern.check_fits(channels, fmt::format("site 'model.layers.0.{}'", what));
  }
  MemoryEstimate need = blockwise_memory(pass.model, data, o);
  const double avail = available_memory(o.device);
  NMPERM_CHECK(need.total <= avail,
               "block-by-block pruning of this model needs {} of memory, and {:.1f} GiB is available{}: use fewer "
               "--nsamples, a shorter --seqlen or fewer --eval-windows",
               need.str(), avail / kGiB, o.device == Device::CUDA ? " on the GPU" : "");
  if (o.progress)
    std::fprintf(stderr, "block by block: %zu blocks, %s calibration; peak memory %s%s\n", L.layers.size(),
                 sequential ? "sequential" : "dense (one-shot)", need.str().c_str(),
                 o.device == Device::CUDA ? fmt::format(" on the GPU ({:.1f} GiB free); blocks move there one at a time",
                                                        avail / kGiB).c_str()
                                          : "");

  const json fingerprint = fingerprint_of(checkpoint, data, o);
  const fs::path state_dir = fs::path(o.out_dir) / ".resume";
  const bool keep_state = !o.out_dir.empty();
  const bool with_val = has_validation(pass.model, data);
  const std::vector<Batch> test = lm_eval_batches(pass.model, data, o.eval_windows, 0, Split::Test);
  const std::vector<Batch> val =
      with_val ? lm_eval_batches(pass.model, data, o.eval_windows, 0, Split::Validation) : std::vector<Batch>{};
  const std::vector<Tensor> calib_ids = calibration_windows(pass.model, data, o.calib);
  const size_t blocks = L.layers.size();
  auto t0 = std::chrono::steady_clock::now();

  json report = report_header(checkpoint, pass.model.arch(), o);
  report["runs"] = json::array();

  // The dense pass: the dense model's evaluation and, for the one-shot convention, every
  // block's activation norms on the dense model's inputs.
  std::map<std::string, Tensor> norms;
  {
    Streams s;
    json state = keep_state && o.resume ? load_state(state_dir / "dense.safetensors", fingerprint, s, norms, o.device)
                                        : json(nullptr);
    if (state.is_null()) {
      norms.clear();
      s.test = pass.embed(inputs_of(test));
      s.val = pass.embed(inputs_of(val));
      if (!sequential) s.calib = pass.embed(calib_ids);
      norms = dense_pass(pass, s, o.progress);
      state = {{"fingerprint", fingerprint}, {"dense", pass.score(s.test, test).to_json(pass.model.arch(), true)}};
      if (with_val) state["dense_val"] = pass.score(s.val, val).to_json(pass.model.arch(), true);
      if (keep_state) save_state(state_dir / "dense.safetensors", state, Streams{}, norms);
    }
    report["dense"] = state["dense"];
    if (with_val) report["dense_val"] = state["dense_val"];
  }
  if (on_update) on_update(report);

  for (const std::string& method : o.methods) {
    const int64_t runs = permute_method(method).seeded ? o.seeds : 1;
    for (int64_t k = 0; k < runs; ++k) {
      PruneOptions po = run_prune_options(o, method, o.seed + uint64_t(k));
      const std::string dir = keep_state ? run_dir(o, method, runs, po.seed) : "";
      const std::string run_name = fs::path(dir).filename().string();
      const fs::path done_path = state_dir / (run_name + ".json"), state_path = state_dir / (run_name + ".safetensors");
      if (keep_state && o.resume && fs::exists(done_path)) {  // finished before the interruption
        std::ifstream f(done_path);
        json run = json::parse(f);
        NMPERM_CHECK(run.at("fingerprint") == fingerprint, "resume: '{}' was written by a run with other settings",
                     done_path.string());
        run.erase("fingerprint");
        report["runs"].push_back(run);
        if (o.progress)
          std::fprintf(stderr, "%s: %s (seed %llu): done before, kept\n", pass.model.arch().c_str(), method.c_str(),
                       (unsigned long long)po.seed);
        continue;
      }
      if (o.progress)
        std::fprintf(stderr, "%s: %s (seed %llu)\n", pass.model.arch().c_str(), method.c_str(),
                     (unsigned long long)po.seed);
      auto t1 = std::chrono::steady_clock::now();
      PruneResult r;
      Streams s;
      size_t start = 0;
      double seconds_before = 0;
      if (keep_state && o.resume) {
        std::map<std::string, Tensor> none;
        json state = load_state(state_path, fingerprint, s, none, o.device);
        if (!state.is_null()) {
          start = state.at("blocks_done").get<size_t>();
          r.layers = state.at("layers");
          r.sites = state.at("sites");
          r.zero_weights = state.at("zero_weights");
          r.pruned_weights = state.at("pruned_weights");
          r.nm_violations = state.at("nm_violations");
          r.perms = state.at("perms").get<std::map<std::string, Perm>>();
          if (state.contains("learn")) r.learn = learn_from_state(state["learn"]);
          seconds_before = state.at("seconds").get<double>();
          if (o.progress) std::fprintf(stderr, "  resuming after block %zu of %zu\n", start, blocks);
        }
      }
      std::unique_ptr<Output> out;
      if (keep_state)
        out = std::make_unique<Output>(files, dir, std::map<std::string, std::string>{{"format", "pt"}, {"layout", "original"}, {"pruned", o.pattern}, {"permute", method}},
                                       start > 0);
      // The learned methods learn each block from its calibration inputs, whichever the
      // convention: the pruned blocks' outputs (sequential) or the dense ones.
      const bool learned = permute_method(method).learned;
      if (start == 0) {
        s.test = pass.embed(inputs_of(test));
        s.val = pass.embed(inputs_of(val));
        if (sequential || learned) s.calib = pass.embed(calib_ids);
      }
      Progress bar(o.progress);
      auto last_save = std::chrono::steady_clock::now();
      for (size_t i = start; i < blocks; ++i) {
        pass.load(i);
        std::vector<Site> sites = permutation_sites(pass.model, i);
        std::map<std::string, Tensor> block_norms;
        if (sequential) {  // this block's norms on the pruned blocks' outputs
          std::vector<Tensor> dense_out = s.calib;
          block_norms = pass.calibrate(i, dense_out);
        }
        SiteScores scores = site_scores(sites, sequential ? block_norms : norms, score);
        std::map<std::string, Perm> perms;
        if (learned) {
          perms = learn_block(pass, i, sites, scores, s.calib, po, r.learn, 4 * i, 4 * blocks);
          if (!sequential) pass.through(i, s.calib);  // the dense block's outputs feed the next
        } else {
          perms = search_sites(method, sites, scores, po, 4 * i, 4 * blocks);
        }
        prune_sites(sites, scores, perms, po, r);
        r.perms.insert(perms.begin(), perms.end());
        if (sequential) pass.through(i, s.calib);
        pass.through(i, s.test);
        pass.through(i, s.val);
        if (out) out->write_block(L, i);
        pass.free(i);
        bar.show(fmt::format("  {}: block {}/{}, {} elapsed, ETA {}", method, i + 1, blocks, fmt_time(bar.elapsed()),
                             bar.eta(double(i + 1 - start), double(blocks - start))),
                 true);
        const bool stop = o.stop_after_blocks > 0 && int64_t(i + 1 - start) >= o.stop_after_blocks && i + 1 < blocks;
        // State after this block, at most once a minute (it holds every hidden state).
        if (keep_state && i + 1 < blocks && (stop || since(last_save) >= 60)) {
          out->sync();
          json state = {{"fingerprint", fingerprint}, {"blocks_done", i + 1}, {"layers", r.layers},
                        {"sites", r.sites}, {"zero_weights", r.zero_weights}, {"pruned_weights", r.pruned_weights},
                        {"nm_violations", r.nm_violations}, {"perms", r.perms},
                        {"seconds", seconds_before + since(t1)}};
          if (learned) state["learn"] = learn_state(r.learn);
          save_state(state_path, state, s);
          last_save = std::chrono::steady_clock::now();
        }
        NMPERM_CHECK(!stop, "stopped after block {} of {} (stop_after_blocks); run again with resume to continue",
                     i + 1, blocks);
      }
      finish_result(r);
      json run = run_record(method, po, r, seconds_before + since(t1));
      run["eval"] = pass.score(s.test, test).to_json(pass.model.arch(), true);
      if (with_val) run["eval_val"] = pass.score(s.val, val).to_json(pass.model.arch(), true);
      if (out) {
        for (auto& [name, at] : files.tensors)
          if (!name.starts_with("model.layers.") && !name.ends_with(".input_permutation")) out->copy(files, name);
        out->finish();
        write_export_files(pass.model, dir);
        save_permutations(dir + "/permutations.safetensors", r.perms,
                          {{"pattern", o.pattern}, {"score", o.score}, {"method", method}});
        run["checkpoint"] = dir;
        json done = run;
        done["fingerprint"] = fingerprint;
        write_file_atomic(done_path.string(), done.dump() + "\n");
        fs::remove(state_path);
      }
      if (o.progress) print_run(run, r, pattern);
      report["runs"].push_back(run);
      report["seconds"] = since(t0);
      if (on_update) on_update(report);
    }
  }
  if (keep_state) fs::remove_all(state_dir);
  return report;
}

}  // namespace nmperm

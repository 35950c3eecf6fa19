// Side-by-side comparison of permutation methods on one checkpoint: evaluate the dense
// model, calibrate once, then for every method (and every seed of the methods with
// randomness) load the checkpoint afresh, prune it with prune_model, evaluate and record.
// `nmperm prune` and `nmperm demo` both run this.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/calibrate.h"
#include "permute/prune.h"

namespace nmperm {

struct CompareOptions {
  std::string pattern = "2:4", score = "wanda";
  std::vector<std::string> methods{"none"};
  uint64_t seed = 0;
  int64_t seeds = 1;                  // runs per method with randomness (random, channel-swap, permllm, learned)
  CalibrationOptions calib;
  int64_t eval_windows = 0;           // Llama: validation windows (0 = all)
  SearchOptions search;               // seed is set per run
  nlohmann::json learn = nlohmann::json::object();  // overrides of learn_defaults(method), LearnOptions keys
  std::string warm_start = "auto";    // learned only; auto: default_warm_start()
  std::string out_dir;                // save OUT/METHOD[-seedS]/ (checkpoint + permutations.safetensors)
  std::string layout = "original";    // of those checkpoints: original or permuted (export_checkpoint)
  bool progress = true;
  Device device = Device::CPU;        // where the models run (the searches are host code)
  // How: "whole" (the whole model in memory, calibrated once on the dense model; every
  // method) or "block" (block by block, permute/blockwise.h: decoder models and search
  // methods). Calibration inputs of every block: "dense" (the dense model's activations,
  // one-shot) or "sequential" (the outputs of the pruned blocks before it, as Wanda and
  // SparseGPT run; block pipeline only).
  std::string pipeline = "whole", calibration = "dense";
  // The linear layers' precision in every forward pass (calibration, learning, evaluation):
  // f32, or bf16 / f16 with f32 accumulation (autograd/ops.h, LinearPrecision). Scores,
  // searches and pruning read the f32 weights either way.
  std::string precision = "f32";
  bool resume = false;             // block pipeline with out_dir: continue an interrupted run
  int64_t stop_after_blocks = 0;   // tests of resuming: fail after this many blocks of a run

  nlohmann::json to_json() const;
  static CompareOptions from_json(const nlohmann::json& j);
};

// Called after the dense evaluation and after every run with the report so far (to save it).
using ReportCallback = std::function<void(const nlohmann::json& report)>;

// Report: {checkpoint, arch, options, threads, blas, dense: eval, runs: [{method, seed, eval,
// mean_kept, mean_kept_identity, mean_kept_unstructured, seconds, layers, sites, [learn]}]}.
nlohmann::json compare_methods(const std::string& checkpoint, const TrainData& data, const CompareOptions& opt,
                               const ReportCallback& on_update = {});

// The table of a report on one split: per method the model metric (ViT accuracy and loss,
// Llama loss and perplexity), the loss gap closed, the mean kept fraction and seconds, as
// mean ± half-range over seeds; with a ria run, every method's paired difference to it.
// markdown = true gives a Markdown table, else aligned text.
std::string methods_table(const nlohmann::json& report, bool markdown, Split split = Split::Test);

// The paired per-item loss difference of `method` (averaged over its runs) against
// `reference` on a split: {difference, se (standard error of the mean difference), items,
// seed_spread (half-range of the method's run losses), verdict}. The verdict is "ahead" or
// "behind" only when |difference| exceeds both twice the standard error and the seed
// spread, else "level". Null when either has no per-item losses.
nlohmann::json paired_difference(const nlohmann::json& report, const std::string& method,
                                 const std::string& reference, Split split);

// The prune options of one run of a comparison (seed: the run's, o.seed + k).
PruneOptions run_prune_options(const CompareOptions& o, const std::string& method, uint64_t seed);
// The run's record as compare_methods reports it (without eval, which the caller adds).
nlohmann::json run_record(const std::string& method, const PruneOptions& po, const PruneResult& r, double seconds);
// The report's opening fields: checkpoint, arch, options, threads, blas, device.
nlohmann::json report_header(const std::string& checkpoint, const std::string& arch, const CompareOptions& o);
// Where a run's checkpoint goes: OUT/METHOD, or OUT/METHOD-seedS when the method has runs > 1.
std::string run_dir(const CompareOptions& o, const std::string& method, int64_t runs, uint64_t seed);
// Prints a finished run's summary line on stderr.
void print_run(const nlohmann::json& run, const PruneResult& r, const NMPattern& pattern);

// Applies the keys of j to o (unknown keys are an error naming them).
void merge_learn_options(LearnOptions& o, const nlohmann::json& j);

}  // namespace nmperm

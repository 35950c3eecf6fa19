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
  std::string warm_start = "auto";    // learned only; auto: default_warm_start(arch)
  std::string out_dir;                // save OUT/METHOD[-seedS]/ (checkpoint + permutations.safetensors)
  std::string layout = "original";    // of those checkpoints: original or permuted (export_checkpoint)
  bool progress = true;
  Device device = Device::CPU;        // where the models run (the searches are host code)
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

// Applies the keys of j to o (unknown keys are an error naming them).
void merge_learn_options(LearnOptions& o, const nlohmann::json& j);

}  // namespace nmperm

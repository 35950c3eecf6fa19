// Block-by-block pruning and evaluation of decoder models (Llama, Mistral, Qwen2) of any
// size, as Wanda, SparseGPT and RIA prune 7B-70B models: the checkpoint's shards are
// mapped, not read, and only one transformer block is in memory (in f32) at a time.
//
//   embed the calibration windows and the evaluation windows once (hidden states, f32);
//   for every block i: load it from the files; run the calibration states through it
//   with an observer (the activation norms of its layers); find each site's permutation
//   and N:M masks and prune (permute/prune.h); run the evaluation states (and, under
//   the sequential convention, the calibration states) through the pruned block to feed
//   the next; write its tensors to the output shards; free it;
//   finally the head (final norm, lm_head) scores the evaluation windows.
//
// Calibration inputs: "sequential" feeds block i the outputs of the pruned blocks before
// it (Wanda's and SparseGPT's convention); "dense" feeds it the dense model's (one-shot,
// what the whole-model pipeline does: block-by-block pruning then equals it exactly).
// Peak memory is about one block in f32, the hidden states of nsamples x seqlen
// calibration tokens and of the evaluation windows, and the embedding matrix, whatever
// the depth.
//
// With an output folder every run writes OUT/METHOD/ as it goes (SafeTensorsWriter) and,
// after every block, OUT/METHOD/.resume/state.safetensors (hidden states, permutations
// and records so far); a run started again with resume continues after the last block it
// finished and ends bitwise equal to an uninterrupted run.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "permute/compare.h"

namespace nmperm {

// Estimated peak memory in bytes of the two pipelines for a decoder model and data under
// these options (on the device they run on), and what a device has available.
struct MemoryEstimate {
  double block = 0, embeddings = 0;  // one block in f32 (with its pruning temporaries); the embeddings
  double activations = 0;            // the hidden states of every calibration and evaluation window
  double working = 0;                // one batch in flight: its intermediates and logits
  double learning = 0;               // learned methods: one block's learning state (below)
  double total = 0;
  std::string str() const;  // "about 3.1 GiB (one block 0.9, embeddings 1.0, ...)"
};
MemoryEstimate blockwise_memory(const Model& model, const TrainData& data, const CompareOptions& o);
double whole_model_memory(const Model& model, const TrainData& data, const CompareOptions& o);
// The host's MemAvailable (/proc/meminfo) for the CPU; the GPU's free memory plus the
// allocator's cached blocks for CUDA.
double available_memory(Device d = Device::CPU);
// What `eval --pipeline auto` runs for a decoder model: "whole" when the model fits where
// it runs (host memory to load it, and the GPU's for CUDA), else "block"; `why` gives the
// figures behind the choice.
std::string auto_eval_pipeline(const Model& model, const TrainData& data, int64_t windows, Device d, std::string& why);

// compare_methods with pipeline "block" (see compare.h for the report).
nlohmann::json compare_blockwise(const std::string& checkpoint, const TrainData& data, const CompareOptions& o,
                                 const ReportCallback& on_update = {});

// activation_norms() of a decoder checkpoint, one block in memory at a time (equal to it).
std::map<std::string, Tensor> activation_norms_blockwise(const std::string& checkpoint, const TrainData& data,
                                                         const CalibrationOptions& opt, Device device = Device::CPU,
                                                         bool progress = true);
// evaluate() of a decoder checkpoint, one block in memory at a time.
EvalResult evaluate_blockwise(const std::string& checkpoint, const TrainData& data, int64_t max_windows, Split split,
                              Device device = Device::CPU, bool progress = true);

}  // namespace nmperm

// Calibration: run a model over calibration data and collect, for every linear layer, the
// per-input-channel activation norm ||X_j||_2 over all rows (tokens or images) it saw.
// Only running sums of squares are kept, never the activations themselves.
#pragma once
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "models/checkpoint.h"
#include "models/train.h"

namespace nmperm {

struct CalibrationOptions {
  int64_t batches = 8;  // forward passes
  int64_t batch = 32;   // images or token windows per pass
};

// Weight name (Hugging Face, e.g. "model.layers.0.mlp.down_proj.weight") -> (in) f32 norms.
// batches * batch training images, or token windows of the model's context, spread evenly
// over the whole training split (spread_indices).
std::map<std::string, Tensor> activation_norms(Model& model, const TrainData& data, const CalibrationOptions& opt);

// The pieces, for work that runs one block at a time (permute/blockwise.h):
// the Llama's calibration windows, `batches` (batch, T) token-id tensors, as
// activation_norms runs them;
std::vector<Tensor> calibration_windows(const Model& model, const TrainData& data, const CalibrationOptions& opt);
// the sums of squares of every linear layer's inputs while installed (keyed by weight
// storage), and their square roots for one weight (undefined when it saw no input);
struct InputSumSquares : LinearObserver {
  std::unordered_map<const void*, std::vector<double>> sums;
  void observe(const Tensor& weight, const Tensor& input) override;  // add(weight's storage, input)
  void add(const void* key, const Tensor& input);  // rows of input's last dimension
  Tensor norms(const Tensor& weight) const;
  Tensor norms(const void* key) const;
};
// installs an observer for its scope.
struct ObserverGuard {
  explicit ObserverGuard(LinearObserver* o);
  ~ObserverGuard();
  ObserverGuard(const ObserverGuard&) = delete;
  ObserverGuard& operator=(const ObserverGuard&) = delete;
};

}  // namespace nmperm

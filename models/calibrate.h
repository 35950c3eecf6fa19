// Calibration: run a model over calibration data and collect, for every linear layer, the
// per-input-channel activation norm ||X_j||_2 over all rows (tokens or images) it saw.
// Only running sums of squares are kept, never the activations themselves.
#pragma once
#include <map>
#include <string>

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

}  // namespace nmperm

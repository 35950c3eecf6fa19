// Optimizer and gradient clipping over a parameter list (the kernels are in kernels/optim.h).
#pragma once
#include <vector>

#include "kernels/optim.h"

namespace nmperm {

// AdamW with decoupled weight decay. Parameters whose gradient is undefined are skipped
// that step. The moments of all parameters of one device and dtype live in one flat
// buffer, and a step updates all of them in one fused pass (one kernel launch on the GPU).
// State (m, v, step) is public so checkpoints can save and restore it.
struct AdamW {
  std::vector<Tensor> params;
  kernels::AdamWParams hp;
  std::vector<double> decay;  // per-parameter weight decay (defaults to hp.weight_decay)
  std::vector<Tensor> m, v;   // per-parameter views of the flat buffers
  int64_t step_count = 0;

  AdamW(std::vector<Tensor> params, kernels::AdamWParams hp);
  // One update; the gradients are multiplied by grad_scale as the update reads them
  // (clip_scale's factor: clipping without a pass that rewrites every gradient).
  void step(double grad_scale = 1.0);
  void zero_grad();

 private:
  struct Flat {  // the parameters of one device and dtype
    Device device;
    DType dtype;
    Tensor m, v;
    std::vector<size_t> members;
    std::vector<int64_t> offsets;
  };
  std::vector<Flat> flats_;
};

// Scales all gradients so their global L2 norm is at most max_norm; returns the norm
// before clipping. A non-finite norm throws (the caller decides whether to stop).
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);
// The factor clip_grad_norm scales by for a gradient norm: max_norm / (norm + 1e-6) above
// max_norm, otherwise 1; a non-finite norm throws. `opt.step(clip_scale(grad_norm(ps), c))`
// is clip_grad_norm then step() with the same bits and one pass over the gradients fewer.
double clip_scale(double norm, double max_norm);
double grad_norm(const std::vector<Tensor>& params);

}  // namespace nmperm

// Training and evaluation of the two model families, shared by the CLI and the tests.
//
// Every batch is a pure function of (seed, step): image batches come from a seeded
// shuffle per epoch, token windows from Philox counters. Resuming therefore needs only
// the parameters, the optimizer moments and the step, and a resumed run follows the
// same trajectory as an uninterrupted one.
//
// Checkpoints: OUT/step_NNNNNNN/ holds a Hugging Face checkpoint plus
// trainer_state.safetensors (AdamW moments, step, the training config); OUT/latest names
// the newest complete one and is replaced atomically after it is fully written, so a
// crash at any moment leaves the previous checkpoint usable. The finished model is also
// written to OUT itself.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "models/checkpoint.h"
#include "models/data.h"

namespace nmperm {

struct TrainConfig {
  std::string arch = "vit";  // an architecture's name (models/checkpoint.h: architecture()): vit | llama
  std::string out_dir;
  int64_t steps = 1000, batch = 128, warmup = 100;
  double lr = 1e-3, min_lr_ratio = 0.1, weight_decay = 0.05, clip = 1.0, beta1 = 0.9, beta2 = 0.999;
  double label_smoothing = 0;  // training loss only; evaluation reports the plain cross-entropy
  int64_t eval_every = 500, ckpt_every = 500, keep_checkpoints = 2;
  int64_t eval_windows = 400;  // Llama: validation windows per evaluation (0 = all)
  uint64_t seed = 0;
  // "f32", or "bf16" / "f16": mixed precision (linear layers multiply in 16 bits with f32
  // accumulation; the parameters, their gradients and AdamW's state stay f32).
  std::string precision = "f32";
  nlohmann::json to_json() const;
  static TrainConfig from_json(const nlohmann::json& j);
};

struct EvalResult {
  double loss = 0;      // mean cross-entropy (nats per example or token)
  double accuracy = 0;  // ViT
  int64_t count = 0;    // examples or tokens scored
  int64_t windows = 0;  // Llama: windows scored
  // Loss of every image (ViT) or mean loss of every window (Llama), for paired comparisons.
  std::vector<double> items;
  // Without the per-item losses unless `items` is set. arch: the model's architecture name
  // (Model::arch()), whose data kind picks the metrics.
  nlohmann::json to_json(const std::string& arch, bool with_items = false) const;
};

// The data a model trains and evaluates on. The validation split is for choosing settings
// (held out from training; may be empty), the test split for reporting.
struct TrainData {
  ImageSet train_images, val_images, test_images;  // ViT (images in [0, 1])
  TokenData tokens;                                // Llama
};

enum class Split { Validation, Test };
const char* split_name(Split s);

using StepCallback = std::function<void(int64_t step, double loss, double lr)>;

// Trains `model` (fresh or loaded) on `data`; resumes from cfg.out_dir when it holds a
// checkpoint and `resume` is set. Returns the final evaluation.
EvalResult train(Model& model, const TrainConfig& cfg, const TrainData& data, bool resume, bool progress = true);
// Evaluates on the test split, or the validation split (an error when the data has none).
EvalResult evaluate(Model& model, const TrainData& data, int64_t max_windows = 0, int64_t batch = 0,
                    Split split = Split::Test);
// True when the data has a validation split for the model's architecture.
bool has_validation(const Model& model, const TrainData& data);

// Learning rate at `step`: linear warm-up, then cosine decay to lr * min_lr_ratio.
double lr_at(const TrainConfig& cfg, int64_t step);
// The training loss of one batch (with autograd), used by train() and the tests.
Tensor batch_loss(Model& model, const TrainConfig& cfg, const TrainData& data, int64_t step);
// One training batch: images and labels, or token ids and their next tokens.
struct Batch {
  Tensor input, target;
};
// evaluate() of a Llama in pieces, for work that runs one block at a time: the batches of
// token windows it scores (on the CPU), each batch's logits scored into r, and the mean.
int64_t lm_eval_windows(const Model& model, const TrainData& data, int64_t max_windows, Split split);
std::vector<Batch> lm_eval_batches(const Model& model, const TrainData& data, int64_t max_windows, int64_t batch,
                                   Split split);
void score_lm_batch(EvalResult& r, const Tensor& logits, const Tensor& target);
void finish_lm_eval(EvalResult& r);
// Rows of step `step` when N examples are drawn `batch` at a time, each epoch in its own
// seeded order (a pure function of the arguments; images, and learning from block states).
std::vector<int64_t> epoch_batch(int64_t N, int64_t batch, uint64_t seed, int64_t step);
// The batch of step `step` (a pure function of seed and step), as batch_loss uses it.
Batch train_batch(const Model& model, const TrainData& data, int64_t batch, uint64_t seed, int64_t step);
// Mean cross-entropy of logits against the batch's targets (optionally label-smoothed).
Tensor task_loss(const Tensor& logits, const Batch& b, double label_smoothing = 0);
// Window length for a Llama: the data's seqlen when set, at most the model's
// max_position_embeddings.
int64_t context_of(const Model& model, const TrainData& data);

}  // namespace nmperm

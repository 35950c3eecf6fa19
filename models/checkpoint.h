// Hugging Face checkpoints: a folder with config.json, model.safetensors (or shards
// listed in model.safetensors.index.json) and, for vision models, preprocessor_config.json.
// Loading checks every tensor against the architecture: a missing, unexpected or
// mis-shaped tensor is an error naming it. Saving writes each file atomically.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "models/llama.h"
#include "models/vit.h"

namespace nmperm {

// How raw pixels become model inputs (Hugging Face's ViTImageProcessor fields).
struct ImagePreprocess {
  bool do_rescale = true, do_normalize = true;
  double rescale_factor = 1.0 / 255.0;
  std::vector<double> image_mean{0.5}, image_std{0.5};
  static ImagePreprocess from_json(const nlohmann::json& j);
  nlohmann::json to_json() const;
  // images in [0, 1] (raw / 255), (B, C, H, W) -> model input.
  Tensor apply(const Tensor& images01) const;
};

struct Model {
  std::unique_ptr<ViT> vit;      // exactly one of the two is set
  std::unique_ptr<Llama> llama;
  ImagePreprocess preprocess;    // ViT only

  std::string arch() const { return vit ? "vit" : "llama"; }
  // input: (B, C, H, W) images for a ViT, (B, T) token ids for a Llama.
  Tensor forward(const Tensor& input) const { return vit ? vit->forward(input) : llama->forward(input); }
  Tensor embed(const Tensor& input) const { return vit ? vit->embed(input) : llama->embed(input); }
  Tensor block(size_t i, const Tensor& x) const { return vit ? vit->block(i, x) : llama->block(i, x); }
  Tensor head(const Tensor& x) const { return vit ? vit->head(x) : llama->head(x); }
  size_t num_blocks() const { return vit ? vit->layers.size() : llama->layers.size(); }
  void visit(const ParamVisitor& f);
  void visit_linears(const LinearVisitor& f);
  std::vector<Tensor> parameters();
  // Moves every parameter and input gather to `d` (tied weights stay tied). Models are
  // built and loaded on the CPU; batches go to device() before the forward.
  void to(Device d);
  Device device() const { return device_; }
  nlohmann::json config_json() const;
  int64_t num_parameters();

 private:
  Device device_ = Device::CPU;
};

// path: a checkpoint folder, or a .safetensors file with config.json beside it.
Model load_checkpoint(const std::string& path);
void save_checkpoint(Model& model, const std::string& dir, const std::map<std::string, std::string>& metadata = {});
// Builds the model a config.json describes and fills it from `weights`; `what` names the
// checkpoint in errors. Used by load_checkpoint and the fuzzers.
Model model_from(const nlohmann::json& config, const SafeTensors& weights, const std::string& what);
// Copies `tensors` (Hugging Face names) into the model's parameters, checking names and shapes.
// "<linear>.input_permutation" (integer, (in)) sets that layer's input gather.
void assign_parameters(Model& model, const SafeTensors& tensors, const std::string& what);

}  // namespace nmperm

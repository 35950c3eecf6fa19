// Hugging Face checkpoints: a folder with config.json, model.safetensors (or shards
// listed in model.safetensors.index.json) and, for vision models, preprocessor_config.json.
// Loading checks every tensor against the architecture: a missing, unexpected or
// mis-shaped tensor is an error naming it. Saving writes each file atomically.
#pragma once
#include <filesystem>
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
  // Decoded images (models/images.h) are resized to size_h x size_w with Pillow's filter
  // `resample` (2 bilinear, 3 bicubic), then center-cropped to crop_h x crop_w.
  bool do_resize = false, do_center_crop = false;
  int64_t size_h = 0, size_w = 0, crop_h = 0, crop_w = 0;
  int resample = 2;
  // The Pillow release whose resize is reproduced: 13 (and later) runs the vertical pass
  // first when the height shrinks more than twice as much as the width; 12 (and earlier,
  // e.g. Debian's 9.4) always runs the horizontal pass first. The two differ by one level
  // on some pixels. Not a checkpoint setting: it follows the Pillow a reference used.
  int pillow = 13;
  double rescale_factor = 1.0 / 255.0;
  std::vector<double> image_mean{0.5}, image_std{0.5};
  static ImagePreprocess from_json(const nlohmann::json& j);
  nlohmann::json to_json() const;
  // images in [0, 1] (raw / 255), (B, C, H, W) -> model input.
  Tensor apply(const Tensor& images01) const;
};

struct Model {
  std::unique_ptr<Network> network;
  ImagePreprocess preprocess;    // image models only
  // Where a loaded model came from, so that an export keeps the source's form.
  std::string source_dir;                            // empty for a fresh model
  std::string source_dtype = "F32";                  // disk dtype of its floating weights
  std::map<std::string, std::string> source_shards;  // tensor -> shard file, for sharded sources

  std::string arch() const { return network->name(); }
  // input: (B, C, H, W) images for an image model, (B, T) token ids for a token model.
  Tensor forward(const Tensor& input) const { return network->forward(input); }
  Tensor embed(const Tensor& input) const { return network->embed(input); }
  Tensor block(size_t i, const Tensor& x) const { return network->block(i, x); }
  Tensor head(const Tensor& x) const { return network->head(x); }
  size_t num_blocks() const { return network->num_blocks(); }
  void visit(const ParamVisitor& f) { network->visit(f); }
  void visit_linears(const LinearVisitor& f) { network->visit_linears(f); }
  // The concrete network, for work that exists for one architecture only (block-by-block
  // loading and scoring of decoders, tests); an error when the model is another.
  template <class T> T& as() const {
    T* t = dynamic_cast<T*>(network.get());
    NMPERM_CHECK(t, "this needs another architecture than the model's ({})", network ? arch() : "none");
    return *t;
  }
  // Keeps every linear layer's weight in `dtype` (bf16/f16 for inference: half the memory,
  // and linear() multiplies in that dtype); a weight shared with another parameter (a tied
  // lm_head) is left as it is. Returns the bytes saved. Such a model no longer trains.
  int64_t store_linear_weights(DType dtype);
  std::vector<Tensor> parameters();
  // Moves every parameter and input gather to `d` (tied weights stay tied). Models are
  // built and loaded on the CPU; batches go to device() before the forward.
  void to(Device d);
  Device device() const { return device_; }
  nlohmann::json config_json() const { return network->config_json(); }
  int64_t num_parameters();

 private:
  Device device_ = Device::CPU;
};

// The files of a checkpoint, opened and checked without reading any weight: config.json
// and every tensor's place in the mapped shards (model.safetensors, or the shards its
// index lists: a missing shard, a tensor the index puts in a shard that lacks it, or a
// shard cut short is an error here, before any work).
struct CheckpointFiles {
  std::string path;  // as given
  std::filesystem::path dir;
  nlohmann::json config;
  std::vector<std::unique_ptr<MappedSafeTensors>> files;
  std::map<std::string, std::pair<const MappedSafeTensors*, const TensorEntry*>> tensors;  // by name
  std::map<std::string, std::string> shards;  // tensor -> shard file, for sharded checkpoints
  std::string float_dtype = "F32";            // disk dtype of its floating weights
  // path: a checkpoint folder, or a .safetensors file with config.json beside it.
  static CheckpointFiles open(const std::string& path);
  const TensorEntry* find(const std::string& name) const;
  Tensor read(const std::string& name) const;  // decoded (BF16/F16 to F32); its pages then released
};

Model load_checkpoint(const std::string& path);  // the whole model in memory (f32)
// "vit", "llama", "mistral" or "qwen2" from model_type or architectures, else an error.
std::string model_type_of(const nlohmann::json& config, const std::string& what);
// A JSON file (config.json, index files); a missing or malformed file is an error naming it.
nlohmann::json read_json(const std::filesystem::path& p);

// The registry of architectures (models/checkpoint.cpp): by config.json (its model_type),
// or by name (Network::name(): TrainConfig's arch, a report's "arch"; an error when
// unknown, find_architecture gives null). Names in registry order: "vit", "llama".
const Architecture& architecture_of(const nlohmann::json& config, const std::string& what);
const Architecture& architecture(const std::string& name);
const Architecture* find_architecture(const std::string& name);
std::vector<std::string> architecture_names();

// Block by block (decoder models): a model with no parameters in memory whose every
// tensor name and shape has been checked against the files; load_block materialises
// block i (f32, on the model's device), free_block drops it; load_tensor reads one
// tensor (embeddings, final norm, lm_head) checked for NaNs, on the model's device.
Model model_shell(const CheckpointFiles& files);
void load_block(Model& model, const CheckpointFiles& files, size_t i);
void free_block(Model& model, size_t i);
Tensor load_tensor(Model& model, const CheckpointFiles& files, const std::string& name);
// nmperm's own form (training checkpoints): f32, one file, input gathers as
// "<linear>.input_permutation" tensors.
void save_checkpoint(Model& model, const std::string& dir, const std::map<std::string, std::string>& metadata = {});

// How a pruned model is exported.
//   Original: a standard Hugging Face folder that transformers, vLLM and lm-eval load
//     unchanged: every gathered layer's weight scattered back to the original input-channel
//     order (so it computes exactly the permuted pruned model with no gather); permutations
//     folded into the previous layer stay folded (also a standard model).
//   Permuted: the weights in the permuted order, where every run of M inputs keeps N (what
//     2:4 kernels want), with their "<linear>.input_permutation" gathers (nmperm loads it).
// Both keep the source's dtype (bf16 stays bf16) and sharding, and copy its tokenizer,
// generation and preprocessor files.
enum class Layout { Original, Permuted };
Layout parse_layout(const std::string& name);  // "original" or "permuted"
void export_checkpoint(Model& model, const std::string& dir, const std::map<std::string, std::string>& metadata,
                       Layout layout);
// A gathered layer's weight with its columns back in the original input-channel order,
// W[:, p[j]] = W'[:, j]: it computes x W^T what the layer computes as x[..., p] W'^T.
Tensor weight_in_original_order(const Linear& l);
// The files of an export beside the weights: config.json (with the source's dtype), the
// source's tokenizer, generation and preprocessor files.
void write_export_files(const Model& model, const std::string& dir);
// Builds the model a config.json describes and fills it from `weights`; `what` names the
// checkpoint in errors. Used by load_checkpoint and the fuzzers.
Model model_from(const nlohmann::json& config, const SafeTensors& weights, const std::string& what);
// Copies `tensors` (Hugging Face names) into the model's parameters, checking names and shapes.
// "<linear>.input_permutation" (integer, (in)) sets that layer's input gather.
void assign_parameters(Model& model, const SafeTensors& tensors, const std::string& what);

}  // namespace nmperm

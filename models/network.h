// The interface every architecture implements (ViT, Llama), so that training, calibration,
// pruning and the CLI work on a model without knowing which one it is, and the checkpoint
// loader's registry (models/checkpoint.cpp) is the one place that maps an architecture's
// name or config.json model_type to its code. Adding an architecture: one file that
// derives from Network and defines an Architecture, plus one registry line.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "models/modules.h"

namespace nmperm {

struct TrainData;  // models/train.h

// What a model reads: (B, C, H, W) images scored against class labels, or (B, T) token ids
// scored against the next tokens. It picks the data, the batches and the metrics.
enum class DataKind { Images, Tokens };

// A permutation site: input channels shared by one or more linear layers (permute/sites.h
// says how a permutation is applied to it).
struct Site {
  std::string name;
  size_t block = 0;                          // encoder/decoder block index
  std::vector<std::string> consumer_names;   // Hugging Face prefixes, e.g. "model.layers.0.self_attn.q_proj"
  std::vector<Linear*> consumers;            // layers reading the channels (pruned)
  std::vector<Linear*> producers;            // layers writing them (rows permuted when folding)
  int64_t channels = 0;
  int64_t head_dim = 0;                      // attention output sites: fold only head-respecting p
  int64_t heads_per_kv = 1;
};

// A site of block `block` read by `consumers` (Hugging Face prefix, layer) and written by
// `producers` (none: its channels come from a norm and can only be gathered).
inline Site make_site(size_t block, std::string name, std::vector<std::pair<std::string, Linear*>> consumers,
                      std::vector<Linear*> producers) {
  Site s;
  s.name = std::move(name);
  s.block = block;
  for (auto& [n, l] : consumers) {
    s.consumer_names.push_back(n);
    s.consumers.push_back(l);
  }
  s.producers = std::move(producers);
  s.channels = s.consumers[0]->in();
  return s;
}

class Network {
 public:
  virtual ~Network() = default;
  // The architecture family: "vit", or "llama" for Llama, Mistral and Qwen2 (TrainConfig's
  // arch, a report's "arch").
  virtual std::string name() const = 0;
  virtual DataKind data_kind() const = 0;
  bool takes_images() const { return data_kind() == DataKind::Images; }
  // input: (B, C, H, W) images or (B, T) token ids -> logits (B, labels) or (B, T, V).
  virtual Tensor forward(const Tensor& input) const = 0;
  // forward() in stages: embed, then every block, then head (learned permutations compare
  // block outputs of the dense and the pruned model).
  virtual Tensor embed(const Tensor& input) const = 0;
  virtual Tensor block(size_t i, const Tensor& x) const = 0;
  virtual Tensor head(const Tensor& x) const = 0;
  virtual size_t num_blocks() const = 0;
  // Parameters and linear layers with their Hugging Face names (checkpoints, optimizers).
  virtual void visit(const ParamVisitor& f) = 0;
  virtual void visit_linears(const LinearVisitor& f) = 0;
  // The permutation sites of block i; the pointers refer into this network.
  virtual std::vector<Site> block_sites(size_t i) = 0;
  virtual nlohmann::json config_json() const = 0;  // its config.json
  virtual double parameter_count() const = 0;      // from the config: a model without its blocks in memory counts too
  // Token models: the longest window (max_position_embeddings) and the vocabulary size.
  virtual int64_t context() const { return 0; }
  virtual int64_t vocab_size() const { return 0; }
  // Image models: the input images' channels.
  virtual int64_t image_channels() const { return 0; }
  // Weights that are another parameter (a tied lm_head): weight name -> the parameter's
  // name. They are not visited, and files may omit them.
  virtual std::map<std::string, std::string> tied_weights() const { return {}; }
  // Makes those weights the parameters again after the parameters were replaced (Model::to).
  virtual void tie_weights() {}

 protected:
  Network() = default;
  Network(const Network&) = default;
  Network& operator=(const Network&) = default;
};

// A config.json read by its architecture: the size it describes, known before anything is
// allocated, and how to build it.
struct NetworkSpec {
  double parameters = 0;
  // gen null: parameters allocated but not initialised (to be loaded).
  std::function<std::unique_ptr<Network>(Generator* gen)> build;
  // Block-by-block work (Architecture::block_by_block): the network without parameter tensors.
  std::function<std::unique_ptr<Network>()> shell;
};

// What the checkpoint loader's registry knows of an architecture.
struct Architecture {
  std::string name;  // Network::name()
  DataKind data;
  bool takes_images() const { return data == DataKind::Images; }
  // Its checkpoints can be worked one block at a time (model_shell, load_block): decoders.
  bool block_by_block = false;
  // config.json, whose model_type (one of the registry's for this architecture) is given.
  NetworkSpec (*read)(const nlohmann::json& config, const std::string& model_type);
  // A fresh network to train: config.json, or the embedded default when it is empty (sized
  // to the data where the data decides: a Llama's vocabulary); gen initialises it.
  std::unique_ptr<Network> (*fresh)(const nlohmann::json& config, const TrainData& data, Generator& gen);
  // True when config.json describes the embedded default (a Llama's vocabulary follows its
  // data); throws when it is not a config of this architecture.
  bool (*embedded_default)(const nlohmann::json& config);
};

}  // namespace nmperm

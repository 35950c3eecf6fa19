// Vision Transformer (Dosovitskiy et al. 2021) as Hugging Face's ViTForImageClassification:
// patch embedding (a stride-P convolution, done as a linear map of flattened patches),
// class token, learned position embeddings, pre-LN encoder blocks with a GELU MLP, a
// final LayerNorm and a linear classifier on the class token.
#pragma once
#include <nlohmann/json.hpp>
#include <vector>

#include "models/network.h"

namespace nmperm {

struct ViTConfig {
  int64_t image_size = 28, patch_size = 4, num_channels = 1;
  int64_t hidden_size = 128, num_hidden_layers = 4, num_attention_heads = 4, intermediate_size = 512;
  int64_t num_labels = 10;
  double layer_norm_eps = 1e-12;  // Hugging Face's ViT default
  // Std of the initial weights, position embeddings and class token. Hugging Face's
  // ViT default is 0.02; this small model learns markedly faster from 0.1 (Fashion-MNIST,
  // 700 steps: 0.831 test accuracy from 0.02, 0.845 from 0.06, 0.855 from 0.1, 0.844 from 0.15).
  double initializer_range = 0.1;
  std::string hidden_act = "gelu";  // "gelu" (erf) or "gelu_new"/"gelu_pytorch_tanh" (tanh form)
  bool qkv_bias = true;

  static ViTConfig from_json(const nlohmann::json& j);  // a Hugging Face config.json
  nlohmann::json to_json() const;
  void validate() const;
  double parameter_count() const;  // without building the model (double: no overflow on absurd configs)
  int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
};

struct ViTLayer {
  Norm ln_before, ln_after;
  Attention attn;
  Linear fc1, fc2;  // intermediate.dense, output.dense
};

struct ViT : Network {
  ViTConfig cfg;
  Tensor patch_weight, patch_bias;  // (C_hidden, C_in, P, P) as stored by Hugging Face, (C_hidden)
  Tensor cls_token, pos_embed;      // (1, 1, C), (1, N + 1, C)
  std::vector<ViTLayer> layers;
  Norm final_norm;
  Linear classifier;

  ViT() = default;
  ViT(const ViTConfig& cfg, Generator& gen);  // fresh initialisation
  std::string name() const override;  // vit_architecture().name
  DataKind data_kind() const override { return DataKind::Images; }
  Tensor forward(const Tensor& images) const override;  // (B, C_in, H, W) -> logits (B, num_labels)
  // forward() in stages: embed, then every encoder block, then head.
  Tensor embed(const Tensor& images) const override;        // -> (B, N + 1, C)
  Tensor block(size_t i, const Tensor& x) const override;   // (B, N + 1, C) -> (B, N + 1, C)
  Tensor head(const Tensor& x) const override;              // -> logits (B, num_labels)
  size_t num_blocks() const override { return layers.size(); }
  void visit(const ParamVisitor& f) override;
  void visit_linears(const LinearVisitor& f) override;
  std::vector<Site> block_sites(size_t i) override;
  nlohmann::json config_json() const override { return cfg.to_json(); }
  double parameter_count() const override { return cfg.parameter_count(); }
  int64_t image_channels() const override { return cfg.num_channels; }
};

const Architecture& vit_architecture();

// Patches of (B, C, H, W) images as rows, in the order of a conv kernel (c, py, px):
// (B, N, C * P * P). Differentiable.
Tensor image_patches(const Tensor& images, int64_t patch);

}  // namespace nmperm

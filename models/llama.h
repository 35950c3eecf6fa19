// Llama-style decoder (Touvron et al. 2023) as Hugging Face's LlamaForCausalLM: token
// embeddings, pre-RMSNorm decoder blocks with causal grouped-query attention and RoPE
// (rotate-half convention), a SwiGLU MLP, a final RMSNorm and an lm_head (optionally tied
// to the embeddings). The same class computes Mistral (no biases; its sliding window is
// honoured by refusing longer windows) and Qwen2 (q/k/v biases, no o_proj bias).
//
// config.json comes in two dialects: the older one (rope_theta and rope_scaling at the top
// level, torch_dtype) and the one transformers 5 writes (rope_parameters holding
// rope_type, rope_theta and the scaling fields; dtype). Every key that changes the
// computation is implemented exactly as transformers computes it, or refused by name;
// keys that do not (token ids, dtype, use_cache, ...) are accepted, and any other key is
// listed in a warning.
#pragma once
#include <nlohmann/json.hpp>
#include <vector>

#include "models/network.h"

namespace nmperm {

// RoPE frequency scaling (transformers' rope_type): default, linear or llama3.
struct RopeScaling {
  std::string type = "default";
  double factor = 1, low_freq_factor = 1, high_freq_factor = 4;  // linear: factor; llama3: all
  int64_t original_max_position_embeddings = 0;                  // llama3
};

struct LlamaConfig {
  std::string model_type = "llama";  // llama, mistral or qwen2
  int64_t vocab_size = 256, hidden_size = 128, intermediate_size = 384;
  int64_t num_hidden_layers = 4, num_attention_heads = 4, num_key_value_heads = 2;
  int64_t max_position_embeddings = 128;
  int64_t head_dim = 0;        // 0: hidden_size / num_attention_heads
  int64_t sliding_window = 0;  // 0: none; else windows longer than this are refused
  double rms_norm_eps = 1e-5, rope_theta = 10000.0, initializer_range = 0.02;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false, mlp_bias = false;
  bool qkv_bias = false, o_bias = false;  // Llama's attention_bias sets both; Qwen2 has q/k/v only
  // The config.json this was read from, written back unchanged (but for its dtype) when
  // the model is saved, so an export keeps every key of its source.
  nlohmann::json source;

  static LlamaConfig from_json(const nlohmann::json& j);
  nlohmann::json to_json() const;
  void validate() const;
  double parameter_count() const;  // without building the model; a tied lm_head counts once
  int64_t dim() const { return head_dim > 0 ? head_dim : hidden_size / num_attention_heads; }
  // The D/2 RoPE inverse frequencies, scaled as rope_scaling says.
  std::vector<double> rope_inv_freq() const;
};

struct LlamaLayer {
  Norm input_norm, post_attn_norm;
  Attention attn;
  Linear gate, up, down;
};

struct Llama : Network {
  LlamaConfig cfg;
  Tensor embed_tokens;  // (V, C)
  std::vector<LlamaLayer> layers;
  Norm final_norm;
  Linear lm_head;  // weight aliases embed_tokens when tied

  Llama() = default;
  Llama(const LlamaConfig& cfg, Generator& gen);
  Llama(const LlamaConfig& cfg, Generator* gen);  // null: parameters allocated, not initialised (to be loaded)
  // The model without any parameter tensors (config and layer settings only), for work that
  // holds one block at a time: make_layer(nullptr) gives a block to load into layers[i].
  static Llama shell(const LlamaConfig& cfg);
  LlamaLayer make_layer(Generator* gen) const;
  std::string name() const override;  // llama_architecture().name
  DataKind data_kind() const override { return DataKind::Tokens; }
  Tensor forward(const Tensor& ids) const override;  // (B, T) int -> logits (B, T, V)
  // forward() in stages: embed, then every decoder block, then head.
  Tensor embed(const Tensor& ids) const override;          // -> (B, T, C)
  Tensor block(size_t i, const Tensor& x) const override;  // (B, T, C) -> (B, T, C)
  Tensor head(const Tensor& x) const override;             // -> logits (B, T, V)
  size_t num_blocks() const override { return layers.size(); }
  // Parameters with their Hugging Face names; visit_block walks one block's.
  void visit(const ParamVisitor& f) override;
  void visit_linears(const LinearVisitor& f) override;  // the lm_head only when untied
  void visit_block(size_t i, const ParamVisitor& f);
  void visit_block_linears(size_t i, const LinearVisitor& f);
  std::vector<Site> block_sites(size_t i) override;
  nlohmann::json config_json() const override { return cfg.to_json(); }
  double parameter_count() const override { return cfg.parameter_count(); }  // a tied lm_head counts once
  int64_t context() const override { return cfg.max_position_embeddings; }
  int64_t vocab_size() const override { return cfg.vocab_size; }
  std::map<std::string, std::string> tied_weights() const override;
  void tie_weights() override;
};

// Llama, Mistral and Qwen2 (model_type llama, mistral, qwen2).
const Architecture& llama_architecture();

}  // namespace nmperm

// Llama-style decoder (Touvron et al. 2023) as Hugging Face's LlamaForCausalLM: token
// embeddings, pre-RMSNorm decoder blocks with causal grouped-query attention and RoPE
// (rotate-half convention), a SwiGLU MLP, a final RMSNorm and an lm_head (optionally tied
// to the embeddings).
#pragma once
#include <nlohmann/json.hpp>
#include <vector>

#include "models/modules.h"

namespace nmperm {

struct LlamaConfig {
  int64_t vocab_size = 256, hidden_size = 128, intermediate_size = 384;
  int64_t num_hidden_layers = 4, num_attention_heads = 4, num_key_value_heads = 2;
  int64_t max_position_embeddings = 128;
  double rms_norm_eps = 1e-5, rope_theta = 10000.0, initializer_range = 0.02;
  bool tie_word_embeddings = false, attention_bias = false, mlp_bias = false;

  static LlamaConfig from_json(const nlohmann::json& j);
  nlohmann::json to_json() const;
  void validate() const;
  double parameter_count() const;  // without building the model; a tied lm_head counts once
};

struct LlamaLayer {
  Norm input_norm, post_attn_norm;
  Attention attn;
  Linear gate, up, down;
};

struct Llama {
  LlamaConfig cfg;
  Tensor embed_tokens;  // (V, C)
  std::vector<LlamaLayer> layers;
  Norm final_norm;
  Linear lm_head;  // weight aliases embed_tokens when tied

  Llama() = default;
  Llama(const LlamaConfig& cfg, Generator& gen);
  Tensor forward(const Tensor& ids) const;  // (B, T) int -> logits (B, T, V)
  // forward() in stages: embed, then every decoder block, then head.
  Tensor embed(const Tensor& ids) const;           // -> (B, T, C)
  Tensor block(size_t i, const Tensor& x) const;   // (B, T, C) -> (B, T, C)
  Tensor head(const Tensor& x) const;              // -> logits (B, T, V)
  void visit(const ParamVisitor& f);
  void visit_linears(const LinearVisitor& f);  // the lm_head only when untied
};

}  // namespace nmperm

#include "models/llama.h"

namespace nmperm {

LlamaConfig LlamaConfig::from_json(const nlohmann::json& j) {
  LlamaConfig c;
  try {
    json_get(j, "vocab_size", c.vocab_size);
    json_get(j, "hidden_size", c.hidden_size);
    json_get(j, "intermediate_size", c.intermediate_size);
    json_get(j, "num_hidden_layers", c.num_hidden_layers);
    json_get(j, "num_attention_heads", c.num_attention_heads);
    c.num_key_value_heads = c.num_attention_heads;
    json_get(j, "num_key_value_heads", c.num_key_value_heads);
    json_get(j, "max_position_embeddings", c.max_position_embeddings);
    json_get(j, "rms_norm_eps", c.rms_norm_eps);
    json_get(j, "rope_theta", c.rope_theta);
    json_get(j, "initializer_range", c.initializer_range);
    json_get(j, "tie_word_embeddings", c.tie_word_embeddings);
    json_get(j, "attention_bias", c.attention_bias);
    json_get(j, "mlp_bias", c.mlp_bias);
    std::string act = "silu";
    json_get(j, "hidden_act", act);
    NMPERM_CHECK(act == "silu", "Llama config.json: hidden_act '{}' is not supported (silu)", act);
    NMPERM_CHECK(!j.contains("rope_scaling") || j["rope_scaling"].is_null(),
                 "Llama config.json: rope_scaling is not supported");
    if (j.contains("head_dim") && !j["head_dim"].is_null())
      NMPERM_CHECK(j["head_dim"].get<int64_t>() * c.num_attention_heads == c.hidden_size,
                   "Llama config.json: head_dim other than hidden_size / num_attention_heads is not supported");
  } catch (const nlohmann::json::exception& e) {
    NMPERM_FAIL("Llama config.json: {}", e.what());
  }
  c.validate();
  return c;
}

nlohmann::json LlamaConfig::to_json() const {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", vocab_size},
          {"hidden_size", hidden_size},
          {"intermediate_size", intermediate_size},
          {"num_hidden_layers", num_hidden_layers},
          {"num_attention_heads", num_attention_heads},
          {"num_key_value_heads", num_key_value_heads},
          {"max_position_embeddings", max_position_embeddings},
          {"rms_norm_eps", rms_norm_eps},
          {"rope_theta", rope_theta},
          {"initializer_range", initializer_range},
          {"tie_word_embeddings", tie_word_embeddings},
          {"attention_bias", attention_bias},
          {"mlp_bias", mlp_bias},
          {"hidden_act", "silu"},
          {"rope_scaling", nullptr},
          {"torch_dtype", "float32"}};
}

void LlamaConfig::validate() const {
  for (auto [key, v] : {std::pair{"vocab_size", vocab_size}, {"hidden_size", hidden_size},
                        {"intermediate_size", intermediate_size}, {"num_hidden_layers", num_hidden_layers},
                        {"num_attention_heads", num_attention_heads}, {"num_key_value_heads", num_key_value_heads},
                        {"max_position_embeddings", max_position_embeddings}})
    NMPERM_CHECK(v < (int64_t(1) << 31), "Llama config: {} {} is out of range", key, v);
  NMPERM_CHECK(std::isfinite(rms_norm_eps) && rms_norm_eps >= 0 && std::isfinite(rope_theta) && rope_theta > 0,
               "Llama config: rms_norm_eps must be finite and >= 0, rope_theta finite and > 0");
  NMPERM_CHECK(vocab_size > 0 && hidden_size > 0 && intermediate_size > 0 && num_hidden_layers >= 0 &&
                   max_position_embeddings > 0,
               "Llama config: sizes must be positive");
  NMPERM_CHECK(num_attention_heads > 0 && hidden_size % num_attention_heads == 0 &&
                   (hidden_size / num_attention_heads) % 2 == 0,
               "Llama config: hidden_size {} must split into {} heads of even size", hidden_size, num_attention_heads);
  NMPERM_CHECK(num_key_value_heads > 0 && num_attention_heads % num_key_value_heads == 0,
               "Llama config: num_attention_heads {} is not a multiple of num_key_value_heads {}", num_attention_heads,
               num_key_value_heads);
}

double LlamaConfig::parameter_count() const {
  double C = double(hidden_size), I = double(intermediate_size), V = double(vocab_size);
  double D = double(hidden_size / num_attention_heads), Q = double(num_attention_heads) * D,
         KV = double(num_key_value_heads) * D;
  double per_layer = C * (Q + 2 * KV) + Q * C + (attention_bias ? Q + 2 * KV + C : 0)  // q, k, v, o
                     + 3 * C * I + (mlp_bias ? 2 * I + C : 0)                          // gate, up, down
                     + 2 * C;                                                          // two RMSNorms
  return V * C + double(num_hidden_layers) * per_layer + C + (tie_word_embeddings ? 0 : V * C);
}

Llama::Llama(const LlamaConfig& c, Generator& gen) : cfg(c) {
  cfg.validate();
  int64_t C = c.hidden_size, D = C / c.num_attention_heads;
  double sd = c.initializer_range;
  embed_tokens = normal_tensor({c.vocab_size, C}, sd, gen);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    LlamaLayer l;
    l.input_norm = make_norm(C, c.rms_norm_eps, true);
    l.post_attn_norm = make_norm(C, c.rms_norm_eps, true);
    l.attn.q = make_linear(C, c.num_attention_heads * D, c.attention_bias, sd, gen);
    l.attn.k = make_linear(C, c.num_key_value_heads * D, c.attention_bias, sd, gen);
    l.attn.v = make_linear(C, c.num_key_value_heads * D, c.attention_bias, sd, gen);
    l.attn.o = make_linear(c.num_attention_heads * D, C, c.attention_bias, sd, gen);
    l.attn.heads = c.num_attention_heads;
    l.attn.kv_heads = c.num_key_value_heads;
    l.attn.causal = true;
    l.attn.rope = true;
    l.attn.rope_theta = c.rope_theta;
    l.gate = make_linear(C, c.intermediate_size, c.mlp_bias, sd, gen);
    l.up = make_linear(C, c.intermediate_size, c.mlp_bias, sd, gen);
    l.down = make_linear(c.intermediate_size, C, c.mlp_bias, sd, gen);
    layers.push_back(std::move(l));
  }
  final_norm = make_norm(C, c.rms_norm_eps, true);
  lm_head.weight = c.tie_word_embeddings ? embed_tokens : normal_tensor({c.vocab_size, C}, sd, gen);
}

Tensor Llama::embed(const Tensor& ids) const {
  NMPERM_CHECK(ids.ndim() == 2 && !is_floating(ids.dtype()), "Llama: expects (B, T) integer token ids, got {}",
               describe(ids));
  NMPERM_CHECK(ids.shape(1) <= cfg.max_position_embeddings, "Llama: {} tokens exceed max_position_embeddings {}",
               ids.shape(1), cfg.max_position_embeddings);
  return embedding(embed_tokens, ids);  // (B, T, C)
}

Tensor Llama::block(size_t i, const Tensor& x) const {
  const LlamaLayer& l = layers.at(i);
  Tensor h = add(x, l.attn(l.input_norm(x)));
  Tensor n = l.post_attn_norm(h);
  return add(h, l.down(mul(silu(l.gate(n)), l.up(n))));
}

Tensor Llama::head(const Tensor& x) const { return lm_head(final_norm(x)); }

Tensor Llama::forward(const Tensor& ids) const {
  Tensor x = embed(ids);
  for (size_t i = 0; i < layers.size(); ++i) x = block(i, x);
  return head(x);
}

void Llama::visit_linears(const LinearVisitor& f) {
  for (size_t i = 0; i < layers.size(); ++i) {
    std::string p = fmt::format("model.layers.{}.", i);
    LlamaLayer& l = layers[i];
    f(p + "self_attn.q_proj", l.attn.q);
    f(p + "self_attn.k_proj", l.attn.k);
    f(p + "self_attn.v_proj", l.attn.v);
    f(p + "self_attn.o_proj", l.attn.o);
    f(p + "mlp.gate_proj", l.gate);
    f(p + "mlp.up_proj", l.up);
    f(p + "mlp.down_proj", l.down);
  }
  if (!cfg.tie_word_embeddings) f("lm_head", lm_head);
}

void Llama::visit(const ParamVisitor& f) {
  f("model.embed_tokens.weight", embed_tokens);
  for (size_t i = 0; i < layers.size(); ++i) {
    std::string p = fmt::format("model.layers.{}.", i);
    layers[i].input_norm.visit(p + "input_layernorm", f);
    layers[i].post_attn_norm.visit(p + "post_attention_layernorm", f);
  }
  final_norm.visit("model.norm", f);
  visit_linears([&](const std::string& prefix, Linear& l) { l.visit(prefix, f); });
}

}  // namespace nmperm

#include "models/llama.h"

#include <cmath>
#include <set>

#include "kernels/rope.h"
#include "models/train.h"

namespace nmperm {

namespace {

// config.json keys that do not change what the model computes in inference or pruning.
const std::set<std::string> kInertKeys = {
    "architectures", "transformers_version", "torch_dtype", "dtype", "bos_token_id", "eos_token_id",
    "pad_token_id", "use_cache", "initializer_range", "pretraining_tp", "_name_or_path", "return_dict",
    "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16", "tokenizer_class", "id2label",
    "label2id", "problem_type", "is_encoder_decoder", "is_decoder", "tie_encoder_decoder", "chunk_size_feed_forward",
    "attention_dropout", "max_window_layers", "use_sliding_window", "layer_types"};

// rope_parameters (transformers 5) or the older rope_theta + rope_scaling, as transformers'
// rope_init_fn computes them (modeling_rope_utils.py): default, linear, llama3.
void read_rope(const nlohmann::json& j, LlamaConfig& c) {
  json_get(j, "rope_theta", c.rope_theta);
  const char* where = j.contains("rope_parameters") && !j["rope_parameters"].is_null() ? "rope_parameters"
                      : j.contains("rope_scaling") && !j["rope_scaling"].is_null() ? "rope_scaling"
                                                                                    : nullptr;
  if (!where) return;
  const nlohmann::json& r = j[where];
  NMPERM_CHECK(r.is_object(), "{} must be an object, got {}", where, r.dump());
  RopeScaling& s = c.rope_scaling;
  json_get(r, "type", s.type);  // the older name of rope_type
  json_get(r, "rope_type", s.type);
  json_get(r, "rope_theta", c.rope_theta);
  std::set<std::string> fields;
  if (s.type == "linear") fields = {"factor"};
  else if (s.type == "llama3") fields = {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"};
  else NMPERM_CHECK(s.type == "default", "{}.rope_type '{}' is not supported (default, linear, llama3)", where, s.type);
  for (auto& [k, v] : r.items()) {
    if (k == "type" || k == "rope_type" || k == "rope_theta" || v.is_null()) continue;
    if (k == "partial_rotary_factor") {
      NMPERM_CHECK(v.is_number() && v.get<double>() == 1.0, "{}.partial_rotary_factor {} is not supported (1)", where,
                   v.dump());
      continue;
    }
    NMPERM_CHECK(fields.count(k), "{}.{} is not supported for rope_type '{}' (it would change the RoPE)", where, k,
                 s.type);
  }
  for (const std::string& k : fields) NMPERM_CHECK(r.contains(k), "{}: rope_type '{}' needs '{}'", where, s.type, k);
  json_get(r, "factor", s.factor);
  json_get(r, "low_freq_factor", s.low_freq_factor);
  json_get(r, "high_freq_factor", s.high_freq_factor);
  json_get(r, "original_max_position_embeddings", s.original_max_position_embeddings);
  NMPERM_CHECK(std::isfinite(s.factor) && s.factor > 0, "{}.factor must be positive, got {}", where, s.factor);
  if (s.type == "llama3")
    NMPERM_CHECK(s.high_freq_factor > s.low_freq_factor && s.low_freq_factor > 0 &&
                     s.original_max_position_embeddings > 0,
                 "{}: llama3 needs high_freq_factor > low_freq_factor > 0 and original_max_position_embeddings > 0",
                 where);
}

}  // namespace

LlamaConfig LlamaConfig::from_json(const nlohmann::json& j) {
  LlamaConfig c;
  try {
    NMPERM_CHECK(j.is_object(), "must be a JSON object");
    json_get(j, "model_type", c.model_type);
    NMPERM_CHECK(c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2",
                 "model_type '{}' is not supported (llama, mistral, qwen2)", c.model_type);
    json_get(j, "vocab_size", c.vocab_size);
    json_get(j, "hidden_size", c.hidden_size);
    json_get(j, "intermediate_size", c.intermediate_size);
    json_get(j, "num_hidden_layers", c.num_hidden_layers);
    json_get(j, "num_attention_heads", c.num_attention_heads);
    c.num_key_value_heads = c.num_attention_heads;
    json_get(j, "num_key_value_heads", c.num_key_value_heads);
    json_get(j, "max_position_embeddings", c.max_position_embeddings);
    json_get(j, "head_dim", c.head_dim);
    json_get(j, "rms_norm_eps", c.rms_norm_eps);
    json_get(j, "initializer_range", c.initializer_range);
    json_get(j, "tie_word_embeddings", c.tie_word_embeddings);
    read_rope(j, c);
    bool attention_bias = false;
    json_get(j, "attention_bias", attention_bias);
    json_get(j, "mlp_bias", c.mlp_bias);
    if (c.model_type == "qwen2") {  // Qwen2Attention: q/k/v with bias, o_proj without
      NMPERM_CHECK(!j.contains("attention_bias") && !j.contains("mlp_bias"),
                   "attention_bias / mlp_bias are not Qwen2 keys (its q/k/v always have biases)");
      c.qkv_bias = true;
    } else if (c.model_type == "mistral") {
      NMPERM_CHECK(!attention_bias && !c.mlp_bias, "Mistral has no attention_bias / mlp_bias");
    } else {
      c.qkv_bias = c.o_bias = attention_bias;
    }
    // Sliding-window attention equals full attention on windows no longer than it: nmperm
    // honours it by refusing longer windows (Llama::embed).
    bool sliding = c.model_type == "mistral";
    if (c.model_type == "qwen2") json_get(j, "use_sliding_window", sliding);
    if (j.contains("layer_types") && j["layer_types"].is_array())
      for (const auto& t : j["layer_types"]) {
        NMPERM_CHECK(t == "full_attention" || t == "sliding_attention",
                     "layer_types entry {} is not supported (full_attention, sliding_attention)", t.dump());
        sliding = sliding || t == "sliding_attention";
      }
    if (sliding) json_get(j, "sliding_window", c.sliding_window);
    std::string act = "silu";
    json_get(j, "hidden_act", act);
    NMPERM_CHECK(act == "silu", "hidden_act '{}' is not supported (silu)", act);
    NMPERM_CHECK(!j.contains("quantization_config"), "quantized checkpoints (quantization_config) are not supported");
    double dropout = 0;
    json_get(j, "attention_dropout", dropout);
    if (dropout > 0) warn(fmt::format("config.json: attention_dropout {} is not applied (nmperm uses no dropout)", dropout));
    std::vector<std::string> unknown;
    static const std::set<std::string> used = {
        "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "max_position_embeddings", "head_dim", "rms_norm_eps", "tie_word_embeddings",
        "rope_theta", "rope_scaling", "rope_parameters", "attention_bias", "mlp_bias", "sliding_window", "hidden_act",
        "quantization_config"};
    for (auto& [k, v] : j.items())
      if (!used.count(k) && !kInertKeys.count(k)) unknown.push_back(k);
    if (!unknown.empty())
      warn(fmt::format("config.json: keys nmperm does not know, ignored: {}", fmt::join(unknown, ", ")));
  } catch (const nlohmann::json::exception& e) {
    NMPERM_FAIL("Llama config.json: {}", e.what());
  } catch (const Error& e) {
    throw Error(std::string("Llama config.json: ") + e.what());  // its place is already in the message
  }
  c.source = j;
  c.validate();
  return c;
}

nlohmann::json LlamaConfig::to_json() const {
  if (!source.is_null()) return source;
  nlohmann::json j = {{"architectures", {"LlamaForCausalLM"}},
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
                      {"attention_bias", qkv_bias},
                      {"mlp_bias", mlp_bias},
                      {"hidden_act", "silu"},
                      {"rope_scaling", nullptr},
                      {"torch_dtype", "float32"}};
  if (head_dim > 0) j["head_dim"] = head_dim;
  return j;
}

std::vector<double> LlamaConfig::rope_inv_freq() const {
  std::vector<double> f = kernels::rope_inv_freq(rope_theta, dim());
  const RopeScaling& s = rope_scaling;
  if (s.type == "linear") {
    for (double& x : f) x /= s.factor;
  } else if (s.type == "llama3") {  // transformers' _compute_llama3_parameters
    const double pi = std::acos(-1.0), old = double(s.original_max_position_embeddings);
    double low_wavelen = old / s.low_freq_factor, high_wavelen = old / s.high_freq_factor;
    for (double& x : f) {
      double wavelen = 2 * pi / x;
      if (wavelen > low_wavelen) {
        x /= s.factor;
      } else if (wavelen >= high_wavelen) {  // medium: interpolate between scaled and unscaled
        double smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        x = (1 - smooth) * x / s.factor + smooth * x;
      }
    }
  }
  return f;
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
  NMPERM_CHECK(num_attention_heads > 0 && head_dim >= 0 && head_dim < (int64_t(1) << 20) && sliding_window >= 0,
               "Llama config: num_attention_heads, head_dim and sliding_window out of range");
  NMPERM_CHECK(head_dim > 0 || hidden_size % num_attention_heads == 0,
               "Llama config: hidden_size {} does not split into {} heads (and no head_dim is given)", hidden_size,
               num_attention_heads);
  NMPERM_CHECK(dim() % 2 == 0, "Llama config: the head size {} must be even for RoPE", dim());
  NMPERM_CHECK(num_key_value_heads > 0 && num_attention_heads % num_key_value_heads == 0,
               "Llama config: num_attention_heads {} is not a multiple of num_key_value_heads {}", num_attention_heads,
               num_key_value_heads);
}

double LlamaConfig::parameter_count() const {
  double C = double(hidden_size), I = double(intermediate_size), V = double(vocab_size);
  double D = double(dim()), Q = double(num_attention_heads) * D, KV = double(num_key_value_heads) * D;
  double per_layer = C * (Q + 2 * KV) + Q * C + (qkv_bias ? Q + 2 * KV : 0) + (o_bias ? C : 0)  // q, k, v, o
                     + 3 * C * I + (mlp_bias ? 2 * I + C : 0)                          // gate, up, down
                     + 2 * C;                                                          // two RMSNorms
  return V * C + double(num_hidden_layers) * per_layer + C + (tie_word_embeddings ? 0 : V * C);
}

Llama::Llama(const LlamaConfig& c, Generator& gen) : Llama(c, &gen) {}

Llama::Llama(const LlamaConfig& c, Generator* gen) : cfg(c) {
  cfg.validate();
  embed_tokens = normal_tensor({c.vocab_size, c.hidden_size}, c.initializer_range, gen);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers.push_back(make_layer(gen));
  final_norm = make_norm(c.hidden_size, c.rms_norm_eps, true);
  lm_head.weight = c.tie_word_embeddings ? embed_tokens : normal_tensor({c.vocab_size, c.hidden_size}, c.initializer_range, gen);
}

Llama Llama::shell(const LlamaConfig& c) {
  Llama m;
  m.cfg = c;
  m.cfg.validate();
  m.layers.resize(size_t(c.num_hidden_layers));
  return m;
}

LlamaLayer Llama::make_layer(Generator* gen) const {
  const LlamaConfig& c = cfg;
  int64_t C = c.hidden_size, D = c.dim();
  double sd = c.initializer_range;
  LlamaLayer l;
  l.input_norm = make_norm(C, c.rms_norm_eps, true);
  l.post_attn_norm = make_norm(C, c.rms_norm_eps, true);
  l.attn.q = make_linear(C, c.num_attention_heads * D, c.qkv_bias, sd, gen);
  l.attn.k = make_linear(C, c.num_key_value_heads * D, c.qkv_bias, sd, gen);
  l.attn.v = make_linear(C, c.num_key_value_heads * D, c.qkv_bias, sd, gen);
  l.attn.o = make_linear(c.num_attention_heads * D, C, c.o_bias, sd, gen);
  l.attn.heads = c.num_attention_heads;
  l.attn.kv_heads = c.num_key_value_heads;
  l.attn.causal = true;
  l.attn.rope_inv_freq = c.rope_inv_freq();
  l.gate = make_linear(C, c.intermediate_size, c.mlp_bias, sd, gen);
  l.up = make_linear(C, c.intermediate_size, c.mlp_bias, sd, gen);
  l.down = make_linear(c.intermediate_size, C, c.mlp_bias, sd, gen);
  return l;
}

Tensor Llama::embed(const Tensor& ids) const {
  NMPERM_CHECK(ids.ndim() == 2 && !is_floating(ids.dtype()), "Llama: expects (B, T) integer token ids, got {}",
               describe(ids));
  NMPERM_CHECK(ids.shape(1) <= cfg.max_position_embeddings, "Llama: {} tokens exceed max_position_embeddings {}",
               ids.shape(1), cfg.max_position_embeddings);
  NMPERM_CHECK(cfg.sliding_window == 0 || ids.shape(1) <= cfg.sliding_window,
               "Llama: {} tokens exceed the sliding_window {} (sliding-window attention is computed only for windows "
               "that fit in it; use a shorter --seqlen)",
               ids.shape(1), cfg.sliding_window);
  return embedding(embed_tokens, ids);  // (B, T, C)
}

Tensor Llama::block(size_t i, const Tensor& x) const {
  const LlamaLayer& l = layers.at(i);
  Tensor h = add(x, l.attn(l.input_norm(x)));
  Tensor n = l.post_attn_norm(h);
  return add(h, l.down(swiglu(l.gate(n), l.up(n))));
}

Tensor Llama::head(const Tensor& x) const { return lm_head(final_norm(x)); }

Tensor Llama::forward(const Tensor& ids) const {
  Tensor x = embed(ids);
  for (size_t i = 0; i < layers.size(); ++i) x = block(i, x);
  return head(x);
}

void Llama::visit_block_linears(size_t i, const LinearVisitor& f) {
  std::string p = fmt::format("model.layers.{}.", i);
  LlamaLayer& l = layers.at(i);
  f(p + "self_attn.q_proj", l.attn.q);
  f(p + "self_attn.k_proj", l.attn.k);
  f(p + "self_attn.v_proj", l.attn.v);
  f(p + "self_attn.o_proj", l.attn.o);
  f(p + "mlp.gate_proj", l.gate);
  f(p + "mlp.up_proj", l.up);
  f(p + "mlp.down_proj", l.down);
}

void Llama::visit_block(size_t i, const ParamVisitor& f) {
  std::string p = fmt::format("model.layers.{}.", i);
  layers.at(i).input_norm.visit(p + "input_layernorm", f);
  layers.at(i).post_attn_norm.visit(p + "post_attention_layernorm", f);
  visit_block_linears(i, [&](const std::string& prefix, Linear& l) { l.visit(prefix, f); });
}

void Llama::visit_linears(const LinearVisitor& f) {
  for (size_t i = 0; i < layers.size(); ++i) visit_block_linears(i, f);
  if (!cfg.tie_word_embeddings) f("lm_head", lm_head);
}

// The order (all norms, then all linears) is the optimizer's and the files' order.
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

std::map<std::string, std::string> Llama::tied_weights() const {
  if (!cfg.tie_word_embeddings) return {};
  return {{"lm_head.weight", "model.embed_tokens.weight"}};
}

void Llama::tie_weights() {
  if (cfg.tie_word_embeddings) lm_head.weight = embed_tokens;
}

// The sites of a decoder block (permute/sites.h): q/k/v and gate/up read an RMSNorm's
// output (gathered); o_proj reads the values' channels, down_proj the product
// SiLU(gate) * up (folded into their rows).
std::vector<Site> Llama::block_sites(size_t i) {
  LlamaLayer& l = layers.at(i);
  std::string p = fmt::format("model.layers.{}.", i);
  std::vector<Site> sites;
  sites.push_back(make_site(
      i, p + "self_attn.qkv_proj",
      {{p + "self_attn.q_proj", &l.attn.q}, {p + "self_attn.k_proj", &l.attn.k}, {p + "self_attn.v_proj", &l.attn.v}},
      {}));
  sites.push_back(make_site(i, p + "self_attn.o_proj", {{p + "self_attn.o_proj", &l.attn.o}}, {&l.attn.v}));
  sites.back().head_dim = l.attn.q.out() / l.attn.heads;
  sites.back().heads_per_kv = l.attn.heads / l.attn.kv_heads;
  sites.push_back(
      make_site(i, p + "mlp.gate_up_proj", {{p + "mlp.gate_proj", &l.gate}, {p + "mlp.up_proj", &l.up}}, {}));
  sites.push_back(make_site(i, p + "mlp.down_proj", {{p + "mlp.down_proj", &l.down}}, {&l.gate, &l.up}));
  return sites;
}

namespace {

NetworkSpec read_llama(const nlohmann::json& config, const std::string& model_type) {
  nlohmann::json c = config;
  c["model_type"] = model_type;  // from architectures when config.json has no model_type
  LlamaConfig l = LlamaConfig::from_json(c);
  l.source = config;
  NetworkSpec s;
  s.parameters = l.parameter_count();
  s.build = [l](Generator* gen) { return std::unique_ptr<Network>(std::make_unique<Llama>(l, gen)); };
  s.shell = [l] { return std::unique_ptr<Network>(std::make_unique<Llama>(Llama::shell(l))); };
  return s;
}

std::unique_ptr<Network> fresh_llama(const nlohmann::json& config, const TrainData& data, Generator& gen) {
  // The embedded default: bytes, hidden 128, 4 layers, 4 heads / 2 kv heads, MLP 384, context 128.
  LlamaConfig lc = config.empty() ? LlamaConfig{} : LlamaConfig::from_json(config);
  if (config.empty()) lc.vocab_size = std::max<int64_t>(lc.vocab_size, data.tokens.vocab);
  return std::make_unique<Llama>(lc, gen);
}

bool llama_embedded_default(const nlohmann::json& saved) {
  LlamaConfig want;
  want.vocab_size = LlamaConfig::from_json(saved).vocab_size;
  return LlamaConfig::from_json(saved).to_json() == want.to_json();
}

}  // namespace

std::string Llama::name() const { return llama_architecture().name; }

const Architecture& llama_architecture() {
  static const Architecture a{.name = "llama",
                              .data = DataKind::Tokens,
                              .block_by_block = true,
                              .read = read_llama,
                              .fresh = fresh_llama,
                              .embedded_default = llama_embedded_default};
  return a;
}

}  // namespace nmperm

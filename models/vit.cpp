#include "models/vit.h"

#include <cmath>

#include "models/train.h"

namespace nmperm {

ViTConfig ViTConfig::from_json(const nlohmann::json& j) {
  ViTConfig c;
  try {
    json_get(j, "image_size", c.image_size);
    json_get(j, "patch_size", c.patch_size);
    json_get(j, "num_channels", c.num_channels);
    json_get(j, "hidden_size", c.hidden_size);
    json_get(j, "num_hidden_layers", c.num_hidden_layers);
    json_get(j, "num_attention_heads", c.num_attention_heads);
    json_get(j, "intermediate_size", c.intermediate_size);
    json_get(j, "layer_norm_eps", c.layer_norm_eps);
    json_get(j, "initializer_range", c.initializer_range);
    json_get(j, "hidden_act", c.hidden_act);
    json_get(j, "qkv_bias", c.qkv_bias);
    if (j.contains("id2label") && j["id2label"].is_object()) c.num_labels = int64_t(j["id2label"].size());
    json_get(j, "num_labels", c.num_labels);
  } catch (const nlohmann::json::exception& e) {
    NMPERM_FAIL("ViT config.json: {}", e.what());
  }
  c.validate();
  return c;
}

nlohmann::json ViTConfig::to_json() const {
  nlohmann::json id2label = nlohmann::json::object(), label2id = nlohmann::json::object();
  for (int64_t i = 0; i < num_labels; ++i) {
    id2label[std::to_string(i)] = fmt::format("LABEL_{}", i);
    label2id[fmt::format("LABEL_{}", i)] = i;
  }
  return {{"architectures", {"ViTForImageClassification"}},
          {"model_type", "vit"},
          {"image_size", image_size},
          {"patch_size", patch_size},
          {"num_channels", num_channels},
          {"hidden_size", hidden_size},
          {"num_hidden_layers", num_hidden_layers},
          {"num_attention_heads", num_attention_heads},
          {"intermediate_size", intermediate_size},
          {"hidden_act", hidden_act},
          {"layer_norm_eps", layer_norm_eps},
          {"initializer_range", initializer_range},
          {"qkv_bias", qkv_bias},
          {"hidden_dropout_prob", 0.0},
          {"attention_probs_dropout_prob", 0.0},
          {"encoder_stride", patch_size},
          {"id2label", id2label},
          {"label2id", label2id},
          {"torch_dtype", "float32"}};
}

void ViTConfig::validate() const {
  for (auto [key, v] : {std::pair{"image_size", image_size}, {"patch_size", patch_size}, {"num_channels", num_channels},
                        {"hidden_size", hidden_size}, {"num_hidden_layers", num_hidden_layers},
                        {"num_attention_heads", num_attention_heads}, {"intermediate_size", intermediate_size},
                        {"num_labels", num_labels}})
    NMPERM_CHECK(v < (int64_t(1) << 31), "ViT config: {} {} is out of range", key, v);
  NMPERM_CHECK(image_size > 0 && patch_size > 0 && image_size % patch_size == 0,
               "ViT config: image_size {} must be a positive multiple of patch_size {}", image_size, patch_size);
  NMPERM_CHECK(num_channels > 0 && hidden_size > 0 && num_hidden_layers >= 0 && intermediate_size > 0 && num_labels > 0,
               "ViT config: sizes must be positive");
  NMPERM_CHECK(num_attention_heads > 0 && hidden_size % num_attention_heads == 0,
               "ViT config: hidden_size {} is not a multiple of num_attention_heads {}", hidden_size, num_attention_heads);
  NMPERM_CHECK(hidden_act == "gelu" || hidden_act == "gelu_new" || hidden_act == "gelu_pytorch_tanh",
               "ViT config: hidden_act '{}' is not supported (gelu, gelu_new, gelu_pytorch_tanh)", hidden_act);
}

double ViTConfig::parameter_count() const {
  double C = double(hidden_size), I = double(intermediate_size), P = double(patch_size), L = double(num_labels);
  double per_layer = 4 * C * C + (qkv_bias ? 3 * C : 0) + C   // q, k, v, attention output
                     + 2 * C * I + I + C                       // intermediate, output
                     + 4 * C;                                  // two LayerNorms
  double patches = double(image_size / patch_size) * double(image_size / patch_size);
  return C * double(num_channels) * P * P + C + C + (patches + 1) * C + double(num_hidden_layers) * per_layer +
         2 * C + C * L + L;
}

ViT::ViT(const ViTConfig& c, Generator& gen) : cfg(c) {
  cfg.validate();
  int64_t C = c.hidden_size, P = c.patch_size;
  double sd = c.initializer_range;
  patch_weight = normal_tensor({C, c.num_channels, P, P}, sd, gen);
  patch_bias = zeros({C}).set_requires_grad();
  cls_token = normal_tensor({1, 1, C}, sd, gen);
  pos_embed = normal_tensor({1, c.num_patches() + 1, C}, sd, gen);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    ViTLayer l;
    l.ln_before = make_norm(C, c.layer_norm_eps, false);
    l.ln_after = make_norm(C, c.layer_norm_eps, false);
    l.attn.q = make_linear(C, C, c.qkv_bias, sd, gen);
    l.attn.k = make_linear(C, C, c.qkv_bias, sd, gen);
    l.attn.v = make_linear(C, C, c.qkv_bias, sd, gen);
    l.attn.o = make_linear(C, C, true, sd, gen);
    l.attn.heads = l.attn.kv_heads = c.num_attention_heads;
    l.fc1 = make_linear(C, c.intermediate_size, true, sd, gen);
    l.fc2 = make_linear(c.intermediate_size, C, true, sd, gen);
    layers.push_back(std::move(l));
  }
  final_norm = make_norm(C, c.layer_norm_eps, false);
  classifier = make_linear(C, c.num_labels, true, sd, gen);
}

Tensor image_patches(const Tensor& images, int64_t P) {
  int64_t B = images.shape(0), C = images.shape(1), H = images.shape(2), W = images.shape(3);
  Tensor x = reshape(images, {B, C, H / P, P, W / P, P});
  x = permute(x, {0, 2, 4, 1, 3, 5});  // (B, H/P, W/P, C, P, P)
  return reshape(x, {B, (H / P) * (W / P), C * P * P});
}

Tensor ViT::embed(const Tensor& images) const {
  NMPERM_CHECK(images.ndim() == 4 && images.shape(1) == cfg.num_channels && images.shape(2) == cfg.image_size &&
                   images.shape(3) == cfg.image_size,
               "ViT: images {} do not match the model's {}x{}x{} input", describe(images), cfg.num_channels,
               cfg.image_size, cfg.image_size);
  int64_t B = images.shape(0), C = cfg.hidden_size;
  Tensor patches = image_patches(images, cfg.patch_size);                                   // (B, N, Cin P P)
  Tensor x = linear(patches, reshape(patch_weight, {C, -1}), patch_bias);                   // (B, N, C)
  x = cat({expand(cls_token, {B, 1, C}), x}, 1);                                             // (B, N + 1, C)
  return add(x, pos_embed);
}

Tensor ViT::block(size_t i, const Tensor& x) const {
  const ViTLayer& l = layers.at(i);
  Tensor h = add(x, l.attn(l.ln_before(x)));
  return add(h, l.fc2(gelu(l.fc1(l.ln_after(h)), cfg.hidden_act != "gelu")));
}

Tensor ViT::head(const Tensor& x) const {
  Tensor cls = reshape(narrow(final_norm(x), 1, 0, 1), {x.shape(0), cfg.hidden_size});  // (B, C)
  return classifier(cls);
}

Tensor ViT::forward(const Tensor& images) const {
  Tensor x = embed(images);  // (B, T, C)
  for (size_t i = 0; i < layers.size(); ++i) x = block(i, x);
  return head(x);
}

void ViT::visit_linears(const LinearVisitor& f) {
  for (size_t i = 0; i < layers.size(); ++i) {
    std::string p = fmt::format("vit.encoder.layer.{}.", i);
    ViTLayer& l = layers[i];
    f(p + "attention.attention.query", l.attn.q);
    f(p + "attention.attention.key", l.attn.k);
    f(p + "attention.attention.value", l.attn.v);
    f(p + "attention.output.dense", l.attn.o);
    f(p + "intermediate.dense", l.fc1);
    f(p + "output.dense", l.fc2);
  }
  f("classifier", classifier);
}

void ViT::visit(const ParamVisitor& f) {
  f("vit.embeddings.cls_token", cls_token);
  f("vit.embeddings.position_embeddings", pos_embed);
  f("vit.embeddings.patch_embeddings.projection.weight", patch_weight);
  f("vit.embeddings.patch_embeddings.projection.bias", patch_bias);
  for (size_t i = 0; i < layers.size(); ++i) {
    std::string p = fmt::format("vit.encoder.layer.{}.", i);
    ViTLayer& l = layers[i];
    l.ln_before.visit(p + "layernorm_before", f);
    l.ln_after.visit(p + "layernorm_after", f);
  }
  final_norm.visit("vit.layernorm", f);
  visit_linears([&](const std::string& prefix, Linear& l) { l.visit(prefix, f); });
}

// The sites of an encoder block (permute/sites.h): q/k/v and the MLP's first layer read a
// LayerNorm's output (gathered); the attention output reads the values' channels, the MLP's
// second layer the first's through a GELU (folded into their rows).
std::vector<Site> ViT::block_sites(size_t i) {
  ViTLayer& l = layers.at(i);
  std::string p = fmt::format("vit.encoder.layer.{}.", i);
  std::vector<Site> sites;
  sites.push_back(make_site(i, p + "attention.attention.qkv",
                            {{p + "attention.attention.query", &l.attn.q},
                             {p + "attention.attention.key", &l.attn.k},
                             {p + "attention.attention.value", &l.attn.v}},
                            {}));
  sites.push_back(make_site(i, p + "attention.output.dense", {{p + "attention.output.dense", &l.attn.o}}, {&l.attn.v}));
  sites.back().head_dim = l.attn.q.out() / l.attn.heads;
  sites.push_back(make_site(i, p + "intermediate.dense", {{p + "intermediate.dense", &l.fc1}}, {}));
  sites.push_back(make_site(i, p + "output.dense", {{p + "output.dense", &l.fc2}}, {&l.fc1}));
  return sites;
}

namespace {

NetworkSpec read_vit(const nlohmann::json& config, const std::string&) {
  ViTConfig c = ViTConfig::from_json(config);
  NetworkSpec s;
  s.parameters = c.parameter_count();
  s.build = [c](Generator* gen) {
    Generator zero(0);  // small: initialised even when its weights are loaded next
    return std::unique_ptr<Network>(std::make_unique<ViT>(c, gen ? *gen : zero));
  };
  return s;
}

std::unique_ptr<Network> fresh_vit(const nlohmann::json& config, const TrainData& data, Generator& gen) {
  // The embedded default: 28x28x1, patch 4, hidden 128, 4 layers, 4 heads, MLP 512.
  ViTConfig vc = config.empty() ? ViTConfig{} : ViTConfig::from_json(config);
  const ImageSet& tr = data.train_images;
  NMPERM_CHECK(tr.images.shape(2) == vc.image_size && tr.images.shape(1) == vc.num_channels,
               "the data's images are {}x{}x{}, the model expects {}x{}x{}", tr.images.shape(1), tr.images.shape(2),
               tr.images.shape(3), vc.num_channels, vc.image_size, vc.image_size);
  return std::make_unique<ViT>(vc, gen);
}

bool vit_embedded_default(const nlohmann::json& saved) {
  return ViTConfig::from_json(saved).to_json() == ViTConfig{}.to_json();
}

}  // namespace

std::string ViT::name() const { return vit_architecture().name; }

const Architecture& vit_architecture() {
  static const Architecture a{.name = "vit",
                              .data = DataKind::Images,
                              .block_by_block = false,
                              .read = read_vit,
                              .fresh = fresh_vit,
                              .embedded_default = vit_embedded_default};
  return a;
}

}  // namespace nmperm

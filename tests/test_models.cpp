// ViT and Llama against Hugging Face transformers (fixtures from tools/make_model_fixtures.py):
// the checkpoints load through our Hugging Face loader unchanged, and logits, loss, every
// parameter gradient and 5 AdamW steps match PyTorch. Tolerances are for float32:
// logits and loss 1e-5 absolute + 1e-4 relative, gradients 1e-5 + 1e-3 relative.
#include <filesystem>
#include <fstream>

#include "core/safetensors.h"
#include "helpers.h"
#include "models/checkpoint.h"
#include "models/optim.h"

namespace nmperm {
namespace {

using test::all_close;
namespace fs = std::filesystem;

std::string fixture(const std::string& name) { return std::string(NMPERM_FIXTURES) + "/" + name; }

Tensor llama_loss(const Tensor& logits, const Tensor& ids) {
  int64_t B = ids.shape(0), T = ids.shape(1), V = logits.shape(2);
  Tensor lg = reshape(narrow(logits, 1, 0, T - 1), {B * (T - 1), V});
  Tensor tg = reshape(contiguous(narrow(ids, 1, 1, T - 1)), {B * (T - 1)});
  return cross_entropy(lg, tg);
}

Tensor model_loss(Model& m, const SafeTensors& ref, Tensor* logits_out = nullptr) {
  Tensor logits, loss;
  if (m.network->takes_images()) {
    logits = m.as<ViT>().forward(ref.at("pixel_values"));
    loss = cross_entropy(logits, from_vector<int64_t>({0, 2, 1}, {3}));
  } else {
    logits = m.as<Llama>().forward(ref.at("input_ids"));
    loss = llama_loss(logits, ref.at("input_ids"));
  }
  if (logits_out) *logits_out = logits;
  return loss;
}

void check_against_pytorch(const std::string& name) {
  SCOPED_TRACE(name);
  Model m = load_checkpoint(fixture(name));
  SafeTensors ref = load_safetensors(fixture(name + "_reference.safetensors"));
  Tensor logits;
  Tensor loss = model_loss(m, ref, &logits);
  EXPECT_TRUE(all_close(logits, ref.at("logits"), 1e-5, 1e-4)) << "logits";
  EXPECT_NEAR(loss.item(), ref.at("loss").item(), 1e-5 + 1e-4 * std::abs(ref.at("loss").item()));
  backward(loss);
  int checked = 0;
  m.visit([&](const std::string& pname, Tensor& p) {
    const Tensor* g = ref.find("grad." + pname);
    if (!g && pname == "model.embed_tokens.weight") g = ref.find("grad.lm_head.weight");  // tied, seen as one
    ASSERT_TRUE(g) << "no reference gradient for " << pname;
    EXPECT_TRUE(all_close(p.grad(), *g, 1e-5, 1e-3)) << "gradient of " << pname;
    ++checked;
  });
  EXPECT_GT(checked, 10);

  // Five AdamW steps (PyTorch's defaults but lr 1e-3, weight decay 0.01) on the same batch.
  for (Tensor& p : m.parameters()) p.zero_grad();
  AdamW opt(m.parameters(), {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01});
  auto expected = ref.at("adamw_losses").to_vector<double>();
  for (size_t s = 0; s < expected.size(); ++s) {
    opt.zero_grad();
    Tensor l = model_loss(m, ref);
    backward(l);
    opt.step();
    EXPECT_NEAR(l.item(), expected[s], 1e-5 + 1e-4 * std::abs(expected[s])) << "AdamW step " << s;
  }
}

TEST(Models, ViTMatchesTransformers) { check_against_pytorch("vit_tiny"); }
TEST(Models, LlamaMatchesTransformers) { check_against_pytorch("llama_tiny"); }
TEST(Models, LlamaWithTiedEmbeddingsMatchesTransformers) { check_against_pytorch("llama_tiny_tied"); }
// Saved by transformers 5 (tools/make_arch_fixtures.py): the current config dialect.
TEST(Models, Llama3RopeAndExplicitHeadDimMatchTransformers) { check_against_pytorch("llama3_tiny"); }
TEST(Models, OlderDialectWithLinearRopeScalingMatchesTransformers) { check_against_pytorch("llama_linear_old"); }
TEST(Models, Qwen2MatchesTransformers) { check_against_pytorch("qwen2_tiny"); }
TEST(Models, MistralMatchesTransformers) { check_against_pytorch("mistral_tiny"); }
TEST(Models, Qwen2InTheOlderDialectMatchesTransformers) { check_against_pytorch("qwen2_old"); }
TEST(Models, MistralInTheOlderDialectMatchesTransformers) { check_against_pytorch("mistral_old"); }

TEST(Models, ArchitectureDetailsAreReadFromEitherDialect) {
  Model l3 = load_checkpoint(fixture("llama3_tiny"));
  EXPECT_EQ(l3.as<Llama>().cfg.rope_scaling.type, "llama3");
  EXPECT_EQ(l3.as<Llama>().cfg.rope_theta, 500000.0);
  EXPECT_EQ(l3.as<Llama>().cfg.dim(), 16);
  EXPECT_EQ(l3.as<Llama>().layers[0].attn.q.out(), 64);  // 4 heads of 16 from a hidden size of 32
  Model old = load_checkpoint(fixture("llama_linear_old"));
  EXPECT_EQ(old.as<Llama>().cfg.rope_scaling.type, "linear");
  EXPECT_EQ(old.as<Llama>().cfg.rope_scaling.factor, 2.0);
  Model q = load_checkpoint(fixture("qwen2_tiny"));
  EXPECT_TRUE(q.as<Llama>().layers[0].attn.k.bias.defined());
  EXPECT_FALSE(q.as<Llama>().layers[0].attn.o.bias.defined());
  // Mistral's sliding window: windows that fit compute full attention; longer ones are refused.
  Model m = load_checkpoint(fixture("mistral_tiny"));
  EXPECT_EQ(m.as<Llama>().cfg.sliding_window, 48);
  EXPECT_THROW_MSG(m.forward(zeros({1, 49}, DType::I64)), "49 tokens exceed the sliding_window 48");
}

TEST(Models, UnknownConfigKeysAreListedInAWarning) {
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(fixture("llama3_tiny/config.json")));
  cfg["fancy_new_thing"] = 3;
  cfg["another"] = true;
  testing::internal::CaptureStderr();
  LlamaConfig::from_json(cfg);
  EXPECT_NE(testing::internal::GetCapturedStderr().find("keys nmperm does not know, ignored: another, fancy_new_thing"),
            std::string::npos);
  testing::internal::CaptureStderr();
  LlamaConfig::from_json(nlohmann::json::parse(std::ifstream(fixture("qwen2_tiny/config.json"))));
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");  // every key transformers writes is known
}

TEST(Models, LoadsBf16Checkpoints) {
  Model m = load_checkpoint(fixture("llama_tiny_bf16"));
  int64_t nonzero = 0;
  m.visit([&](const std::string& name, Tensor& p) {
    EXPECT_EQ(p.dtype(), DType::F32) << name;
    for (float v : p.to_vector<float>()) {
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      EXPECT_EQ(bits & 0xffffu, 0u) << name << " holds a value bf16 cannot";
      nonzero += v != 0;
    }
  });
  EXPECT_GT(nonzero, 1000);
  Tensor logits = m.as<Llama>().forward(from_vector<int64_t>({1, 2, 3}, {1, 3}));
  EXPECT_TRUE(std::isfinite(sum(logits).item()));
}

TEST(Models, SaveThenLoadRoundTrips) {
  for (const char* name : {"vit_tiny", "llama_tiny_tied"}) {
    Model m = load_checkpoint(fixture(name));
    std::string dir = test::scratch_path(std::string("rt_") + name).string();
    save_checkpoint(m, dir, {{"note", "round trip"}});
    Model back = load_checkpoint(dir);
    auto a = m.parameters(), b = back.parameters();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].to_vector<float>(), b[i].to_vector<float>());
    EXPECT_EQ(m.config_json(), back.config_json());
    if (!back.network->takes_images() && back.as<Llama>().cfg.tie_word_embeddings) {
      EXPECT_TRUE(back.as<Llama>().lm_head.weight.same_data(back.as<Llama>().embed_tokens));
    }
    fs::remove_all(dir);
  }
}

// A copy of a fixture checkpoint with its tensors edited, for the error tests.
std::string edited_copy(const std::string& name,
                        const std::function<void(std::vector<std::pair<std::string, Tensor>>&)>& edit) {
  std::string dir = test::scratch_path("bad_" + name).string();
  fs::remove_all(dir);
  fs::copy(fixture(name), dir);
  SafeTensors st = load_safetensors(dir + "/model.safetensors");
  edit(st.tensors);
  save_safetensors(dir + "/model.safetensors", st.tensors);
  return dir;
}

TEST(ModelsBadCheckpoint, MissingTensorIsNamed) {
  std::string dir = edited_copy("vit_tiny", [](auto& ts) {
    std::erase_if(ts, [](auto& t) { return t.first == "vit.encoder.layer.1.output.dense.bias"; });
  });
  EXPECT_THROW_MSG(load_checkpoint(dir), "tensor 'vit.encoder.layer.1.output.dense.bias' is missing");
  fs::remove_all(dir);
}

TEST(ModelsBadCheckpoint, UnexpectedTensorIsNamed) {
  std::string dir = edited_copy("llama_tiny", [](auto& ts) { ts.emplace_back("model.extra.weight", zeros({2})); });
  EXPECT_THROW_MSG(load_checkpoint(dir), "unexpected tensor 'model.extra.weight'");
  fs::remove_all(dir);
}

TEST(ModelsBadCheckpoint, MisShapedTensorIsNamed) {
  std::string dir = edited_copy("llama_tiny", [](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "model.layers.0.mlp.up_proj.weight") t = zeros({47, 32});
  });
  EXPECT_THROW_MSG(load_checkpoint(dir), "'model.layers.0.mlp.up_proj.weight' has shape [47, 32], the model needs [48, 32]");
  fs::remove_all(dir);
}

TEST(ModelsBadCheckpoint, NonFiniteWeightIsNamed) {
  std::string dir = edited_copy("llama_tiny", [](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "model.layers.1.self_attn.o_proj.weight") {
        t = t.clone();
        t.template data<float>()[3] = INFINITY;
        t.template data<float>()[5] = NAN;
      }
  });
  EXPECT_THROW_MSG(load_checkpoint(dir), "tensor 'model.layers.1.self_attn.o_proj.weight' holds 2 NaN or infinite values");
  fs::remove_all(dir);
}

TEST(ModelsBadCheckpoint, WrongArchitectureIsRefused) {
  std::string dir = test::scratch_path("arch").string();
  fs::remove_all(dir);
  fs::copy(fixture("llama_tiny"), dir);
  fs::copy_file(fixture("vit_tiny/config.json"), dir + "/config.json", fs::copy_options::overwrite_existing);
  EXPECT_THROW_MSG(load_checkpoint(dir), "is missing (the vit architecture needs it)");
  fs::remove_all(dir);
  EXPECT_THROW_MSG(load_checkpoint("/nonexistent/ckpt"), "does not exist");
}

TEST(Models, ParameterCountWithoutBuilding) {
  Generator gen(0);
  for (bool bias : {true, false}) {
    ViTConfig v;
    v.qkv_bias = bias;
    v.image_size = 12;
    v.num_channels = 3;
    Model mv;
    mv.network = std::make_unique<ViT>(v, gen);
    EXPECT_EQ(v.parameter_count(), double(mv.num_parameters()));
    LlamaConfig l;
    l.qkv_bias = l.mlp_bias = bias;
    l.o_bias = !bias;  // Qwen2's q/k/v without o, and the converse
    l.tie_word_embeddings = !bias;
    l.head_dim = bias ? 16 : 0;
    Model ml;
    ml.network = std::make_unique<Llama>(l, gen);
    EXPECT_EQ(l.parameter_count(), double(ml.num_parameters()));
  }
}

TEST(ModelsBadCheckpoint, ConfigLargerThanTheWeightsIsRefusedBeforeBuilding) {
  SafeTensors st = load_safetensors(fixture("vit_tiny/model.safetensors"));
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(fixture("vit_tiny/config.json")));
  cfg["hidden_size"] = int64_t(1) << 24;  // would need petabytes if it were built
  EXPECT_THROW_MSG(model_from(cfg, st, "ckpt"), "ckpt: config.json describes a vit of");
  cfg["hidden_size"] = int64_t(1) << 40;
  EXPECT_THROW_MSG(model_from(cfg, st, "ckpt"), "hidden_size 1099511627776 is out of range");
  cfg["hidden_size"] = 1e30;
  EXPECT_THROW_MSG(model_from(cfg, st, "ckpt"), "'hidden_size' must be an integer in range, got 1e+30");
  cfg["model_type"] = 7;
  cfg["architectures"] = {nullptr};
  EXPECT_THROW_MSG(model_from(cfg, st, "ckpt"), "model_type '' is not supported");
  EXPECT_THROW_MSG(model_from(nlohmann::json::array(), st, "ckpt"), "must be a JSON object");
}

TEST(Models, ConfigErrorsAreClear) {
  EXPECT_THROW_MSG(ViTConfig::from_json({{"image_size", 30}, {"patch_size", 4}}), "multiple of patch_size");
  EXPECT_THROW_MSG(LlamaConfig::from_json({{"num_attention_heads", 4}, {"num_key_value_heads", 3}}),
                   "not a multiple of num_key_value_heads");
  EXPECT_THROW_MSG(LlamaConfig::from_json({{"rope_scaling", {{"type", "linear"}}}}), "rope_type 'linear' needs 'factor'");
  EXPECT_THROW_MSG(LlamaConfig::from_json({{"rope_scaling", {{"type", "yarn"}, {"factor", 4}}}}),
                   "rope_scaling.rope_type 'yarn' is not supported (default, linear, llama3)");
  EXPECT_THROW_MSG(LlamaConfig::from_json({{"rope_parameters", {{"rope_type", "dynamic"}, {"factor", 2}}}}),
                   "rope_parameters.rope_type 'dynamic' is not supported");
  EXPECT_THROW_MSG(LlamaConfig::from_json({{"rope_parameters", {{"rope_type", "linear"}, {"factor", 2}, {"beta", 1}}}}),
                   "rope_parameters.beta is not supported for rope_type 'linear'");
  EXPECT_THROW_MSG(LlamaConfig::from_json({{"rope_parameters", {{"rope_type", "default"}, {"partial_rotary_factor", 0.5}}}}),
                   "partial_rotary_factor 0.5 is not supported");
  EXPECT_THROW_MSG(LlamaConfig::from_json({{"hidden_act", "gelu"}}), "Llama config.json: hidden_act 'gelu' is not supported");
  EXPECT_THROW_MSG(LlamaConfig::from_json({{"model_type", "gemma"}}), "model_type 'gemma' is not supported");
  EXPECT_THROW_MSG(LlamaConfig::from_json({{"layer_types", {"chunked_attention"}}}), "layer_types entry");
  EXPECT_THROW_MSG(LlamaConfig::from_json({{"head_dim", 7}}), "head size 7 must be even");
  EXPECT_THROW_MSG(LlamaConfig::from_json({{"quantization_config", {{"bits", 4}}}}), "quantization_config");
}

}  // namespace
}  // namespace nmperm

#include "models/calibrate.h"

namespace nmperm {
namespace {

TEST(Calibration, NormsAreThoseOfEachLinearInput) {
  Model m = load_checkpoint(fixture("llama_tiny"));
  TrainData data;
  for (int i = 0; i < 400; ++i) data.tokens.train.push_back((i * 11) % 64);
  data.tokens.vocab = 64;
  auto norms = activation_norms(m, data, {.batches = 2, .batch = 3});
  EXPECT_EQ(norms.size(), 2u * 7 + 1);  // q k v o gate up down per layer, and lm_head
  // q_proj of layer 0 sees input_layernorm(embedding(ids)) for all 2 * 3 windows of 16
  // tokens, spread over the 25 windows the stream holds: windows 2, 6, 10, 14, 18, 22.
  NoGradGuard ng;
  int64_t T = 16;
  EXPECT_EQ(spread_indices(25, 6), (std::vector<int64_t>{2, 6, 10, 14, 18, 22}));
  std::vector<int64_t> ids;
  for (int64_t w : {2, 6, 10, 14, 18, 22})
    ids.insert(ids.end(), data.tokens.train.begin() + w * T, data.tokens.train.begin() + (w + 1) * T);
  Tensor x = m.as<Llama>().layers[0].input_norm(embedding(m.as<Llama>().embed_tokens, from_vector(ids, {6, T})));
  Tensor want = sqrt(sum(square(reshape(x, {6 * T, 32})), {0}));
  EXPECT_TRUE(all_close(norms.at("model.layers.0.self_attn.q_proj.weight"), want, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(norms.at("model.layers.0.self_attn.k_proj.weight"), want, 1e-5, 1e-5));
  EXPECT_EQ(norms.at("model.layers.1.mlp.down_proj.weight").shape(), Shape({48}));
  EXPECT_EQ(linear_observer(), nullptr);
  EXPECT_THROW_MSG(activation_norms(m, data, {.batches = 100, .batch = 3}), "calibration wants");
  EXPECT_EQ(linear_observer(), nullptr);
}

}  // namespace
}  // namespace nmperm

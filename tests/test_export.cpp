// Exports of pruned models: the default original-order layout is a standard Hugging Face
// folder computing exactly the permuted pruned model; the permuted layout computes the same;
// both keep the source's dtype (bf16 stays bf16, losslessly) and sharding and copy its
// tokenizer files. And sharded checkpoints load equal to unsharded ones.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "helpers.h"
#include "models/calibrate.h"
#include "models/checkpoint.h"
#include "permute/nm.h"
#include "permute/prune.h"
#include "tiny_models.h"

namespace nmperm {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string fixture(const std::string& name) { return std::string(NMPERM_FIXTURES) + "/" + name; }

struct Scratch {
  fs::path dir = test::scratch_path("export");
  Scratch() { fs::remove_all(dir), fs::create_directories(dir); }
  ~Scratch() { fs::remove_all(dir); }
};

// RIA permutations (gathered q/k/v and gate/up sites, folded o and down) and 2:4 pruning.
void prune(Model& m) {
  TrainData d = test::tiny_data(m, 3);
  for (auto& t : d.tokens.train) t %= int32_t(m.as<Llama>().cfg.vocab_size);
  auto norms = activation_norms(m, d, {.batches = 2, .batch = 4});
  PruneOptions o;
  o.method = "ria";
  o.progress = false;
  prune_model(m, d, norms, o);
}

Tensor logits(const Model& m) {
  NoGradGuard ng;
  std::vector<int64_t> ids;
  for (int i = 0; i < 2 * 12; ++i) ids.push_back((i * 5 + 3) % 32);
  return m.forward(from_vector(ids, {2, 12}));
}

bool has_gathers(Model& m) {
  bool any = false;
  m.visit_linears([&](const std::string&, Linear& l) { any |= l.input_perm.defined(); });
  return any;
}

TEST(Export, OriginalLayoutIsAStandardFolderThatComputesThePermutedPrunedModel) {
  Scratch s;
  Model m = load_checkpoint(fixture("llama_tiny"));
  prune(m);
  ASSERT_TRUE(has_gathers(m));
  Tensor want = logits(m);
  export_checkpoint(m, (s.dir / "orig").string(), {}, Layout::Original);
  export_checkpoint(m, (s.dir / "perm").string(), {}, Layout::Permuted);
  SafeTensors orig = load_safetensors((s.dir / "orig" / "model.safetensors").string());
  for (auto& [name, t] : orig.tensors) EXPECT_FALSE(name.ends_with("input_permutation")) << name;
  EXPECT_EQ(orig.metadata.at("layout"), "original");
  Model a = load_checkpoint((s.dir / "orig").string()), b = load_checkpoint((s.dir / "perm").string());
  EXPECT_FALSE(has_gathers(a));
  EXPECT_TRUE(has_gathers(b));
  EXPECT_TRUE(test::all_close(logits(a), want, 1e-5, 1e-5));
  EXPECT_TRUE(test::all_close(logits(b), want, 1e-6, 1e-6));
  // The permuted layout is where every run of 4 stored inputs keeps 2; the original order of
  // a gathered layer is not (the test can tell the layouts apart).
  int64_t perm_violations = 0, orig_violations = 0;
  b.visit_linears([&](const std::string& p, Linear& l) {
    if (l.input_perm.defined()) perm_violations += measure_sparsity(l.weight, {2, 4}).violations;
  });
  a.visit_linears([&](const std::string& p, Linear& l) {
    if (p.find("q_proj") != std::string::npos) orig_violations += measure_sparsity(l.weight, {2, 4}).violations;
  });
  EXPECT_EQ(perm_violations, 0);
  EXPECT_GT(orig_violations, 0);
}

TEST(Export, Bf16StaysBf16Losslessly) {
  Scratch s;
  Model m = load_checkpoint(fixture("llama_tiny_bf16"));
  EXPECT_EQ(m.source_dtype, "BF16");
  prune(m);
  export_checkpoint(m, (s.dir / "x").string(), {}, Layout::Original);
  SafeTensors st = load_safetensors((s.dir / "x" / "model.safetensors").string());
  for (auto& [name, dt] : st.disk_dtypes) EXPECT_EQ(dt, "BF16") << name;
  json cfg = json::parse(std::ifstream(s.dir / "x" / "config.json"));
  EXPECT_TRUE(cfg.value("torch_dtype", "") == "bfloat16" || cfg.value("dtype", "") == "bfloat16") << cfg.dump();
  EXPECT_TRUE(test::all_close(logits(load_checkpoint((s.dir / "x").string())), logits(m), 1e-5, 1e-5));
  // Pruning zeroes and permutations move bf16 values: the export holds them exactly.
  export_checkpoint(m, (s.dir / "p").string(), {}, Layout::Permuted);
  Model back = load_checkpoint((s.dir / "p").string());
  auto pb = back.parameters(), pm = m.parameters();
  for (size_t i = 0; i < pm.size(); ++i) EXPECT_TRUE(test::all_close(pb[i], pm[i], 0, 0)) << i;
}

TEST(Export, ShardedCheckpointsLoadEqualAndExportWithTheSameShards) {
  Scratch s;
  fs::path src = s.dir / "sharded";
  fs::create_directories(src);
  SafeTensors whole = load_safetensors(fixture("llama_tiny/model.safetensors"));
  std::vector<std::pair<std::string, Tensor>> a, b;
  json weight_map = json::object();
  for (auto& [name, t] : whole.tensors) {
    bool first = name.find("layers.1.") == std::string::npos && name != "lm_head.weight";
    (first ? a : b).emplace_back(name, t);
    weight_map[name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  save_safetensors((src / "model-00001-of-00002.safetensors").string(), a);
  save_safetensors((src / "model-00002-of-00002.safetensors").string(), b);
  std::ofstream(src / "model.safetensors.index.json") << json{{"metadata", json::object()}, {"weight_map", weight_map}}.dump();
  fs::copy_file(fixture("llama_tiny/config.json"), src / "config.json");
  Model m = load_checkpoint(src.string()), ref = load_checkpoint(fixture("llama_tiny"));
  auto pm = m.parameters(), pr = ref.parameters();
  ASSERT_EQ(pm.size(), pr.size());
  for (size_t i = 0; i < pm.size(); ++i) EXPECT_TRUE(test::all_close(pm[i], pr[i], 0, 0));
  prune(m);
  export_checkpoint(m, (s.dir / "out").string(), {}, Layout::Original);
  json index = json::parse(std::ifstream(s.dir / "out" / "model.safetensors.index.json"));
  EXPECT_EQ(index["weight_map"], weight_map);
  EXPECT_FALSE(fs::exists(s.dir / "out" / "model.safetensors"));
  EXPECT_TRUE(test::all_close(logits(load_checkpoint((s.dir / "out").string())), logits(m), 1e-5, 1e-5));
}

TEST(Export, TokenizerAndGenerationFilesAreCopied) {
  Scratch s;
  Model m = load_checkpoint(fixture("llama3_tok"));
  export_checkpoint(m, (s.dir / "x").string(), {}, Layout::Original);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"}) {
    std::ifstream x(s.dir / "x" / f), y(fs::path(fixture("llama3_tok")) / f);
    std::string xs((std::istreambuf_iterator<char>(x)), {}), ys((std::istreambuf_iterator<char>(y)), {});
    EXPECT_EQ(xs, ys) << f;
  }
}

}  // namespace
}  // namespace nmperm

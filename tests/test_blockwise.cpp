// Block-by-block pruning and evaluation (permute/blockwise.h) against the whole-model
// pipeline: with dense calibration inputs both give the same permutations, records,
// losses and exported tensors, bit for bit; sequential calibration differs exactly where
// it should (after the first block); an interrupted run resumed ends bitwise equal to an
// uninterrupted one; broken checkpoints and impossible memory needs fail before any output.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "helpers.h"
#include "permute/blockwise.h"

namespace nmperm {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct Fixture {
  fs::path dir = test::scratch_path("blockwise");
  std::string ckpt = (dir / "dense").string();
  TrainData data;
  Fixture() {
    fs::remove_all(dir);
    LlamaConfig c;
    c.vocab_size = 97, c.hidden_size = 64, c.intermediate_size = 128, c.num_hidden_layers = 4;
    c.num_attention_heads = 4, c.num_key_value_heads = 2, c.max_position_embeddings = 64;
    c.qkv_bias = c.o_bias = true;  // attention_bias: biases on gathered and folded layers too
    Generator g(5);
    Model m;
    m.network = std::make_unique<Llama>(c, g);
    // Two bf16 shards, as a downloaded checkpoint comes.
    m.source_dtype = "BF16";
    m.visit([&](const std::string& name, Tensor&) {
      bool second = name.find("layers.2.") != std::string::npos || name.find("layers.3.") != std::string::npos ||
                    name == "lm_head.weight" || name == "model.norm.weight";
      m.source_shards[name] = second ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
    });
    export_checkpoint(m, ckpt, {}, Layout::Original);
    Generator t(9);
    auto stream = [&](int64_t n) {
      std::vector<int32_t> v(static_cast<size_t>(n), 0);
      for (auto& x : v) x = int32_t(t.randint(97));
      return v;
    };
    data.tokens.train = stream(4000);
    data.tokens.val = stream(700);
    data.tokens.test = stream(900);
    data.tokens.vocab = 97;
    data.tokens.seqlen = 32;
    data.tokens.field_protocol = true;
    data.tokens.calib_seed = 3;
    data.tokens.description = "random tokens";
  }
  ~Fixture() { fs::remove_all(dir); }
  CompareOptions options(const std::string& pipeline, const std::string& calibration, const std::string& out = "") {
    CompareOptions o;
    o.methods = {"none", "random", "channel-swap", "ria"};
    o.calib.batches = 2, o.calib.batch = 4;
    o.pipeline = pipeline, o.calibration = calibration;
    o.out_dir = out.empty() ? "" : (dir / out).string();
    o.progress = false;
    return o;
  }
};

// Every tensor of every shard of two exports, compared as stored.
void expect_same_weights(const std::string& a, const std::string& b) {
  CheckpointFiles fa = CheckpointFiles::open(a), fb = CheckpointFiles::open(b);
  ASSERT_EQ(fa.tensors.size(), fb.tensors.size());
  for (auto& [name, at] : fa.tensors) {
    const TensorEntry* e = fb.find(name);
    ASSERT_TRUE(e) << name;
    ASSERT_EQ(at.second->dtype, e->dtype) << name;
    ASSERT_EQ(at.second->shape, e->shape) << name;
    EXPECT_EQ(std::memcmp(at.first->bytes(*at.second), fb.tensors.at(name).first->bytes(*e), e->end - e->begin), 0)
        << name;
  }
  EXPECT_EQ(fa.shards, fb.shards);
}

TEST(Blockwise, DenseCalibrationEqualsWholeModelPruningExactly) {
  Fixture f;
  json whole = compare_methods(f.ckpt, f.data, f.options("whole", "dense", "whole"));
  json block = compare_methods(f.ckpt, f.data, f.options("block", "dense", "block"));
  EXPECT_EQ(whole["dense"], block["dense"]);
  EXPECT_EQ(whole["dense_val"], block["dense_val"]);
  ASSERT_EQ(whole["runs"].size(), block["runs"].size());
  for (size_t i = 0; i < whole["runs"].size(); ++i) {
    const json &w = whole["runs"][i], &b = block["runs"][i];
    std::string m = w["method"];
    EXPECT_EQ(w["eval"], b["eval"]) << m;
    EXPECT_EQ(w["eval_val"], b["eval_val"]) << m;
    EXPECT_EQ(w["layers"], b["layers"]) << m;
    EXPECT_EQ(w["sites"], b["sites"]) << m;
    EXPECT_EQ(w["nm_violations"], 0) << m;
    expect_same_weights(w["checkpoint"], b["checkpoint"]);
    EXPECT_EQ(load_permutations(w["checkpoint"].get<std::string>() + "/permutations.safetensors"),
              load_permutations(b["checkpoint"].get<std::string>() + "/permutations.safetensors"));
  }
  // The export keeps the source's shards and bf16, and pruning changed the model.
  CheckpointFiles out = CheckpointFiles::open(f.dir / "block" / "ria");
  EXPECT_EQ(out.files.size(), 2u);
  EXPECT_EQ(out.float_dtype, "BF16");
  EXPECT_NE(block["runs"][0]["eval"]["loss"], block["dense"]["loss"]);
  EXPECT_FALSE(fs::exists(f.dir / "block" / ".resume"));  // state is removed once every run is done
}

// --precision bf16: both pipelines still agree bit for bit, the forward passes really run
// in bf16 (the losses move, by about bf16's rounding), and the learned method trains in it.
TEST(Blockwise, Bf16ForwardPassesAgreeAcrossPipelinesAndTrainTheLearnedMethod) {
  Fixture f;
  CompareOptions w = f.options("whole", "dense"), b = f.options("block", "dense"), f32 = f.options("whole", "dense");
  w.methods = b.methods = f32.methods = {"none", "ria"};
  w.precision = b.precision = "bf16";
  json jw = compare_methods(f.ckpt, f.data, w), jb = compare_methods(f.ckpt, f.data, b);
  json j32 = compare_methods(f.ckpt, f.data, f32);
  EXPECT_EQ(jw["options"]["precision"], "bf16");
  EXPECT_EQ(jw["dense"], jb["dense"]);
  for (size_t i = 0; i < jw["runs"].size(); ++i) EXPECT_EQ(jw["runs"][i]["eval"], jb["runs"][i]["eval"]) << i;
  double l16 = jw["dense"]["loss"], l32 = j32["dense"]["loss"];
  EXPECT_NE(l16, l32);
  EXPECT_NEAR(l16, l32, 0.01 * l32);
  CompareOptions l = f.options("whole", "dense");
  l.methods = {"learned"};
  l.precision = "bf16";
  l.learn = {{"steps", 4}, {"eval_every", 2}, {"batch", 4}, {"holdout", 4}};
  json jl = compare_methods(f.ckpt, f.data, l);
  ASSERT_EQ(jl["runs"].size(), 1u);
  EXPECT_TRUE(std::isfinite(jl["runs"][0]["eval"]["loss"].get<double>()));
  EXPECT_EQ(jl["runs"][0]["nm_violations"], 0);
}

TEST(Blockwise, EvaluationEqualsTheWholeModelsExactly) {
  Fixture f;
  Model m = load_checkpoint(f.ckpt);
  for (Split s : {Split::Test, Split::Validation}) {
    EvalResult whole = evaluate(m, f.data, 0, 0, s), block = evaluate_blockwise(f.ckpt, f.data, 0, s, Device::CPU, false);
    EXPECT_EQ(whole.to_json("llama", true), block.to_json("llama", true));
    EXPECT_EQ(block.windows, (s == Split::Test ? 900 : 700) / 32);
  }
}

TEST(Blockwise, ActivationNormsEqualTheWholeModelsExactly) {
  Fixture f;
  Model m = load_checkpoint(f.ckpt);
  CalibrationOptions c{.batches = 3, .batch = 2};
  auto whole = activation_norms(m, f.data, c), block = activation_norms_blockwise(f.ckpt, f.data, c, Device::CPU, false);
  ASSERT_EQ(whole.size(), block.size());
  ASSERT_EQ(whole.size(), 4u * 7 + 1);  // every linear of every block, and the lm_head
  for (auto& [name, t] : whole) {
    ASSERT_TRUE(block.count(name)) << name;
    EXPECT_EQ(t.to_vector<float>(), block.at(name).to_vector<float>()) << name;
  }
}

TEST(Blockwise, SequentialCalibrationDiffersOnlyAfterTheFirstBlock) {
  Fixture f;
  CompareOptions d = f.options("block", "dense"), s = f.options("block", "sequential");
  d.methods = s.methods = {"ria"};
  json dense = compare_methods(f.ckpt, f.data, d), seq = compare_methods(f.ckpt, f.data, s);
  const json &ld = dense["runs"][0]["layers"], &ls = seq["runs"][0]["layers"];
  ASSERT_EQ(ld.size(), ls.size());
  size_t differ_later = 0;
  for (size_t i = 0; i < ld.size(); ++i) {
    bool first_block = ld[i]["layer"].get<std::string>().starts_with("model.layers.0.");
    if (first_block) EXPECT_EQ(ld[i], ls[i]) << i;  // the same inputs: the dense model's embeddings
    else differ_later += ld[i]["kept"] != ls[i]["kept"];
  }
  EXPECT_GT(differ_later, 0u);
  EXPECT_EQ(seq["runs"][0]["nm_violations"], 0);
  EXPECT_DOUBLE_EQ(seq["runs"][0]["sparsity"].get<double>(), 0.5);
  EXPECT_EQ(seq["options"]["calibration"], "sequential");
}

TEST(Blockwise, AResumedRunEndsBitwiseEqualToAnUninterruptedOne) {
  Fixture f;
  for (const char* calibration : {"sequential", "dense"}) {
    SCOPED_TRACE(calibration);
    CompareOptions o = f.options("block", calibration, std::string("full-") + calibration);
    o.methods = {"channel-swap", "ria"};
    json full = compare_methods(f.ckpt, f.data, o);
    CompareOptions cut = f.options("block", calibration, std::string("cut-") + calibration);
    cut.methods = o.methods;
    cut.stop_after_blocks = 1;
    // Stopped twice (after block 1, then after block 2 of channel-swap), then to the end.
    EXPECT_THROW_MSG(compare_methods(f.ckpt, f.data, cut), "stopped after block 1 of 4");
    EXPECT_FALSE(fs::exists(fs::path(cut.out_dir) / "channel-swap" / "model-00001-of-00002.safetensors"));
    cut.resume = true;
    EXPECT_THROW_MSG(compare_methods(f.ckpt, f.data, cut), "stopped after block 2 of 4");
    cut.stop_after_blocks = 0;
    json resumed = compare_methods(f.ckpt, f.data, cut);
    for (size_t i = 0; i < 2; ++i) {
      const json &a = full["runs"][i], &b = resumed["runs"][i];
      EXPECT_EQ(a["eval"], b["eval"]);
      EXPECT_EQ(a["layers"], b["layers"]);
      expect_same_weights(a["checkpoint"], b["checkpoint"]);
    }
    for (const char* file : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                             "model.safetensors.index.json", "permutations.safetensors", "config.json"}) {
      std::ifstream a(fs::path(o.out_dir) / "ria" / file, std::ios::binary), b(fs::path(cut.out_dir) / "ria" / file, std::ios::binary);
      EXPECT_EQ(std::string(std::istreambuf_iterator<char>(a), {}), std::string(std::istreambuf_iterator<char>(b), {}))
          << file;
    }
  }
  // A resume with other settings is refused, naming the state.
  CompareOptions o = f.options("block", "sequential", "other");
  o.methods = {"ria"};
  o.stop_after_blocks = 1;
  EXPECT_THROW_MSG(compare_methods(f.ckpt, f.data, o), "stopped after block 1");
  o.resume = true;
  o.pattern = "1:4";
  EXPECT_THROW_MSG(compare_methods(f.ckpt, f.data, o), "was written by a run with other settings");
}

// The learned methods block by block: each block's costs learn from its calibration inputs
// against its own output, start at the warm start and keep the best held-out permutation;
// block 0 sees the same inputs in both conventions; an interrupted run resumed ends
// bitwise equal to an uninterrupted one; PermLLM runs with its per-layer objective.
TEST(Blockwise, TheLearnedMethodsLearnEveryBlockAndResumeBitwise) {
  Fixture f;
  std::map<std::string, json> block0;
  for (const char* calibration : {"sequential", "dense"}) {
    SCOPED_TRACE(calibration);
    CompareOptions o = f.options("block", calibration, std::string("full-") + calibration);
    o.methods = {"learned"};
    o.learn = {{"objective", "block"}, {"steps", 4}, {"eval_every", 2}, {"batch", 2}};
    json full = compare_methods(f.ckpt, f.data, o);
    const json& run = full["runs"][0];
    EXPECT_EQ(run["nm_violations"], 0);
    EXPECT_DOUBLE_EQ(run["sparsity"].get<double>(), 0.5);
    EXPECT_TRUE(std::isfinite(run["eval"]["loss"].get<double>()));
    // Per block (a block's curve opens with a point naming it as "stage"): held-out points
    // at steps 0 (the warm start), 2 and 4; the best is kept.
    std::map<int64_t, std::vector<double>> held;
    int64_t stage = -1;
    for (const json& p : run["learn"]["curve"]) {
      if (p.contains("stage")) stage = p["stage"];
      if (p.contains("holdout")) held[stage].push_back(p["holdout"]);
    }
    ASSERT_EQ(held.size(), 4u);
    double start = 0, best = 0;
    for (auto& [b, h] : held) {
      EXPECT_EQ(h.size(), 3u) << b;
      start += h.front();
      best += *std::min_element(h.begin(), h.end());
    }
    EXPECT_DOUBLE_EQ(run["learn"]["start_holdout"].get<double>(), start);
    EXPECT_DOUBLE_EQ(run["learn"]["best_holdout"].get<double>(), best);
    for (const json& l : run["layers"])
      if (l["layer"].get<std::string>().starts_with("model.layers.0.")) block0[calibration].push_back(l);

    CompareOptions cut = f.options("block", calibration, std::string("cut-") + calibration);
    cut.methods = o.methods;
    cut.learn = o.learn;
    cut.stop_after_blocks = 2;
    EXPECT_THROW_MSG(compare_methods(f.ckpt, f.data, cut), "stopped after block 2 of 4");
    cut.resume = true;
    cut.stop_after_blocks = 0;
    json resumed = compare_methods(f.ckpt, f.data, cut);
    const json& back = resumed["runs"][0];
    EXPECT_EQ(run["eval"], back["eval"]);
    EXPECT_EQ(run["layers"], back["layers"]);
    EXPECT_EQ(run["learn"]["curve"], back["learn"]["curve"]);
    EXPECT_EQ(run["learn"]["soft_block"], back["learn"]["soft_block"]);
    expect_same_weights(run["checkpoint"], back["checkpoint"]);
  }
  EXPECT_EQ(block0["sequential"], block0["dense"]);
  CompareOptions p = f.options("block", "sequential");
  p.methods = {"permllm"};
  p.learn = {{"objective", "layer-cosine"}, {"steps", 2}, {"eval_every", 2}, {"batch", 2}};
  json pl = compare_methods(f.ckpt, f.data, p);
  EXPECT_EQ(pl["runs"][0]["nm_violations"], 0);
  EXPECT_TRUE(std::isfinite(pl["runs"][0]["learn"]["best_holdout"].get<double>()));
}

TEST(Blockwise, BrokenCheckpointsAndImpossibleMemoryFailBeforeAnyOutput) {
  Fixture f;
  auto broken = [&](const std::string& name) {
    fs::path d = f.dir / name;
    fs::copy(f.ckpt, d);
    return d;
  };
  auto refused = [&](const fs::path& ckpt, const std::string& why) {
    CompareOptions o = f.options("block", "sequential", "out-" + ckpt.filename().string());
    EXPECT_THROW_MSG(compare_methods(ckpt.string(), f.data, o), why);
    EXPECT_FALSE(fs::exists(o.out_dir)) << why;
  };
  fs::path missing = broken("missing");
  fs::remove(missing / "model-00002-of-00002.safetensors");
  refused(missing, "shard 'model-00002-of-00002.safetensors' (listed in model.safetensors.index.json) is missing");
  fs::path cut = broken("cut");
  fs::resize_file(cut / "model-00002-of-00002.safetensors", fs::file_size(cut / "model-00002-of-00002.safetensors") - 100);
  refused(cut, "is the file truncated?");
  fs::path moved = broken("moved");
  {
    std::ifstream in(moved / "model.safetensors.index.json");
    json idx = json::parse(in);
    idx["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors";
    std::ofstream(moved / "model.safetensors.index.json") << idx.dump();
  }
  refused(moved, "puts 'model.norm.weight' in 'model-00001-of-00002.safetensors', which does not hold it");
  // More calibration windows than any machine holds.
  CompareOptions o = f.options("block", "sequential", "huge");
  o.calib.batches = 1 << 20, o.calib.batch = 1 << 10;
  EXPECT_THROW_MSG(compare_methods(f.ckpt, f.data, o), "block-by-block pruning of this model needs about");
  EXPECT_FALSE(fs::exists(o.out_dir));
  // The learned methods and the permuted layout are the whole-model pipeline's.
  o = f.options("block", "sequential");
  o.methods = {"learned"};
  EXPECT_THROW_MSG(compare_methods(f.ckpt, f.data, o), "the 'task' objective trains against the whole model");
  o.methods = {"permllm"};
  EXPECT_THROW_MSG(compare_methods(f.ckpt, f.data, o), "the 'output-cosine' objective trains against the whole model");
  o = f.options("whole", "sequential");
  EXPECT_THROW_MSG(compare_methods(f.ckpt, f.data, o), "runs block by block");
}

}  // namespace
}  // namespace nmperm

// Training machinery: learning-rate schedule, data readers, and exact resume (a run split
// by a checkpoint ends bitwise equal to an uninterrupted one).
#include <filesystem>
#include <fstream>
#include <map>

#include "core/safetensors.h"
#include "helpers.h"
#include "models/train.h"

namespace nmperm {
namespace {

namespace fs = std::filesystem;

std::string tmp(const std::string& name) {
  return test::scratch_path("train_" + name).string();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

std::string le32(uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[size_t(i)] = char((v >> (8 * i)) & 0xff);
  return s;
}

std::string be32(uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[size_t(i)] = char((v >> (24 - 8 * i)) & 0xff);
  return s;
}

LlamaConfig tiny_llama(int64_t vocab, int64_t hidden, int64_t heads, int64_t kv_heads, int64_t context) {
  LlamaConfig lc;
  lc.vocab_size = vocab;
  lc.hidden_size = hidden;
  lc.intermediate_size = hidden * 3 / 2;
  lc.num_hidden_layers = 1;
  lc.num_attention_heads = heads;
  lc.num_key_value_heads = kv_heads;
  lc.max_position_embeddings = context;
  return lc;
}

TEST(Training, LearningRateWarmsUpThenDecays) {
  TrainConfig c;
  c.lr = 1.0;
  c.warmup = 10;
  c.steps = 110;
  c.min_lr_ratio = 0.1;
  EXPECT_NEAR(lr_at(c, 0), 0.1, 1e-12);
  EXPECT_NEAR(lr_at(c, 9), 1.0, 1e-12);
  EXPECT_NEAR(lr_at(c, 60), 0.55, 1e-12);  // half way through the cosine
  EXPECT_NEAR(lr_at(c, 110), 0.1, 1e-12);
}

TEST(Training, ReadsLlmcTokenFiles) {
  std::string path = tmp("tokens.bin");
  std::string header = le32(20240520) + le32(1) + le32(3) + std::string(1024 - 12, '\0');
  write_bytes(path, header + std::string("\x01\x00\xff\xff\x10\x27", 6));
  EXPECT_EQ(load_token_file(path), (std::vector<int32_t>{1, 65535, 10000}));
  write_bytes(path, header + std::string("\x01\x00", 2));
  EXPECT_THROW_MSG(load_token_file(path), "header says 3 tokens");
  write_bytes(path, le32(20240520) + le32(2) + le32(0) + std::string(1012, '\0'));
  EXPECT_THROW_MSG(load_token_file(path), "version 2 is not supported");
  fs::remove(path);
}

TEST(Training, ReadsRawTokenArrays) {
  std::string p16 = tmp("t.u16"), p32 = tmp("t.u32");
  write_bytes(p16, std::string("\x05\x00\x06\x01", 4));
  write_bytes(p32, le32(7) + le32(70000));
  EXPECT_EQ(load_token_file(p16), (std::vector<int32_t>{5, 262}));
  EXPECT_EQ(load_token_file(p32), (std::vector<int32_t>{7, 70000}));
  write_bytes(p16, std::string("\x05", 1));
  EXPECT_THROW_MSG(load_token_file(p16), "not a whole number of uint16 tokens");
  EXPECT_THROW_MSG(load_token_file(p32, "bogus"), "unknown token format");
  write_bytes(p32, "");
  EXPECT_THROW_MSG(load_token_file(p32), "holds no tokens");
  fs::remove(p16);
  fs::remove(p32);
}

TEST(Training, ParsesIdxAndRejectsBadOnes) {
  std::string img = std::string("\x00\x00\x08\x03", 4) + std::string("\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00\x01", 12) +
                    std::string("\x00\xff", 2);
  Tensor t = parse_idx(img, "img");
  EXPECT_EQ(t.shape(), Shape({2, 1, 1}));
  EXPECT_EQ(t.to_vector<int64_t>(), (std::vector<int64_t>{0, 255}));
  EXPECT_THROW_MSG(parse_idx(img.substr(0, 17), "img"), "need 2 data bytes, the file has 1");
  EXPECT_THROW_MSG(parse_idx(std::string("\x00\x00\x09\x01", 4), "x"), "not an unsigned-byte IDX file");
  EXPECT_THROW_MSG(parse_idx(std::string("\x00\x00", 2), "x"), "too short");
}

// Every 10th chunk is held out, alternately to validation and test; the rest trains.
TEST(Data, HeldOutChunksAlternateBetweenValidationAndTest) {
  std::vector<int32_t> all(95);
  for (int i = 0; i < 95; ++i) all[size_t(i)] = i;
  TokenData d;
  split_chunks(all, 2, 10, d);  // chunks of 2 tokens: chunk 9 -> val, 19 -> test, 29 -> val, ...
  EXPECT_EQ(d.val, (std::vector<int32_t>{18, 19, 58, 59}));
  EXPECT_EQ(d.test, (std::vector<int32_t>{38, 39, 78, 79}));
  EXPECT_EQ(d.train.size(), 95u - 8u);
  EXPECT_EQ(spread_indices(10, 3), (std::vector<int64_t>{1, 5, 8}));
  EXPECT_THROW_MSG(spread_indices(3, 4), "cannot draw 4 of 3");

  ImageSet s{reshape(arange(0, 12, 1, DType::F32), {6, 1, 1, 2}), from_vector(std::vector<int64_t>{0, 1, 2, 3, 4, 5}, {6})};
  ImageSet held = hold_out_images(s, 2);
  EXPECT_EQ(held.labels.to_vector<int64_t>(), (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(s.labels.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(held.images.to_vector<float>(), (std::vector<float>{8, 9, 10, 11}));
  EXPECT_THROW_MSG(hold_out_images(s, 4), "cannot hold out 4 of 4 images");
}

// A tiny Llama on a synthetic token stream: train 6 steps straight, or 3 steps, stop,
// and resume for 3 more from the checkpoint. Weights must be bitwise identical.
TEST(Training, ResumeIsExact) {
  TrainData data;
  for (int i = 0; i < 4000; ++i) data.tokens.train.push_back((i * 7 + i / 13) % 50);
  for (int i = 0; i < 500; ++i) data.tokens.test.push_back((i * 3) % 50);
  data.tokens.vocab = 50;
  LlamaConfig lc = tiny_llama(50, 16, 2, 1, 12);
  auto fresh = [&] {
    Generator g(3);
    Model m;
    m.network = std::make_unique<Llama>(lc, g);
    return m;
  };
  TrainConfig cfg;
  cfg.arch = "llama";
  cfg.steps = 6;
  cfg.batch = 4;
  cfg.warmup = 2;
  cfg.eval_every = 3;
  cfg.ckpt_every = 3;
  cfg.eval_windows = 5;

  cfg.out_dir = tmp("straight");
  Model a = fresh();
  train(a, cfg, data, false, false);

  cfg.out_dir = tmp("split");
  Model b = fresh();
  {
    // Simulate a crash after the step-3 checkpoint: train the full config, then remove
    // everything after step 3, as if the process had been killed there.
    train(b, cfg, data, false, false);
    fs::remove_all(cfg.out_dir + "/step_0000006");
    write_file_atomic(cfg.out_dir + "/latest", "step_0000003\n");
  }
  Model c = fresh();  // a new process: fresh weights, then resume
  train(c, cfg, data, true, false);
  auto pa = a.parameters(), pc = c.parameters();
  ASSERT_EQ(pa.size(), pc.size());
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_EQ(pa[i].to_vector<float>(), pc[i].to_vector<float>()) << i;
  fs::remove_all(tmp("straight"));
  fs::remove_all(tmp("split"));
}

Model llama_model(const LlamaConfig& lc, uint64_t seed) {
  Generator g(seed);
  Model m;
  m.network = std::make_unique<Llama>(lc, g);
  return m;
}

TrainConfig llama_run(int64_t steps, int64_t batch, const std::string& out) {
  TrainConfig cfg;
  cfg.arch = "llama";
  cfg.steps = steps;
  cfg.batch = batch;
  cfg.out_dir = tmp(out);
  return cfg;
}

// Mixed precision (linear layers in bf16 / f16, f32 masters): the model learns as in f32,
// its parameters stay f32, and the run really differs from the f32 one.
TEST(Training, MixedPrecisionLearnsLikeF32WithF32Masters) {
  TrainData data;
  for (int i = 0; i < 4000; ++i) data.tokens.train.push_back((i * 7 + i / 13) % 50);
  for (int i = 0; i < 500; ++i) data.tokens.test.push_back((i * 7 + i / 13) % 50);
  data.tokens.vocab = 50;
  LlamaConfig lc = tiny_llama(50, 32, 2, 1, 16);
  std::map<std::string, double> loss;
  std::map<std::string, std::vector<float>> first;
  for (std::string precision : {"f32", "bf16", "f16"}) {
    Generator g(3);
    Model m;
    m.network = std::make_unique<Llama>(lc, g);
    double before = evaluate(m, data, 0).loss;
    TrainConfig cfg;
    cfg.arch = "llama";
    cfg.steps = 40;
    cfg.batch = 8;
    cfg.warmup = 4;
    cfg.lr = 3e-3;
    cfg.eval_every = cfg.ckpt_every = 40;
    cfg.precision = precision;
    cfg.out_dir = tmp("mixed-" + precision);
    train(m, cfg, data, false, false);
    loss[precision] = evaluate(m, data, 0).loss;
    EXPECT_LT(loss[precision], 0.8 * before) << precision;
    for (Tensor& p : m.parameters()) EXPECT_EQ(p.dtype(), DType::F32) << precision;
    first[precision] = m.parameters()[1].to_vector<float>();
    std::ifstream recorded(fs::path(cfg.out_dir) / "train_config.json");
    EXPECT_EQ(TrainConfig::from_json(nlohmann::json::parse(recorded)).precision, precision);
    fs::remove_all(cfg.out_dir);
  }
  for (std::string precision : {"bf16", "f16"}) {
    EXPECT_NEAR(loss[precision], loss["f32"], 0.05 * loss["f32"]) << precision;
    EXPECT_NE(first[precision], first["f32"]) << precision << " trained exactly as f32: the precision was ignored";
  }
}

TEST(Training, EmptyOrShortDataIsRefusedBeforeTraining) {
  Model m = llama_model(tiny_llama(20, 8, 2, 2, 8), 0);
  TrainConfig cfg = llama_run(2, 2, "short");
  TrainData data;
  data.tokens.vocab = 20;
  data.tokens.train.assign(100, 1);
  data.tokens.test.assign(8, 1);  // one window needs context + 1 = 9
  EXPECT_THROW_MSG(train(m, cfg, data, false, false), "the test stream (8 tokens) is shorter than one window of 9");
  EXPECT_FALSE(fs::exists(cfg.out_dir + "/metrics.jsonl"));  // refused before any step
  data.tokens.test.assign(9, 1);
  data.tokens.train.assign(9, 1);
  EXPECT_THROW_MSG(train(m, cfg, data, false, false), "the training stream (9 tokens) is shorter");
  data.tokens.vocab = 21;
  EXPECT_THROW_MSG(evaluate(m, data), "token ids up to 20 but the model's vocab is 20");

  ViTConfig vc;
  vc.image_size = 8;
  Generator g(0);
  Model v;
  v.network = std::make_unique<ViT>(vc, g);
  TrainData images;
  EXPECT_THROW_MSG(evaluate(v, images), "the test set holds no images");
  std::string empty_idx = std::string("\x00\x00\x08\x03", 4) + be32(0) + be32(8) + be32(8);
  std::string empty_labels = std::string("\x00\x00\x08\x01", 4) + be32(0);
  write_bytes(tmp("images"), empty_idx);
  write_bytes(tmp("labels"), empty_labels);
  EXPECT_EQ(parse_idx(empty_idx, "x").shape(), (Shape{0, 8, 8}));  // well-formed, just empty
  EXPECT_THROW_MSG(load_idx_pair(tmp("images"), tmp("labels")), "holds no images");
  fs::remove(tmp("images"));
  fs::remove(tmp("labels"));
  fs::remove_all(cfg.out_dir);
}

TEST(Training, NonFiniteLossStopsAndKeepsTheLastCheckpoint) {
  TrainData data;
  for (int i = 0; i < 2000; ++i) data.tokens.train.push_back(i % 20);
  data.tokens.test = data.tokens.train;
  data.tokens.vocab = 20;
  Model m = llama_model(tiny_llama(20, 8, 2, 2, 8), 0);
  TrainConfig cfg = llama_run(4, 2, "nan");
  cfg.ckpt_every = 2;
  cfg.eval_every = 100;
  train(m, cfg, data, false, false);  // leaves step 2 and step 4
  // Poison a weight and continue: the first step must stop with a message, and the
  // newest checkpoint must still be the good one.
  m.as<Llama>().final_norm.weight.data<float>()[0] = NAN;
  cfg.steps = 8;
  EXPECT_THROW_MSG(train(m, cfg, data, false, false), "the loss is nan at step 0");
  std::ifstream f(cfg.out_dir + "/latest");
  std::string latest;
  f >> latest;
  EXPECT_EQ(latest, "step_0000004");
  Model back = load_checkpoint(cfg.out_dir + "/" + latest);
  EXPECT_TRUE(std::isfinite(sum(back.as<Llama>().final_norm.weight).item()));
  fs::remove_all(cfg.out_dir);
}

}  // namespace
}  // namespace nmperm

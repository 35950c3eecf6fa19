// The nmperm CLI as a user meets it, in child processes: the field's perplexity protocol
// against transformers, exit codes 0 / 1 / 2 of every subcommand, and options that the data
// would not use refused by name.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "helpers.h"
#include "core/safetensors.h"
#include "models/checkpoint.h"
#include "models/tokenizer.h"

namespace nmperm {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct CliRun {
  int rc = -1;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Cli {
  fs::path dir = test::scratch_path("cli");
  Cli() {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~Cli() { fs::remove_all(dir); }
  // nmperm ARGS... with the cache in the scratch folder; stdout and stderr captured.
  CliRun operator()(std::vector<std::string> args) const {
    args.insert(args.begin(), NMPERM_CLI);
    pid_t pid = fork();
    if (pid == 0) {
      int o = open((dir / "out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int e = open((dir / "err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(o, 1), dup2(e, 2);
      setenv("NMPERM_CACHE", (dir / "cache").c_str(), 1);
      setenv("OMP_NUM_THREADS", "1", 1);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(dir / "out"), slurp(dir / "err")};
  }
};

std::string fixture(const std::string& name) { return std::string(NMPERM_FIXTURES) + "/" + name; }

#define EXPECT_FAILS_WITH(run, code, msg)                                                \
  do {                                                                                   \
    CliRun r_ = (run);                                                                      \
    EXPECT_EQ(r_.rc, code) << r_.err;                                                    \
    EXPECT_NE(r_.err.find(msg), std::string::npos) << "stderr: " << r_.err;              \
  } while (0)

TEST(Cli, PerplexityOfATextFileMatchesTransformersUnderTheFieldsProtocol) {
  Cli nmperm;
  json ref = json::parse(std::ifstream(fixture("tokenizers/wiki_small_reference.json")));
  for (int seqlen : {64, 128}) {
    CliRun r = nmperm({"eval", "--checkpoint", fixture("llama3_tok"), "--text", fixture("tokenizers/wiki_small.txt"),
                    "--seqlen", std::to_string(seqlen), "--json"});
    ASSERT_EQ(r.rc, 0) << r.err;
    json j = json::parse(r.out);
    const json& want = ref[fmt::format("seqlen{}", seqlen)];
    EXPECT_EQ(j["windows"], want["windows"]);
    EXPECT_EQ(j["tokens"], want["windows"].get<int64_t>() * (seqlen - 1));
    EXPECT_NEAR(j["perplexity"].get<double>(), want["perplexity"].get<double>(),
                1e-4 * want["perplexity"].get<double>());
  }
  // The text was tokenized once and then read from the cache.
  EXPECT_EQ(std::distance(fs::directory_iterator(nmperm.dir / "cache" / "tokens"), fs::directory_iterator()), 1);
}

// The Hugging Face round trip: transformers loaded this same export unchanged (no missing or
// unexpected tensors) and computed these logits (tools/make_export_fixture.py).
TEST(Cli, TransformersComputesWhatNmpermComputesOnTheDefaultExport) {
  Cli nmperm;
  SafeTensors ref = load_safetensors(fixture("llama3_tok_ria_transformers.safetensors"));
  std::string text = fixture("tokenizers/wiki_small.txt"), out = (nmperm.dir / "export").string();
  CliRun r = nmperm({"prune", "--checkpoint", fixture("llama3_tok"), "--text", text, "--calib", text, "--seqlen", "64",
                     "--nsamples", "8", "--permute", "ria", "--out", out});
  ASSERT_EQ(r.rc, 0) << r.err;
  Model m = load_checkpoint(out + "/ria");
  auto tok = load_tokenizer(out + "/ria");  // the copied tokenizer gives transformers' ids
  ASSERT_TRUE(tok);
  std::vector<int32_t> ids =
      tok->encode_with_special("In the beginning God created the heaven and the earth.\n\n And the earth was without form");
  Tensor want_ids = ref.at("input_ids");
  ASSERT_EQ(std::vector<int64_t>(ids.begin(), ids.end()), want_ids.to_vector<int64_t>());
  NoGradGuard ng;
  EXPECT_TRUE(test::all_close(m.forward(want_ids), ref.at("logits"), 1e-5, 1e-4));
  // And the export is not the dense model (the comparison can fail).
  EXPECT_FALSE(test::all_close(load_checkpoint(fixture("llama3_tok")).forward(want_ids), ref.at("logits"), 1e-5, 1e-4));
}

TEST(Cli, ViTsEvaluateAndPruneOnImageFolders) {
  Cli nmperm;
  ViTConfig c;
  c.image_size = 24, c.num_channels = 3, c.num_labels = 2, c.hidden_size = 16, c.intermediate_size = 32;
  c.num_hidden_layers = 1, c.num_attention_heads = 2;
  Generator g(0);
  Model m;
  m.network = std::make_unique<ViT>(c, g);
  save_checkpoint(m, (nmperm.dir / "vit").string());
  fs::copy_file(fixture("images/bilinear/preprocessor_config.json"), nmperm.dir / "vit" / "preprocessor_config.json",
                fs::copy_options::overwrite_existing);
  std::string ckpt = (nmperm.dir / "vit").string(), folder = fixture("images/folder");
  CliRun e = nmperm({"eval", "--checkpoint", ckpt, "--images", folder, "--json"});
  ASSERT_EQ(e.rc, 0) << e.err;
  EXPECT_EQ(json::parse(e.out)["examples"], 8);
  // --pillow 12 resizes two of the portrait images differently (tests/test_images.cpp): the
  // option is honoured, and refused where no image folder is read.
  CliRun e12 = nmperm({"eval", "--checkpoint", ckpt, "--images", folder, "--json", "--pillow", "12"});
  ASSERT_EQ(e12.rc, 0) << e12.err;
  EXPECT_NE(json::parse(e12.out)["loss"], json::parse(e.out)["loss"]);
  EXPECT_FAILS_WITH(nmperm({"eval", "--checkpoint", ckpt, "--images", folder, "--pillow", "11"}), 2, "--pillow");
  EXPECT_FAILS_WITH(nmperm({"eval", "--checkpoint", fixture("vit_tiny"), "--pillow", "12"}), 1,
                    "--pillow applies to --images");
  CliRun p = nmperm({"prune", "--checkpoint", ckpt, "--images", folder, "--calib-images", folder, "--nsamples", "8",
                     "--permute", "none,ria"});
  EXPECT_EQ(p.rc, 0) << p.err;
  EXPECT_FAILS_WITH(nmperm({"prune", "--checkpoint", ckpt, "--images", folder}), 1, "--images needs --calib-images");
  EXPECT_FAILS_WITH(nmperm({"eval", "--checkpoint", fixture("llama_tiny"), "--images", folder}), 1,
                    "--images applies to ViTs");
}

TEST(Cli, EvalScoresExactlyTheFileItIsGiven) {
  Cli nmperm;
  std::string tokens;
  for (int i = 0; i < 16 * 10 + 5; ++i) tokens.push_back(char(i % 64)), tokens.push_back(0);
  std::ofstream(nmperm.dir / "t.u16", std::ios::binary) << tokens;
  std::string file = (nmperm.dir / "t.u16").string();
  for (const char* opt : {"--data", "--val"}) {  // max_position_embeddings 16: 10 windows of 16 + 1
    CliRun r = nmperm({"eval", "--checkpoint", fixture("llama_tiny"), opt, file, "--json"});
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(json::parse(r.out)["windows"], 10) << opt;
    EXPECT_EQ(json::parse(r.out)["tokens"], 160) << opt;
  }
  EXPECT_FAILS_WITH(nmperm({"eval", "--checkpoint", fixture("llama_tiny"), "--data", file, "--val", file}), 1,
                    "give one file to evaluate: --data or --val, not both");
}

TEST(Cli, OptionsTheDataDoesNotUseAreRefusedByName) {
  Cli nmperm;
  EXPECT_FAILS_WITH(nmperm({"eval", "--checkpoint", fixture("vit_tiny"), "--windows", "3"}), 1,
                    "--windows applies to language models");
  EXPECT_FAILS_WITH(nmperm({"eval", "--checkpoint", fixture("vit_tiny"), "--seqlen", "8"}), 1,
                    "--seqlen applies to language models; the model is a ViT");
  EXPECT_FAILS_WITH(nmperm({"calibrate", "--checkpoint", fixture("llama_tiny"), "--out", "x", "--val-images", "5"}), 1,
                    "--val-images applies to ViTs");
  EXPECT_FAILS_WITH(nmperm({"calibrate", "--checkpoint", fixture("llama_tiny"), "--out", "x", "--token-format", "u16"}),
                    1, "--token-format applies to token files given with --data, not the KJV default");
  EXPECT_FAILS_WITH(nmperm({"eval", "--checkpoint", fixture("llama_tiny"), "--text", fixture("tokenizers/wiki_small.txt")}),
                    1, "has no tokenizer.json or tokenizer.model: --text needs the checkpoint's tokenizer");
  EXPECT_FAILS_WITH(nmperm({"prune", "--checkpoint", fixture("llama3_tok"), "--text", fixture("tokenizers/wiki_small.txt")}),
                    1, "--text needs --calib FILE");
  EXPECT_FAILS_WITH(nmperm({"eval", "--checkpoint", fixture("llama3_tok"), "--calib", "x"}), 2,
                    "--calib");  // eval does not calibrate: not one of its options
  EXPECT_FAILS_WITH(nmperm({"prune", "--checkpoint", fixture("llama_tiny"), "--permute", "ria", "--steps", "3"}), 1,
                    "--steps is not used: it applies to learned / permllm, which --permute does not run");
  EXPECT_FAILS_WITH(nmperm({"permute-matrix", "--weights", fixture("llama_tiny/model.safetensors"), "--tensor", "w",
                            "--permute", "ria", "--warm-start", "ria"}),
                    1, "--warm-start is not used");
  EXPECT_FAILS_WITH(nmperm({"prune", "--checkpoint", fixture("llama_tiny"), "--layout", "permuted"}), 1,
                    "--layout applies to the --out checkpoints");
  EXPECT_FAILS_WITH(nmperm({"demo", "--models", "llama", "--vit-data", "x"}), 1, "--vit-data is not used");
  EXPECT_FAILS_WITH(nmperm({"prune", "--checkpoint", fixture("llama_tiny"), "--permute", "learned", "--calibration",
                            "sequential"}),
                    1, "--calibration sequential runs block by block");
  EXPECT_FAILS_WITH(nmperm({"prune", "--checkpoint", fixture("llama_tiny"), "--permute", "ria", "--resume"}), 1,
                    "--resume needs --out");
  EXPECT_FAILS_WITH(nmperm({"prune", "--checkpoint", fixture("llama_tiny"), "--permute", "learned", "--pipeline",
                            "block"}),
                    1, "the 'task' objective trains against the whole model; use --objective block");
  // A tokenizer whose ids the embedding cannot hold; a text shorter than one window.
  fs::copy(fixture("llama_tiny"), nmperm.dir / "mismatch");
  fs::copy(fixture("llama3_tok/tokenizer.json"), nmperm.dir / "mismatch");
  EXPECT_FAILS_WITH(nmperm({"eval", "--checkpoint", (nmperm.dir / "mismatch").string(), "--text",
                            fixture("tokenizers/wiki_small.txt"), "--seqlen", "8"}),
                    1, "but the model's vocab is 64");
  std::ofstream(nmperm.dir / "short.txt") << "Too short.\n";
  EXPECT_FAILS_WITH(nmperm({"eval", "--checkpoint", fixture("llama3_tok"), "--text", (nmperm.dir / "short.txt").string()}),
                    1, "shorter than one window of 128 (--seqlen)");
}

TEST(Cli, ExitCodesOfEverySubcommand) {
  Cli nmperm;
  const std::string missing = (nmperm.dir / "missing").string();
  for (const char* sub : {"demo", "train", "eval", "calibrate", "permute-matrix", "prune"}) {
    SCOPED_TRACE(sub);
    CliRun usage = nmperm({sub, "--no-such-option"});
    EXPECT_EQ(usage.rc, 2) << usage.err;
    EXPECT_NE(usage.err.find("Run with --help"), std::string::npos);
    EXPECT_EQ(nmperm({sub, "--help"}).rc, 0);
  }
  // Runtime errors: files that do not exist.
  EXPECT_FAILS_WITH(nmperm({"eval", "--checkpoint", missing}), 1, "does not exist");
  EXPECT_FAILS_WITH(nmperm({"calibrate", "--checkpoint", missing, "--out", "x"}), 1, "does not exist");
  EXPECT_FAILS_WITH(nmperm({"prune", "--checkpoint", missing}), 1, "does not exist");
  EXPECT_FAILS_WITH(nmperm({"permute-matrix", "--weights", missing, "--tensor", "w"}), 1, "missing");
  EXPECT_FAILS_WITH(nmperm({"train", "--arch", "llama", "--out", (nmperm.dir / "t").string(), "--data", missing}), 1,
                    "cannot open");
  EXPECT_FAILS_WITH(nmperm({"demo", "--config", missing}), 1, "missing");
  // Success, on the tiny fixtures.
  std::string text = fixture("tokenizers/wiki_small.txt");
  EXPECT_EQ(nmperm({"eval", "--checkpoint", fixture("llama3_tok"), "--text", text, "--seqlen", "32"}).rc, 0);
  CliRun cal = nmperm({"calibrate", "--checkpoint", fixture("llama3_tok"), "--text", text, "--calib", text, "--seqlen",
                    "32", "--nsamples", "8", "--out", (nmperm.dir / "norms.safetensors").string()});
  EXPECT_EQ(cal.rc, 0) << cal.err;
  EXPECT_NE(cal.out.find("from 8 token windows"), std::string::npos) << cal.out;
  CliRun pm = nmperm({"permute-matrix", "--weights", fixture("llama3_tok/model.safetensors"), "--tensor",
                   "model.layers.0.mlp.down_proj.weight", "--score", "magnitude", "--permute", "channel-swap"});
  EXPECT_EQ(pm.rc, 0) << pm.err;
  CliRun pr = nmperm({"prune", "--checkpoint", fixture("llama3_tok"), "--text", text, "--calib", text, "--seqlen", "32",
                   "--nsamples", "8", "--permute", "none,ria"});
  EXPECT_EQ(pr.rc, 0) << pr.err;
  EXPECT_NE(pr.out.find("ria"), std::string::npos) << pr.out;
  std::string tokens;
  for (int i = 0; i < 4000; ++i) tokens.push_back(char(i * 7 % 64)), tokens.push_back(0);
  std::ofstream(nmperm.dir / "t.u16", std::ios::binary) << tokens;
  CliRun tr = nmperm({"train", "--arch", "llama", "--out", (nmperm.dir / "trained").string(), "--model-config",
                      fixture("llama_tiny/config.json"), "--data", (nmperm.dir / "t.u16").string(), "--steps", "2",
                      "--batch", "2", "--eval-every", "2"});
  EXPECT_EQ(tr.rc, 0) << tr.err;
}

}  // namespace
}  // namespace nmperm

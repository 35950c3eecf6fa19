// Crash safety, through the real CLI in child processes: a training run killed with
// SIGKILL and resumed follows the uninterrupted run's loss trajectory bitwise (fixed
// threads), and a disk that fills while a checkpoint is written (RLIMIT_FSIZE with
// SIGXFSZ ignored, so writes fail with EFBIG as they would with ENOSPC) stops training
// with a message and leaves the previous checkpoint loadable. And a recorded demo run
// reruns to the same figures.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/safetensors.h"
#include "helpers.h"
#include "models/checkpoint.h"

extern char** environ;

namespace nmperm {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct Scratch {
  fs::path dir = test::scratch_path("crash");
  Scratch() {
    fs::remove_all(dir);
    fs::create_directories(dir);
    // A small Llama on a token file: a few milliseconds per step.
    LlamaConfig c;
    c.vocab_size = 64;
    c.hidden_size = 32;
    c.intermediate_size = 64;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 2;
    c.num_key_value_heads = 1;
    c.max_position_embeddings = 32;
    std::ofstream(dir / "config.json") << c.to_json().dump();
    std::string tokens;
    for (int i = 0; i < 20000; ++i) {
      uint16_t t = uint16_t((i * 7 + i / 11 + (i % 13) * (i % 5)) % 64);
      tokens.append(reinterpret_cast<const char*>(&t), 2);
    }
    std::ofstream(dir / "tokens.u16", std::ios::binary) << tokens;
  }
  ~Scratch() { fs::remove_all(dir); }

  std::vector<std::string> train_args(const std::string& out, int steps) const {
    return {NMPERM_CLI, "train", "--arch", "llama", "--model-config", (dir / "config.json").string(), "--data",
            (dir / "tokens.u16").string(), "--out", (dir / out).string(), "--steps", std::to_string(steps), "--batch",
            "8", "--ckpt-every", "7", "--eval-every", "50", "--eval-windows", "8", "--threads", "2", "--seed", "5"};
  }
};

// Starts argv with stdout/stderr to `log`; returns the child's pid.
pid_t spawn(std::vector<std::string> argv, const fs::path& log) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  EXPECT_EQ(rc, 0) << "cannot start " << argv[0];
  return pid;
}

int wait_status(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

int64_t count_lines(const fs::path& p) {
  std::ifstream f(p);
  return std::count(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>(), '\n');
}

// step -> the metrics record without its wall time; a resumed run logs some steps twice,
// and the later record (from the resumed process) is the one that counts.
std::map<int64_t, json> trajectory(const fs::path& metrics) {
  std::map<int64_t, json> out;
  std::ifstream f(metrics);
  for (std::string line; std::getline(f, line);) {
    json r = json::parse(line);
    r.erase("elapsed_s");
    out[r["step"].get<int64_t>()] = r;
  }
  return out;
}

void expect_same_weights(const fs::path& a, const fs::path& b) {
  SafeTensors ta = load_safetensors((a / "model.safetensors").string());
  SafeTensors tb = load_safetensors((b / "model.safetensors").string());
  ASSERT_EQ(ta.tensors.size(), tb.tensors.size());
  for (auto& [name, t] : ta.tensors) EXPECT_EQ(t.to_vector<float>(), tb.at(name).to_vector<float>()) << name;
}

TEST(CrashSafety, SigkillThenResumeFollowsTheUninterruptedRunBitwise) {
  Scratch s;
  const int steps = 240;
  ASSERT_EQ(wait_status(spawn(s.train_args("straight", steps), s.dir / "straight.log")), 0) << slurp(s.dir / "straight.log");

  // Kill the second run with SIGKILL partway, at whatever it is doing (possibly writing a
  // checkpoint), then resume it in a new process.
  fs::path metrics = s.dir / "killed" / "metrics.jsonl";
  pid_t pid = spawn(s.train_args("killed", steps), s.dir / "killed.log");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while ((!fs::exists(metrics) || count_lines(metrics) < 90) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  kill(pid, SIGKILL);
  int status = wait_status(pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the run ended before it could be killed; make it longer\n" << slurp(s.dir / "killed.log");
  int64_t logged = count_lines(metrics);
  ASSERT_LT(logged, steps);

  std::vector<std::string> resume = s.train_args("killed", steps);
  resume.push_back("--resume");
  ASSERT_EQ(wait_status(spawn(resume, s.dir / "resumed.log")), 0) << slurp(s.dir / "resumed.log");
  EXPECT_NE(slurp(s.dir / "resumed.log").find("resuming from step"), std::string::npos) << slurp(s.dir / "resumed.log");

  auto straight = trajectory(s.dir / "straight" / "metrics.jsonl"), resumed = trajectory(metrics);
  ASSERT_EQ(straight.size(), size_t(steps));
  ASSERT_EQ(resumed.size(), size_t(steps));
  for (auto& [step, rec] : straight) EXPECT_EQ(rec, resumed[step]) << "step " << step;
  expect_same_weights(s.dir / "straight", s.dir / "killed");
}

TEST(CrashSafety, FullDiskWhileSavingKeepsThePreviousCheckpoint) {
  Scratch s;
  ASSERT_EQ(wait_status(spawn(s.train_args("full", 14), s.dir / "first.log")), 0) << slurp(s.dir / "first.log");
  fs::path out = s.dir / "full";
  std::string latest = slurp(out / "latest");
  ASSERT_EQ(latest, "step_0000014\n");
  std::string weights = slurp(out / latest.substr(0, latest.size() - 1) / "model.safetensors");

  // Continue to step 21 with files limited to 16 KiB: the model file (about 60 KB) cannot
  // be written. The shell ignores SIGXFSZ, and the ignored disposition survives exec.
  std::vector<std::string> args = s.train_args("full", 21);
  args.push_back("--resume");
  std::string cmd = "trap '' XFSZ; ulimit -f 32; exec";
  for (auto& a : args) cmd += " '" + a + "'";
  int status = wait_status(spawn({"/bin/sh", "-c", cmd}, s.dir / "second.log"));
  std::string log = slurp(s.dir / "second.log");
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << log;
  EXPECT_NE(log.find("the checkpoint of step 21 could not be saved"), std::string::npos) << log;
  EXPECT_NE(log.find("File too large"), std::string::npos) << log;
  EXPECT_EQ(slurp(out / "latest"), latest);
  EXPECT_FALSE(fs::exists(out / "step_0000021"));
  EXPECT_EQ(slurp(out / "step_0000014" / "model.safetensors"), weights);
  for (auto& e : fs::recursive_directory_iterator(out))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
  Model m = load_checkpoint((out / "step_0000014").string());
  EXPECT_TRUE(std::isfinite(sum(m.as<Llama>().embed_tokens).item()));
}

// `nmperm demo --config report.json` reruns a recorded run: on a tiny recorded run of the
// Llama (a 4-step model, every method, short learning, a few windows) the rerun reproduces
// every figure of the report; only wall times and the "cached" flag of the model differ.
TEST(Demo, ConfigReproducesEveryFigureOfARecordedRun) {
  fs::path dir = test::scratch_path("demo");
  fs::remove_all(dir);
  fs::create_directories(dir);
  json recipe = {{"arch", "llama"}, {"steps", 4},      {"batch", 4},          {"warmup", 1},
                 {"lr", 2e-3},      {"eval_every", 100}, {"ckpt_every", 100}, {"eval_windows", 4}};
  json compare = {{"methods", {"none", "random", "channel-swap", "ria", "permllm", "learned"}},
                  {"seeds", 1},
                  {"eval_windows", 8},
                  {"calib_batches", 1},
                  {"calib_batch", 4},
                  {"sweeps", 1},
                  {"escapes", 1},
                  {"warm_start", "ria"},
                  {"learn", {{"steps", 2}, {"eval_every", 1}, {"holdout", 8}, {"batch", 4}}}};
  json config = {{"config", {{"quick", false}, {"models", "llama"}, {"recipes", {{"llama", recipe}}},
                             {"compare", {{"llama", compare}}}}}};
  std::ofstream(dir / "tiny.json") << config.dump();
  auto demo = [&](const fs::path& config_file, const std::string& out) {
    return std::vector<std::string>{NMPERM_CLI, "demo", "--config", config_file.string(), "--out", (dir / out).string(),
                                    "--cache", (dir / "cache").string(), "--threads", "2"};
  };
  ASSERT_EQ(wait_status(spawn(demo(dir / "tiny.json", "first"), dir / "first.log")), 0) << slurp(dir / "first.log");
  ASSERT_EQ(wait_status(spawn(demo(dir / "first" / "report.json", "again"), dir / "again.log")), 0)
      << slurp(dir / "again.log");
  // Everything but timings (and whether the model came from the cache).
  std::function<void(json&)> strip = [&](json& j) {
    if (j.is_object()) {
      for (const char* k : {"seconds", "train_seconds", "elapsed_s", "date", "cached"}) j.erase(k);
      for (auto& [k, v] : j.items()) strip(v);
    } else if (j.is_array()) {
      for (auto& v : j) strip(v);
    }
  };
  json a = json::parse(slurp(dir / "first" / "report.json")), b = json::parse(slurp(dir / "again" / "report.json"));
  ASSERT_EQ(a["models"]["llama"]["comparison"]["runs"].size(), 6u);
  strip(a);
  strip(b);
  json diff = json::diff(a, b);  // a JSON patch: one entry per differing value
  std::string first;
  for (size_t i = 0; i < std::min<size_t>(diff.size(), 5); ++i) first += diff[i]["path"].get<std::string>() + "\n";
  EXPECT_TRUE(diff.empty()) << diff.size() << " figures differ, the first:\n" << first;
  EXPECT_EQ(a["models"]["llama"]["comparison"]["runs"][0]["eval"]["windows"], 8);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace nmperm

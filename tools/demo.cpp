// nmperm demo: the whole pipeline on the embedded default models.
//   1. train the embedded ViT (Fashion-MNIST) and Llama (KJV bytes), or reuse the copies
//      cached by an earlier run with the same recipe (training resumes after Ctrl-C);
//   2. per model: evaluate, calibrate, prune to 2:4 with Wanda scores and every
//      permutation method (seeds for the methods with randomness), evaluate each;
//   3. write OUT/report.json (every figure, the full config, seeds, versions, timings;
//      rewritten after every run, so an interrupted demo keeps what finished),
//      OUT/report.md (the tables) and plots drawn with gnuplot when it is installed.
// `--config OUT/report.json` reruns a recorded run with the same options and seeds.
#include <algorithm>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "core/safetensors.h"
#include "kernels/runtime.h"
#include "permute/compare.h"
#include "tools/cli.h"

namespace nmperm::cli {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// The embedded training recipes (README, "Embedded default models").
TrainConfig recipe(const std::string& arch, bool quick) {
  TrainConfig c;
  c.arch = arch;
  c.seed = 0;
  if (architecture(arch).takes_images()) {
    c.steps = quick ? 150 : 3000;
    c.batch = 128;
    c.lr = 2e-3;
    c.warmup = quick ? 20 : 200;
    c.min_lr_ratio = 0.02;
  } else {
    c.steps = quick ? 150 : 3000;
    c.batch = 32;
    c.lr = 2e-3;
    c.warmup = quick ? 20 : 150;
    c.min_lr_ratio = 0.1;
  }
  c.eval_every = c.ckpt_every = quick ? 200 : architecture(arch).takes_images() ? 1000 : 500;
  return c;
}

CompareOptions comparison(bool quick, int64_t seeds, uint64_t seed) {
  CompareOptions o;
  o.methods = permute_method_names();  // every method
  o.seeds = seeds;
  o.seed = seed;
  // The defaults of `nmperm prune`: the demo's tables are the README's.
  if (quick) {
    o.learn = {{"steps", 30}, {"eval_every", 10}};
    o.search.max_sweeps = 2;
    o.search.escapes = 0;
    o.calib.batches = 4;
  }
  return o;
}

std::string now_utc() {
  std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
  return buf;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.starts_with("model name")) return line.substr(line.find(':') + 2);
  return "unknown";
}

std::string cache_dir(const TrainConfig& cfg, const std::string& cache) {
  const char* data = architecture(cfg.arch).takes_images() ? "fmnist55k" : "kjv";
  return (fs::path(cache) / fmt::format("{}-{}-{}steps", cfg.arch, data, cfg.steps)).string();
}

json read_json(const fs::path& p) {
  std::ifstream f(p);
  return f ? json::parse(f, nullptr, false) : json(json::value_t::discarded);
}

// True when `saved` (a config.json) describes the embedded default architecture with its
// initialisation (the vocabulary of a Llama follows its data).
bool embedded_default(const std::string& arch, const json& saved) {
  if (saved.is_discarded()) return false;
  try {
    return architecture(arch).embedded_default(saved);
  } catch (const Error&) {
    return false;  // not a config of this architecture: not the cached model
  }
}

// True when dir holds a finished training run of exactly this recipe and model.
bool trained(const TrainConfig& cfg, const std::string& dir, bool* same_recipe = nullptr) {
  json j = read_json(fs::path(dir) / "train_config.json");
  // The model's config.json: beside the finished model, or in the newest checkpoint of an
  // interrupted run.
  fs::path config = fs::path(dir) / "config.json";
  if (!fs::exists(config)) {
    std::ifstream latest(fs::path(dir) / "latest");
    std::string step;
    latest >> step;
    config = fs::path(dir) / step / "config.json";
  }
  bool same = !j.is_discarded() && TrainConfig::from_json(j).to_json() == cfg.to_json() &&
              embedded_default(cfg.arch, read_json(config));
  if (same_recipe) *same_recipe = same;
  return same && fs::exists(fs::path(dir) / "model.safetensors");
}

// The cached model trained with `cfg`, training (or resuming) it when absent.
std::string ensure_model(const TrainConfig& recipe_cfg, const std::string& cache, const TrainData& data, json& info) {
  TrainConfig cfg = recipe_cfg;
  cfg.out_dir = cache_dir(cfg, cache);
  bool same_recipe = false;
  if (trained(cfg, cfg.out_dir, &same_recipe)) {
    std::fprintf(stderr, "%s: reusing the cached model %s\n", cfg.arch.c_str(), cfg.out_dir.c_str());
    info["cached"] = true;
  } else {
    if (!same_recipe && fs::exists(cfg.out_dir)) fs::remove_all(cfg.out_dir);  // another recipe's leftovers
    std::fprintf(stderr, "%s: training the embedded default (%lld steps; cached in %s, resumed if interrupted)\n",
                 cfg.arch.c_str(), (long long)cfg.steps, cfg.out_dir.c_str());
    Model m = fresh_model(cfg.arch, json::object(), data, cfg.seed);
    auto t0 = std::chrono::steady_clock::now();
    train(m, cfg, data, /*resume=*/true);
    info["cached"] = false;
    info["train_seconds"] = seconds_since(t0);
  }
  info["checkpoint"] = cfg.out_dir;
  info["recipe"] = cfg.to_json();
  return cfg.out_dir;
}

// gnuplot input: whitespace-separated columns, '-' for missing values.
void write_text(const fs::path& p, const std::string& s) { write_file_atomic(p.string(), s); }

// Writes dir/NAME.gp and runs gnuplot on it in dir; adds `output` to drawn on success.
void draw(const fs::path& dir, const std::string& name, const std::string& script, const std::string& output,
          std::vector<std::string>& drawn) {
  write_text(dir / (name + ".gp"), script);
  std::string cmd = "cd \"" + dir.string() + "\" && gnuplot " + name + ".gp 2>/dev/null";
  if (std::system(cmd.c_str()) == 0) drawn.push_back(output);
}

// Draws the plots of one model's comparison into dir; returns the files drawn.
std::vector<std::string> plot(const std::string& arch, const json& cmp, const fs::path& dir) {
  std::vector<std::string> drawn;
  if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) return drawn;
  fs::create_directories(dir);
  // 0. The headline: every method's test loss (mean, and the range over seeds) beside
  // dense and none.
  {
    std::string data;
    std::vector<std::string> order;
    for (auto& run : cmp["runs"])
      if (std::find(order.begin(), order.end(), run["method"].get<std::string>()) == order.end())
        order.push_back(run["method"]);
    double none = NAN;
    for (size_t i = 0; i < order.size(); ++i) {
      double lo = INFINITY, hi = -INFINITY, sum = 0;
      int n = 0;
      for (auto& run : cmp["runs"])
        if (run["method"] == order[i]) {
          double l = run["eval"]["loss"].get<double>();
          lo = std::min(lo, l), hi = std::max(hi, l), sum += l, ++n;
        }
      if (order[i] == "none") none = sum / n;
      data += fmt::format("{} {:.6f} {:.6f} {:.6f} {}\n", i, sum / n, lo, hi, order[i]);
    }
    write_text(dir / (arch + "_methods.dat"), data);
    double dense = cmp["dense"]["loss"].get<double>();
    std::string gp = fmt::format(
        "set terminal svg size 800,420 dynamic background '#ffffff'\nset output '{0}_methods.svg'\n"
        "set title '2:4 pruning, Wanda scores ({0}): test loss of every method (bars: range over seeds)' noenhanced\n"
        "set ylabel 'test loss (lower is better)'\nset grid ytics\nset key top right\nset xrange [-0.6:{1}-0.4]\n"
        "set style fill solid 0.6\nset boxwidth 0.6\n"
        "plot '{0}_methods.dat' using 1:2:xtic(5) with boxes notitle, '' using 1:2:3:4 with yerrorbars pt 0 lc rgb "
        "'black' notitle, {2} with lines dt 2 lw 2 title 'dense', {3} with lines dt 3 lw 2 title 'none'\n",
        arch, order.size(), dense, std::isfinite(none) ? none : dense);
    draw(dir, arch + "_methods", gp, arch + "_methods.svg", drawn);
  }
  // 1. Kept-score fraction per layer and method (mean over seeds).
  std::vector<std::string> methods, layers;
  std::map<std::string, std::map<std::string, std::pair<double, int>>> kept;  // method -> layer -> (sum, n)
  for (auto& run : cmp["runs"]) {
    std::string m = run["method"];
    if (std::find(methods.begin(), methods.end(), m) == methods.end()) methods.push_back(m);
    for (auto& l : run["layers"]) {
      std::string name = l["layer"];
      if (std::find(layers.begin(), layers.end(), name) == layers.end()) layers.push_back(name);
      auto& e = kept[m][name];
      e.first += l["kept"].get<double>();
      e.second += 1;
    }
  }
  if (!layers.empty()) {
    std::string data = "layer";
    for (auto& m : methods) data += " " + m;
    data += " bound\n";
    for (size_t i = 0; i < layers.size(); ++i) {
      data += std::to_string(i);
      for (auto& m : methods) {
        auto& e = kept[m][layers[i]];
        data += e.second ? fmt::format(" {:.6f}", e.first / e.second) : " -";
      }
      double bound = 0;
      for (auto& l : cmp["runs"][0]["layers"])
        if (l["layer"] == layers[i]) bound = l["kept_unstructured"];
      data += fmt::format(" {:.6f}\n", bound);
    }
    write_text(dir / (arch + "_kept.dat"), data);
    std::string gp = fmt::format(
        "set terminal svg size 900,450 dynamic background '#ffffff'\nset output '{0}_kept.svg'\n"
        "set title 'Kept Wanda-score fraction per pruned layer, 2:4 ({0})'\n"
        "set xlabel 'pruned layer (in model order: q, k, v, attention output, MLP layers of each block)'\n"
        "set ylabel 'kept fraction'\nset key outside right\nset grid\n"
        "plot for [i=2:{1}] '{0}_kept.dat' using 1:i with linespoints title columnheader(i)\n",
        arch, methods.size() + 2);
    draw(dir, arch + "_kept", gp, arch + "_kept.svg", drawn);
  }
  // 2. Learning curves and 3. the soft permutation block of the first learned run.
  for (auto& run : cmp["runs"]) {
    if (run["method"] != "learned" || !run.contains("learn")) continue;
    std::string steps, evals;
    for (auto& c : run["learn"]["curve"]) {
      if (c.contains("loss")) steps += fmt::format("{} {} {}\n", c["step"].get<int64_t>(), c["loss"].get<double>(), c["eps"].get<double>());
      if (c.contains("holdout"))
        evals += fmt::format("{} {} {}\n", c["step"].get<int64_t>(), c["holdout"].get<double>(), c["kept"].get<double>());
    }
    write_text(dir / (arch + "_learn_steps.dat"), steps);
    write_text(dir / (arch + "_learn_evals.dat"), evals);
    std::string gp = fmt::format(
        "set terminal svg size 900,750 dynamic background '#ffffff'\nset output '{0}_learning.svg'\n"
        "set multiplot layout 3,1 title 'Learned permutation ({0}, seed {1}): training curves'\nset grid\n"
        "set ylabel 'loss'\nplot '{0}_learn_steps.dat' using 1:2 with lines title 'training loss (batch)', "
        "'{0}_learn_evals.dat' using 1:2 with linespoints title 'held-out objective (hard permutation)'\n"
        "set ylabel 'epsilon'\nset logscale y\nplot '{0}_learn_steps.dat' using 1:3 with lines title 'Sinkhorn epsilon'\n"
        "unset logscale y\nset ylabel 'kept fraction'\nset xlabel 'step'\n"
        "plot '{0}_learn_evals.dat' using 1:3 with linespoints title 'mean kept Wanda score'\nunset multiplot\n",
        arch, run["seed"].get<uint64_t>());
    draw(dir, arch + "_learning", gp, arch + "_learning.svg", drawn);
    int64_t B = run["learn"]["soft_block_size"];
    auto soft = run["learn"]["soft_block"].get<std::vector<double>>();
    std::string m;
    for (int64_t i = 0; i < B; ++i) {
      for (int64_t j = 0; j < B; ++j) m += fmt::format("{}{:.5f}", j ? " " : "", soft[size_t(i * B + j)]);
      m += "\n";
    }
    write_text(dir / (arch + "_soft.dat"), m);
    std::string gh = fmt::format(
        "set terminal svg size 600,560 dynamic background '#ffffff'\nset output '{0}_soft_block.svg'\n"
        "set title 'Soft permutation (first site, first group) before hardening ({0})' noenhanced\n"
        "set xlabel 'position'\nset ylabel 'channel'\nset xrange [-0.5:{1}-0.5]\nset yrange [{1}-0.5:-0.5]\n"
        "set palette grey negative\n"
        "plot '{0}_soft.dat' matrix with image notitle\n",
        arch, B);
    draw(dir, arch + "_soft", gh, arch + "_soft_block.svg", drawn);
    break;
  }
  return drawn;
}

std::string markdown(const json& report) {
  std::string md = "# nmperm demo report\n\n";
  md += fmt::format("{} on {} ({} threads, OpenBLAS {}), {}.{}\n\n", report["date"].get<std::string>(),
                    report["machine"]["cpu"].get<std::string>(), report["machine"]["threads"].get<int>(),
                    report["machine"]["blas"].get<std::string>(), report["nmperm"].get<std::string>(),
                    report["config"]["quick"].get<bool>()
                        ? " **Quick run** (--quick): fewer steps and seeds, figures are indicative only."
                        : "");
  md += "2:4 pruning with Wanda scores of every pruned linear layer (q, k, v, attention output, both MLP layers of "
        "every block); metrics are mean ± half the range over seeds for methods with randomness. "
        "\"loss gap closed\" is (loss(none) - loss(method)) / (loss(none) - loss(dense)); \"loss - ria\" is the mean "
        "paired per-window (Llama) or per-image (ViT) loss difference to RIA with twice its standard error, and a "
        "method is \"ahead\" or \"behind\" only when that difference exceeds both twice the standard error and "
        "its seed spread.\n";
  for (auto& [arch, m] : report["models"].items()) {
    if (!m.contains("comparison")) continue;
    const json& cmp = m["comparison"];
    md += fmt::format("\n## {}\n\nModel: `{}`{}.\n\n",
                      architecture(arch).takes_images() ? "ViT on Fashion-MNIST" : "Llama on KJV bytes",
                      m["training"]["checkpoint"].get<std::string>(),
                      m["training"]["cached"].get<bool>() ? " (cached)" : "");
    md += "Test split (reported):\n\n" + methods_table(cmp, true, Split::Test);
    if (cmp.contains("dense_val"))
      md += "\nValidation split (where settings are chosen):\n\n" + methods_table(cmp, true, Split::Validation);
    json plots = m.value("plots", json::array());
    for (auto& p : plots) md += fmt::format("\n![{0}](plots/{0})\n", p.get<std::string>());
    if (plots.empty() && m.contains("plots"))
      md += "\n(No plots: gnuplot is not installed. `apt-get install gnuplot-nox`, then rerun with `--config`.)\n";
  }
  return md;
}

}  // namespace

int run_demo(DemoCli& o) {
  if (o.threads > 0) kernels::set_num_threads(o.threads);
  json recorded;
  if (!o.config.empty()) {
    std::ifstream f(o.config);
    NMPERM_CHECK(f, "cannot open --config '{}'", o.config);
    json r = json::parse(f, nullptr, false);
    NMPERM_CHECK(!r.is_discarded() && r.contains("config"), "--config '{}' is not a demo report.json", o.config);
    recorded = r["config"];
    o.quick = recorded.value("quick", false);
    o.models = recorded.value("models", o.models);
  }
  int64_t seeds = o.seeds > 0 ? o.seeds : (o.quick ? 1 : 3);
  std::vector<std::string> models;
  for (size_t a = 0; a <= o.models.size();) {
    size_t b = o.models.find(',', a);
    if (b == std::string::npos) b = o.models.size();
    std::string m = o.models.substr(a, b - a);
    NMPERM_CHECK(find_architecture(m), "--models: unknown model '{}' ({})", m, fmt::join(architecture_names(), ", "));
    models.push_back(m);
    a = b + 1;
  }
  auto image_model = [](const std::string& m) { return architecture(m).takes_images(); };
  NMPERM_CHECK(o.vit_data.data.empty() || std::any_of(models.begin(), models.end(), image_model),
               "--vit-data is not used: --models has no vit");
  std::string cache = o.llama_data.cache.empty() ? default_cache() : o.llama_data.cache;
  fs::create_directories(o.out);
  json report = {{"nmperm", "nmperm " NMPERM_VERSION},
                 {"date", now_utc()},
                 {"machine", {{"cpu", cpu_model()}, {"threads", kernels::num_threads()}, {"blas", kernels::blas_core()}}},
                 {"config", {{"quick", o.quick}, {"models", o.models}, {"recipes", json::object()}, {"compare", json::object()}}},
                 {"models", json::object()}};
  auto save = [&] {
    write_file_atomic((fs::path(o.out) / "report.json").string(), report.dump(1) + "\n");
    write_file_atomic((fs::path(o.out) / "report.md").string(), markdown(report));
  };
  std::fprintf(stderr, "nmperm demo%s: models %s, %lld seed(s), %d threads (OpenBLAS %s); report in %s\n",
               o.quick ? " --quick (a reduced run)" : "", o.models.c_str(), (long long)seeds, kernels::num_threads(),
               kernels::blas_core().c_str(), o.out.c_str());
  auto t0 = std::chrono::steady_clock::now();
  for (size_t k = 0; k < models.size(); ++k) {
    const std::string& arch = models[k];
    std::fprintf(stderr, "\n[%zu/%zu] %s\n", k + 1, models.size(), arch.c_str());
    TrainConfig rc = recorded.contains("recipes") && recorded["recipes"].contains(arch)
                         ? TrainConfig::from_json(recorded["recipes"][arch])
                         : recipe(arch, o.quick);
    // A quick run uses the full embedded model when an earlier run has cached it.
    if (o.quick && recorded.empty() && trained(recipe(arch, false), cache_dir(recipe(arch, false), cache)))
      rc = recipe(arch, false);
    CompareOptions co = recorded.contains("compare") && recorded["compare"].contains(arch)
                            ? CompareOptions::from_json(recorded["compare"][arch])
                            : comparison(o.quick, seeds, o.seed);
    report["config"]["recipes"][arch] = rc.to_json();
    report["config"]["compare"][arch] = co.to_json();
    DataOptions dopt = architecture(arch).takes_images() ? o.vit_data : o.llama_data;
    dopt.cache = cache;
    TrainData data = load_data(architecture(arch).data, dopt, true);
    json& entry = report["models"][arch];
    entry["training"] = json::object();
    std::string ckpt = ensure_model(rc, cache, data, entry["training"]);
    json& cmp_slot = entry["comparison"];
    compare_methods(ckpt, data, co, [&](const json& r) {
      cmp_slot = r;
      report["seconds"] = seconds_since(t0);
      save();
    });
    entry["plots"] = plot(arch, cmp_slot, fs::path(o.out) / "plots");
    save();
    std::printf("\n%s\n%s", architecture(arch).takes_images() ? "ViT on Fashion-MNIST" : "Llama on KJV bytes",
                methods_table(cmp_slot, false).c_str());
  }
  report["seconds"] = seconds_since(t0);
  save();
  std::printf("\nreport: %s/report.md, %s/report.json (%.0f s)\n", o.out.c_str(), o.out.c_str(), seconds_since(t0));
  return 0;
}

}  // namespace nmperm::cli

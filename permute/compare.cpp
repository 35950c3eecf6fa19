#include "permute/compare.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "kernels/runtime.h"
#include "permute/blockwise.h"

namespace nmperm {

using json = nlohmann::json;

json CompareOptions::to_json() const {
  return {{"pattern", pattern},
          {"score", score},
          {"methods", methods},
          {"seed", seed},
          {"seeds", seeds},
          {"calib_batches", calib.batches},
          {"calib_batch", calib.batch},
          {"eval_windows", eval_windows},
          {"sweeps", search.max_sweeps},
          {"escapes", search.escapes},
          {"window", search.window},
          {"learn", learn},
          {"warm_start", warm_start},
          {"pipeline", pipeline},
          {"calibration", calibration},
          {"precision", precision}};
}

CompareOptions CompareOptions::from_json(const json& j) {
  CompareOptions o;
  try {
    json_get(j, "pattern", o.pattern);
    json_get(j, "score", o.score);
    json_get(j, "methods", o.methods);
    json_get(j, "seed", o.seed);
    json_get(j, "seeds", o.seeds);
    json_get(j, "calib_batches", o.calib.batches);
    json_get(j, "calib_batch", o.calib.batch);
    json_get(j, "eval_windows", o.eval_windows);
    json_get(j, "sweeps", o.search.max_sweeps);
    json_get(j, "escapes", o.search.escapes);
    json_get(j, "window", o.search.window);
    json_get(j, "learn", o.learn);
    json_get(j, "warm_start", o.warm_start);
    json_get(j, "pipeline", o.pipeline);
    json_get(j, "calibration", o.calibration);
    json_get(j, "precision", o.precision);
  } catch (const json::exception& e) {
    NMPERM_FAIL("comparison options: {}", e.what());
  }
  return o;
}

void merge_learn_options(LearnOptions& o, const json& j) {
  json cur = o.to_json();
  for (auto& [k, v] : j.items()) {
    NMPERM_CHECK(cur.contains(k), "unknown learned-method option '{}'", k);
    cur[k] = v;
  }
  try {
    o.objective = parse_objective(cur["objective"].get<std::string>());
    o.groups = cur["groups"].get<int64_t>();
    o.block_size = cur["block_size"].get<int64_t>();
    o.steps = cur["steps"].get<int64_t>();
    o.batch = cur["batch"].get<int64_t>();
    o.lr = cur["lr"].get<double>();
    o.weight_decay = cur["weight_decay"].get<double>();
    o.sinkhorn_iters = cur["sinkhorn_iters"].get<int64_t>();
    o.eps_start = cur["eps_start"].get<double>();
    o.eps_end = cur["eps_end"].get<double>();
    o.alpha = cur["alpha"].get<double>();
    o.task_weight = cur["task_weight"].get<double>();
    o.mask_temperature = cur["mask_temperature"].get<double>();
    o.harden_soft = cur["harden_soft"].get<bool>();
    o.init_scale = cur["init_scale"].get<double>();
    o.init_noise = cur["init_noise"].get<double>();
    o.eval_every = cur["eval_every"].get<int64_t>();
    o.gradient = parse_gradient(cur["gradient"].get<std::string>());
    o.param = parse_cost_param(cur["param"].get<std::string>());
    o.anneal = parse_anneal(cur["anneal"].get<std::string>());
    o.raw_mask_scores = cur["raw_mask_scores"].get<bool>();
    o.holdout = cur["holdout"].get<int64_t>();
    o.seed = cur["seed"].get<uint64_t>();
  } catch (const json::exception& e) {
    NMPERM_FAIL("learned-method options: {}", e.what());
  }
}

namespace {

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

PruneOptions run_prune_options(const CompareOptions& o, const std::string& method, uint64_t seed) {
  PruneOptions po;
  po.pattern = NMPattern::parse(o.pattern);
  po.score = parse_score(o.score);
  po.method = method;
  po.seed = seed;
  po.search = o.search;
  po.search.seed = po.seed;
  po.learn = learn_defaults(method);
  merge_learn_options(po.learn, o.learn);
  po.warm_start = method != "learned" ? "none" : o.warm_start == "auto" ? default_warm_start() : o.warm_start;
  po.progress = o.progress;
  return po;
}

json run_record(const std::string& method, const PruneOptions& po, const PruneResult& r, double seconds) {
  json run = {{"method", method},
              {"seed", po.seed},
              {"mean_kept", r.mean_kept},
              {"mean_kept_identity", r.mean_kept_identity},
              {"mean_kept_unstructured", r.mean_kept_bound},
              {"sparsity", r.sparsity},
              {"nm_violations", r.nm_violations},
              {"seconds", seconds},
              {"layers", r.layers},
              {"sites", r.sites}};
  if (permute_method(method).learned) {
    std::vector<float> soft = r.learn.soft_block.to_vector<float>();
    run["learn"] = {{"options", po.learn.to_json()},
                    {"warm_start", po.warm_start},
                    {"best_step", r.learn.best_step},
                    {"start_holdout", r.learn.start_holdout},
                    {"best_holdout", r.learn.best_holdout},
                    {"curve", r.learn.curve},
                    {"soft_block", soft},
                    {"soft_block_size", r.learn.soft_block.shape(0)}};
  }
  return run;
}

void print_run(const json& run, const PruneResult& r, const NMPattern& pattern) {
  json shown = run["eval"];
  shown.erase("items");
  std::fprintf(stderr, "  -> test %s, mean kept %.4f (identity %.4f, bound %.4f), %.1fs\n", shown.dump().c_str(),
               r.mean_kept, r.mean_kept_identity, r.mean_kept_bound, run["seconds"].get<double>());
  std::fprintf(stderr, "     sparsity: %.2f%% of the %zu pruned layers' weights are zero; runs of %lld inputs "
               "keeping more than %lld: %lld\n", 100 * r.sparsity, r.layers.size(), (long long)pattern.m,
               (long long)pattern.n, (long long)r.nm_violations);
}

json compare_methods(const std::string& checkpoint, const TrainData& data, const CompareOptions& o,
                     const ReportCallback& on_update) {
  NMPERM_CHECK(o.pipeline == "whole" || o.pipeline == "block", "pipeline '{}' (whole, block)", o.pipeline);
  NMPERM_CHECK(o.calibration == "dense" || o.calibration == "sequential", "calibration '{}' (dense, sequential)",
               o.calibration);
  LinearPrecision precision(precision_dtype(o.precision));
  if (o.pipeline == "block") return compare_blockwise(checkpoint, data, o, on_update);
  NMPERM_CHECK(o.calibration == "dense",
               "sequential calibration (each block calibrated on the pruned blocks' outputs) runs block by block: "
               "use the block pipeline");
  NMPERM_CHECK(!o.resume, "resuming is for the block pipeline (the whole-model pipeline keeps no state)");
  NMPattern pattern = NMPattern::parse(o.pattern);
  parse_score(o.score);
  NMPERM_CHECK(o.seeds > 0, "seeds must be positive");
  Model dense = load_checkpoint(checkpoint);
  dense.to(o.device);
  for (const Site& s : permutation_sites(dense)) pattern.check_fits(s.channels, "site '" + s.name + "'");
  auto t0 = std::chrono::steady_clock::now();
  json report = report_header(checkpoint, dense.arch(), o);
  // Every model is evaluated on the test split (reported) and, when the data has one, on
  // the validation split (where settings are chosen), with per-item losses for paired
  // comparisons.
  const bool with_val = has_validation(dense, data);
  auto evaluate_both = [&](Model& m, json& into) {
    into["eval"] = evaluate(m, data, o.eval_windows, 0, Split::Test).to_json(m.arch(), true);
    if (with_val) into["eval_val"] = evaluate(m, data, o.eval_windows, 0, Split::Validation).to_json(m.arch(), true);
  };
  json dense_eval;
  evaluate_both(dense, dense_eval);
  report["dense"] = dense_eval["eval"];
  if (with_val) report["dense_val"] = dense_eval["eval_val"];
  report["runs"] = json::array();
  if (on_update) on_update(report);
  auto norms = activation_norms(dense, data, o.calib);
  for (const std::string& method : o.methods) {
    int64_t runs = permute_method(method).seeded ? o.seeds : 1;
    for (int64_t k = 0; k < runs; ++k) {
      PruneOptions po = run_prune_options(o, method, o.seed + uint64_t(k));
      if (o.progress) std::fprintf(stderr, "%s: %s (seed %llu)\n", dense.arch().c_str(), method.c_str(), (unsigned long long)po.seed);
      Model m = load_checkpoint(checkpoint);
      m.to(o.device);
      auto t1 = std::chrono::steady_clock::now();
      PruneResult r = prune_model(m, data, norms, po);
      json run = run_record(method, po, r, since(t1));
      evaluate_both(m, run);
      if (!o.out_dir.empty()) {
        std::string dir = run_dir(o, method, runs, po.seed);
        export_checkpoint(m, dir, {{"pruned", o.pattern}, {"permute", method}}, parse_layout(o.layout));
        save_permutations(dir + "/permutations.safetensors", r.perms,
                          {{"pattern", o.pattern}, {"score", o.score}, {"method", method}});
        run["checkpoint"] = dir;
      }
      if (o.progress) print_run(run, r, pattern);
      report["runs"].push_back(run);
      report["seconds"] = since(t0);
      if (on_update) on_update(report);
    }
  }
  return report;
}

json report_header(const std::string& checkpoint, const std::string& arch, const CompareOptions& o) {
  return {{"checkpoint", checkpoint}, {"arch", arch}, {"options", o.to_json()},
          {"threads", kernels::num_threads()}, {"blas", kernels::blas_core()},
          {"device", o.device == Device::CUDA ? "cuda" : "cpu"}};
}

std::string run_dir(const CompareOptions& o, const std::string& method, int64_t runs, uint64_t seed) {
  return o.out_dir + "/" + method + (runs > 1 ? fmt::format("-seed{}", seed) : "");
}

json paired_difference(const json& report, const std::string& method, const std::string& reference, Split split) {
  const char* key = split == Split::Test ? "eval" : "eval_val";
  std::vector<const json*> runs, refs;
  for (auto& run : report.at("runs")) {
    if (!run.contains(key) || !run.at(key).contains("items")) continue;
    if (run.at("method") == method) runs.push_back(&run.at(key).at("items"));
    if (run.at("method") == reference) refs.push_back(&run.at(key).at("items"));
  }
  if (runs.empty() || refs.empty()) return nullptr;
  // Per item: the method's loss averaged over its runs minus the reference's (averaged too).
  auto mean_items = [](const std::vector<const json*>& rs) {
    std::vector<double> m(rs[0]->size(), 0.0);
    for (const json* r : rs) {
      NMPERM_CHECK(r->size() == m.size(), "paired comparison: runs scored different numbers of items");
      for (size_t i = 0; i < m.size(); ++i) m[i] += (*r)[i].get<double>() / double(rs.size());
    }
    return m;
  };
  std::vector<double> a = mean_items(runs), b = mean_items(refs);
  NMPERM_CHECK(a.size() == b.size() && a.size() > 1, "paired comparison: runs scored different numbers of items");
  double n = double(a.size()), mu = 0, ss = 0;
  for (size_t i = 0; i < a.size(); ++i) mu += (a[i] - b[i]) / n;
  for (size_t i = 0; i < a.size(); ++i) ss += (a[i] - b[i] - mu) * (a[i] - b[i] - mu);
  double se = std::sqrt(ss / (n - 1) / n);
  // Seed spread: half the range of the runs' mean losses.
  double lo = INFINITY, hi = -INFINITY;
  for (auto& run : report.at("runs"))
    if (run.at("method") == method && run.contains(key)) {
      double l = run.at(key).at("loss").get<double>();
      lo = std::min(lo, l);
      hi = std::max(hi, l);
    }
  double spread = (hi - lo) / 2;
  std::string verdict = std::abs(mu) > 2 * se && std::abs(mu) > spread ? (mu < 0 ? "ahead" : "behind") : "level";
  return {{"reference", reference}, {"difference", mu}, {"se", se}, {"items", a.size()},
          {"seed_spread", spread}, {"verdict", verdict}};
}

std::string methods_table(const json& report, bool markdown, Split split) {
  bool vit = architecture(report.at("arch").get<std::string>()).takes_images();
  const char* key = split == Split::Test ? "eval" : "eval_val";
  const char* dense_key = split == Split::Test ? "dense" : "dense_val";
  NMPERM_CHECK(report.contains(dense_key), "the report has no evaluation on the {} split", split_name(split));
  auto metric = [&](const json& e, int which) {
    double l = e.at("loss").get<double>();
    if (vit) return which == 0 ? e.at("accuracy").get<double>() : l;
    return which == 0 ? l : std::exp(l);
  };
  std::vector<std::vector<std::string>> rows;
  bool has_ria = false;
  for (auto& run : report.at("runs")) has_ria |= run.at("method") == "ria";
  rows.push_back({"method", vit ? "accuracy" : "loss", vit ? "loss" : "perplexity", "loss gap closed",
                  "mean kept", "seconds", "runs"});
  if (has_ria) {
    rows[0].push_back("loss - ria (± 2 SE)");
    rows[0].push_back("vs ria");
  }
  rows.push_back({"dense", fmt::format("{:.4f}", metric(report.at(dense_key), 0)),
                  fmt::format("{:.4f}", metric(report.at(dense_key), 1)), "1", "1", "-", "-"});
  if (has_ria) rows.back().insert(rows.back().end(), {"-", "-"});
  // Loss gap closed: (loss(none) - loss(method)) / (loss(none) - loss(dense)).
  double dense_loss = report.at(dense_key).at("loss").get<double>(), none_loss = NAN;
  for (auto& run : report.at("runs"))
    if (run.at("method") == "none" && run.contains(key)) none_loss = run.at(key).at("loss").get<double>();
  std::vector<std::string> order;
  for (auto& run : report.at("runs"))
    if (std::find(order.begin(), order.end(), run.at("method").get<std::string>()) == order.end())
      order.push_back(run.at("method"));
  for (const std::string& method : order) {
    std::vector<const json*> rs;
    for (auto& run : report.at("runs"))
      if (run.at("method") == method && run.contains(key)) rs.push_back(&run);
    if (rs.empty()) continue;
    auto stat = [&](auto get, int digits) {
      double lo = INFINITY, hi = -INFINITY, sum = 0;
      for (const json* r : rs) {
        double v = get(*r);
        lo = std::min(lo, v);
        hi = std::max(hi, v);
        sum += v;
      }
      double mu = sum / double(rs.size());
      return rs.size() > 1 ? fmt::format("{:.{}f} ± {:.{}f}", mu, digits, (hi - lo) / 2, digits)
                           : fmt::format("{:.{}f}", mu, digits);
    };
    auto gap = [&](const json& r) { return (none_loss - r.at(key).at("loss").get<double>()) / (none_loss - dense_loss); };
    rows.push_back({method, stat([&](const json& r) { return metric(r.at(key), 0); }, 4),
                    stat([&](const json& r) { return metric(r.at(key), 1); }, 4),
                    std::isfinite(none_loss) && none_loss != dense_loss ? stat(gap, 2) : "-",
                    stat([](const json& r) { return r.at("mean_kept").get<double>(); }, 4),
                    stat([](const json& r) { return r.at("seconds").get<double>(); }, 1), std::to_string(rs.size())});
    if (has_ria) {
      json p = method == "ria" ? json(nullptr) : paired_difference(report, method, "ria", split);
      if (p.is_null()) {
        rows.back().insert(rows.back().end(), {"-", "-"});
      } else {
        rows.back().push_back(fmt::format("{:+.4f} ± {:.4f}", p["difference"].get<double>(), 2 * p["se"].get<double>()));
        rows.back().push_back(p["verdict"].get<std::string>());
      }
    }
  }
  std::string out;
  if (markdown) {
    for (size_t i = 0; i < rows.size(); ++i) {
      out += "|";
      for (auto& c : rows[i]) out += " " + c + " |";
      out += "\n";
      if (i == 0) {
        out += "|";
        for (size_t k = 0; k < rows[i].size(); ++k) out += k == 0 ? "---|" : "---:|";
        out += "\n";
      }
    }
    return out;
  }
  // Widths in characters, not bytes ("±" is two bytes of UTF-8), as fmt pads.
  auto chars = [](const std::string& t) {
    return size_t(std::count_if(t.begin(), t.end(), [](char ch) { return (ch & 0xC0) != 0x80; }));
  };
  std::vector<size_t> width(rows[0].size(), 0);
  for (auto& r : rows)
    for (size_t k = 0; k < r.size(); ++k) width[k] = std::max(width[k], chars(r[k]));
  for (auto& r : rows) {
    for (size_t k = 0; k < r.size(); ++k) out += fmt::format("{:<{}}  ", r[k], width[k]);
    out += "\n";
  }
  return out;
}

}  // namespace nmperm

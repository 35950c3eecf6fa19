// Pieces the nmperm subcommands share: data selection, fresh models, the cache folder.
#pragma once
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "models/train.h"

namespace nmperm::cli {

struct DataOptions {
  std::string data;  // vit: IDX folder; llama: "kjv" or a token file
  std::string val;   // llama: evaluation (test) token file
  int64_t val_images = -1;  // vit: training images held out for validation (-1: min(5000, N / 12))
  std::string token_format = "auto";
  std::string cache;  // default_cache() when empty
};

// NMPERM_CACHE, else $XDG_CACHE_HOME/nmperm, else ~/.cache/nmperm.
std::string default_cache();
TrainData load_data(const std::string& arch, const DataOptions& o, bool need_train);
// A freshly initialised model: the embedded default architecture, or a Hugging Face
// config.json (model_config, may be empty). A ViT's preprocessing normalises with the
// training images' mean and standard deviation.
Model fresh_model(const std::string& arch, const nlohmann::json& model_config, const TrainData& data, uint64_t seed);

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct DemoCli {
  bool quick = false;
  std::string out = "nmperm-report", config, models = "vit,llama";
  int64_t seeds = 0;  // 0: 3, or 1 with --quick
  uint64_t seed = 0;
  DataOptions vit_data, llama_data;
  int threads = 0;
};
int run_demo(DemoCli& o);

}  // namespace nmperm::cli

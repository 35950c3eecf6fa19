// Pieces the nmperm subcommands share: data selection, fresh models, the cache folder.
#pragma once
#include <chrono>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "models/train.h"

namespace nmperm::cli {

struct DataOptions {
  std::string data;  // vit: IDX folder; llama: "kjv" or a token file
  std::string val;   // llama: evaluation (test) token file
  int64_t val_images = -1;  // vit: training images held out for validation (-1: min(5000, N / 12))
  std::string token_format = "auto";
  std::string cache;  // default_cache() when empty
  std::string text, calib;  // llama: raw text evaluation / calibration corpora (the field's protocol)
  std::string images, calib_images, classes;  // vit: image folders (DIR/<class>/*.jpg|png), class list
  int pillow = 13;  // vit, with images: the Pillow release whose resize is reproduced (ImagePreprocess::pillow)
  int64_t seqlen = 0;       // llama: window length (0: 2048 for text corpora, else the model's context)
  uint64_t calib_seed = 0;  // llama, field protocol: seed of the calibration windows' starts
  std::set<std::string> given;  // the options the user gave ("--val", ...): checked against the data
};

// NMPERM_CACHE, else $XDG_CACHE_HOME/nmperm, else ~/.cache/nmperm.
std::string default_cache();
// The data of a subcommand. need_train: training / calibration data is needed (train,
// calibrate, prune), else only what is evaluated (eval: exactly the file given, whole).
// model: the loaded checkpoint, whose tokenizer reads --text / --calib and whose
// preprocessing and classes read --images (nullptr when training a fresh model). An
// option given that this data does not use is an error naming it. kind: what the model
// reads (Network::data_kind(), or architecture(arch).data for a model yet to be made).
TrainData load_data(DataKind kind, const DataOptions& o, bool need_train, const Model* model = nullptr);
// A freshly initialised model of the architecture named `arch` (TrainConfig's arch): its
// embedded default, or a Hugging Face config.json (model_config, may be empty). An image
// model's preprocessing normalises with the training images' mean and standard deviation.
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

#include "tools/cli.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "models/images.h"
#include "models/text.h"

#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace nmperm::cli {

std::string default_cache() {
  if (const char* c = std::getenv("NMPERM_CACHE")) return c;
  if (const char* x = std::getenv("XDG_CACHE_HOME")) return std::string(x) + "/nmperm";
  if (const char* h = std::getenv("HOME")) return std::string(h) + "/.cache/nmperm";
  return ".nmperm-cache";
}

namespace {

void refuse(const DataOptions& o, std::initializer_list<const char*> options, const std::string& why) {
  for (const char* opt : options) NMPERM_CHECK(!o.given.count(opt), "{} {}", opt, why);
}

// --text / --calib: raw text tokenized with the checkpoint's tokenizer, the field's protocol.
TrainData load_text(const DataOptions& o, bool need_train, const Model* model) {
  refuse(o, {"--data", "--val", "--token-format"}, "cannot be combined with --text / --calib (give one kind of data)");
  NMPERM_CHECK(!o.text.empty(), "--calib needs --text, the text to evaluate on");
  NMPERM_CHECK(!need_train || !o.calib.empty(),
               "--text needs --calib FILE: the calibration text (the evaluation text is never calibrated on)");
  NMPERM_CHECK(need_train || o.calib.empty(), "--calib is not used when only evaluating");
  NMPERM_CHECK(model && !model->source_dir.empty(), "--text / --calib need a checkpoint with its tokenizer");
  auto tok = load_tokenizer(model->source_dir);
  NMPERM_CHECK(tok, "checkpoint '{}' has no tokenizer.json or tokenizer.model: --text needs the checkpoint's tokenizer",
               model->source_dir);
  std::string cache = o.cache.empty() ? default_cache() : o.cache;
  TrainData d;
  d.tokens.test = tokenize_file(o.text, *tok, cache);
  if (need_train) d.tokens.train = tokenize_file(o.calib, *tok, cache);
  d.tokens.vocab = tok->vocab_size;
  d.tokens.description = fmt::format("{} ({} tokens, {}){}", o.text, d.tokens.test.size(), tok->kind,
                                     need_train ? fmt::format("; calibration {} ({} tokens)", o.calib,
                                                              d.tokens.train.size())
                                                : "");
  return d;
}

// --images / --calib-images: image folders decoded and resized as the checkpoint says.
TrainData load_images(const DataOptions& o, bool need_train, const Model* model) {
  refuse(o, {"--data", "--val-images"}, "cannot be combined with --images (give one kind of data)");
  NMPERM_CHECK(!o.images.empty(), "--calib-images needs --images, the images to evaluate on");
  NMPERM_CHECK(!need_train || !o.calib_images.empty(),
               "--images needs --calib-images DIR: calibration images (the evaluation images are never calibrated on)");
  NMPERM_CHECK(model && model->network->takes_images(), "--images needs a ViT checkpoint");
  // id2label is not part of the model: read it from the checkpoint's config.json.
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(fs::path(model->source_dir) / "config.json"), nullptr, false);
  std::vector<std::string> classes;
  if (!o.classes.empty()) {
    std::ifstream f(o.classes);
    NMPERM_CHECK(f, "cannot open --classes '{}'", o.classes);
    for (std::string line; std::getline(f, line);)
      if (!line.empty()) classes.push_back(line);
  } else if (cfg.is_object() && cfg.contains("id2label") && cfg["id2label"].is_object()) {
    // The checkpoint's label names, unless they are transformers' placeholders LABEL_i.
    std::vector<std::string> names(cfg["id2label"].size());
    bool placeholders = true;
    for (auto& [k, v] : cfg["id2label"].items()) {
      size_t i = std::stoul(k);
      NMPERM_CHECK(i < names.size() && v.is_string(), "config.json: id2label is not labels 0..{}", names.size() - 1);
      names[i] = v.get<std::string>();
      placeholders = placeholders && names[i] == fmt::format("LABEL_{}", i);
    }
    if (!placeholders) classes = names;
  }
  const int64_t channels = model->network->image_channels();
  ImagePreprocess preprocess = model->preprocess;
  preprocess.pillow = o.pillow;
  TrainData d;
  d.test_images = load_image_folder(o.images, preprocess, classes, channels);
  if (need_train) d.train_images = load_image_folder(o.calib_images, preprocess, classes, channels);
  return d;
}

}  // namespace

TrainData load_data(DataKind kind, const DataOptions& o, bool need_train, const Model* model) {
  TrainData d;
  if (kind == DataKind::Images) {
    refuse(o, {"--val", "--token-format", "--text", "--calib", "--seqlen", "--calib-seed", "--cache", "--eval-windows"},
           "applies to language models; the model is a ViT");
    if (!o.images.empty() || !o.calib_images.empty()) return load_images(o, need_train, model);
    refuse(o, {"--classes", "--pillow"}, "applies to --images");
    std::string dir = o.data.empty() ? kFashionMnistDir : o.data;
    if (need_train) {
      d.train_images = load_fashion_mnist(dir, "train");
      int64_t n = o.val_images >= 0 ? o.val_images : std::min<int64_t>(5000, d.train_images.size() / 12);
      if (n > 0) d.val_images = hold_out_images(d.train_images, n);
    }
    d.test_images = load_fashion_mnist(dir, "t10k");
    return d;
  }
  refuse(o, {"--val-images", "--images", "--calib-images", "--classes", "--pillow"},
         "applies to ViTs; the model is a language model");
  bool kjv = o.data.empty() || o.data == "kjv";
  if (!o.text.empty() || !o.calib.empty()) {
    d = load_text(o, need_train, model);
  } else if (!need_train) {  // evaluate exactly the one file given, whole
    NMPERM_CHECK(o.data.empty() || o.val.empty(), "give one file to evaluate: --data or --val, not both");
    if (kjv && o.val.empty()) {
      refuse(o, {"--token-format"}, "applies to token files, not the KJV default");
      d.tokens = load_kjv_bytes(o.cache.empty() ? default_cache() : o.cache);
    } else {
      std::string file = o.val.empty() ? o.data : o.val;
      d.tokens.test = load_token_file(file, o.token_format);
      for (int32_t t : d.tokens.test) d.tokens.vocab = std::max<int64_t>(d.tokens.vocab, int64_t(t) + 1);
      d.tokens.description = fmt::format("{} ({} tokens)", file, d.tokens.test.size());
    }
  } else if (kjv) {
    refuse(o, {"--val", "--token-format"}, "applies to token files given with --data, not the KJV default");
    d.tokens = load_kjv_bytes(o.cache.empty() ? default_cache() : o.cache);
  } else {
    d.tokens = load_token_data(o.data, o.val, o.token_format);
  }
  bool field = !o.text.empty() || o.given.count("--seqlen");
  if (!field) refuse(o, {"--calib-seed"}, "applies to the field's protocol (--text / --calib or --seqlen)");
  d.tokens.field_protocol = field;
  d.tokens.seqlen = o.seqlen > 0 ? o.seqlen : !o.text.empty() ? 2048 : 0;
  d.tokens.calib_seed = o.calib_seed;
  return d;
}

Model fresh_model(const std::string& arch, const nlohmann::json& mc, const TrainData& data, uint64_t seed) {
  Generator gen(seed);
  Model model;
  model.network = architecture(arch).fresh(mc, data, gen);
  if (model.network->takes_images()) {
    // Normalise with the training set's statistics (written to preprocessor_config.json).
    const ImageSet& tr = data.train_images;
    double mu = mean(tr.images).item(), sd = std::sqrt(var(tr.images, {}, 0).item());
    model.preprocess.image_mean = {mu};
    model.preprocess.image_std = {sd};
  }
  return model;
}

}  // namespace nmperm::cli

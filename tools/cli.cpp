#include "tools/cli.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

namespace nmperm::cli {

std::string default_cache() {
  if (const char* c = std::getenv("NMPERM_CACHE")) return c;
  if (const char* x = std::getenv("XDG_CACHE_HOME")) return std::string(x) + "/nmperm";
  if (const char* h = std::getenv("HOME")) return std::string(h) + "/.cache/nmperm";
  return ".nmperm-cache";
}

TrainData load_data(const std::string& arch, const DataOptions& o, bool need_train) {
  TrainData d;
  if (arch == "vit") {
    std::string dir = o.data.empty() ? kFashionMnistDir : o.data;
    if (need_train) {
      d.train_images = load_fashion_mnist(dir, "train");
      int64_t n = o.val_images >= 0 ? o.val_images : std::min<int64_t>(5000, d.train_images.size() / 12);
      if (n > 0) d.val_images = hold_out_images(d.train_images, n);
    }
    d.test_images = load_fashion_mnist(dir, "t10k");
  } else {
    d.tokens = (o.data.empty() || o.data == "kjv") ? load_kjv_bytes(o.cache.empty() ? default_cache() : o.cache)
                                                   : load_token_data(o.data, o.val, o.token_format);
  }
  return d;
}

Model fresh_model(const std::string& arch, const nlohmann::json& mc, const TrainData& data, uint64_t seed) {
  Generator gen(seed);
  Model model;
  if (arch == "vit") {
    // The embedded default: 28x28x1, patch 4, hidden 128, 4 layers, 4 heads, MLP 512.
    ViTConfig vc = mc.empty() ? ViTConfig{} : ViTConfig::from_json(mc);
    const ImageSet& tr = data.train_images;
    NMPERM_CHECK(tr.images.shape(2) == vc.image_size && tr.images.shape(1) == vc.num_channels,
                 "the data's images are {}x{}x{}, the model expects {}x{}x{}", tr.images.shape(1), tr.images.shape(2),
                 tr.images.shape(3), vc.num_channels, vc.image_size, vc.image_size);
    model.vit = std::make_unique<ViT>(vc, gen);
    // Normalise with the training set's statistics (written to preprocessor_config.json).
    double mu = mean(tr.images).item(), sd = std::sqrt(var(tr.images, {}, 0).item());
    model.preprocess.image_mean = {mu};
    model.preprocess.image_std = {sd};
  } else {
    // The embedded default: bytes, hidden 128, 4 layers, 4 heads / 2 kv heads, MLP 384, context 128.
    LlamaConfig lc = mc.empty() ? LlamaConfig{} : LlamaConfig::from_json(mc);
    if (mc.empty()) lc.vocab_size = std::max<int64_t>(lc.vocab_size, data.tokens.vocab);
    model.llama = std::make_unique<Llama>(lc, gen);
  }
  return model;
}

}  // namespace nmperm::cli

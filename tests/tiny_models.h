// Tiny ViT and Llama models (weights larger than the 0.02 initialisation, so pruning
// changes outputs visibly) and random data for them, shared by the CPU and CUDA tests.
#pragma once
#include <memory>
#include <vector>

#include "autograd/ops.h"
#include "models/checkpoint.h"
#include "models/llama.h"
#include "models/train.h"
#include "models/vit.h"

namespace nmperm::test {

inline Model tiny_vit(uint64_t seed) {
  ViTConfig c;
  c.image_size = 8;
  c.patch_size = 4;
  c.hidden_size = 16;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 32;
  c.num_labels = 3;
  Generator g(seed);
  Model m;
  m.network = std::make_unique<ViT>(c, g);
  // Larger weights than the 0.02 initialisation, so pruning changes the outputs visibly.
  m.visit([&](const std::string&, Tensor& t) { t.copy_from(mul(randn(t.shape(), g), 0.3)); });
  return m;
}

inline Model tiny_llama(uint64_t seed) {
  LlamaConfig c;
  c.vocab_size = 32;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 8;
  Generator g(seed);
  Model m;
  m.network = std::make_unique<Llama>(c, g);
  m.visit([&](const std::string&, Tensor& t) { t.copy_from(mul(randn(t.shape(), g), 0.3)); });
  return m;
}

inline TrainData tiny_data(const Model& m, uint64_t seed) {
  Generator g(seed);
  TrainData d;
  if (m.network->takes_images()) {
    int64_t N = 1100;
    d.train_images.images = rand({N, 1, 8, 8}, g);
    std::vector<int64_t> labels(static_cast<size_t>(N));
    for (auto& l : labels) l = g.randint(3);
    d.train_images.labels = from_vector(labels, {N});
    d.test_images = {narrow(d.train_images.images, 0, 0, 200), narrow(d.train_images.labels, 0, 0, 200)};
    d.val_images = {narrow(d.train_images.images, 0, 200, 100), narrow(d.train_images.labels, 0, 200, 100)};
  } else {
    for (int i = 0; i < 3000; ++i) d.tokens.train.push_back(int32_t(g.randint(32)));
    for (int i = 0; i < 300; ++i) d.tokens.test.push_back(int32_t(g.randint(32)));
    for (int i = 0; i < 200; ++i) d.tokens.val.push_back(int32_t(g.randint(32)));
    d.tokens.vocab = 32;
  }
  return d;
}

}  // namespace nmperm::test

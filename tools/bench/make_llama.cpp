// Writes a Llama checkpoint of Llama-3.2-1B's shapes (16 layers, hidden 2048, 32/8 heads,
// head dim 64, MLP 8192, vocab 128256, tied embeddings, llama3 RoPE) with random weights,
// in bf16 and in shards of two blocks each, as a downloaded checkpoint comes: for timing
// the block pipeline where no Python with transformers is at hand (tools/gpu-check.sh;
// tools/bench/scale.py makes the same shapes through transformers).
//
//   make_llama DIR [LAYERS]
#include <cstdio>
#include <cstdlib>
#include <string>

#include "models/checkpoint.h"

using namespace nmperm;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: make_llama DIR [LAYERS]\n");
    return 2;
  }
  try {
    LlamaConfig c;
    c.vocab_size = 128256, c.hidden_size = 2048, c.intermediate_size = 8192;
    c.num_hidden_layers = argc > 2 ? std::atoll(argv[2]) : 16;
    c.num_attention_heads = 32, c.num_key_value_heads = 8, c.head_dim = 64;
    c.max_position_embeddings = 131072, c.rms_norm_eps = 1e-5, c.rope_theta = 500000.0;
    c.rope_scaling = {.type = "llama3", .factor = 32, .low_freq_factor = 1, .high_freq_factor = 4,
                      .original_max_position_embeddings = 8192};
    c.tie_word_embeddings = true;
    nlohmann::json j = c.to_json();
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 32.0}, {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
    j["bos_token_id"] = 128000, j["eos_token_id"] = 128001;
    c.source = j;
    Generator g(0);
    Model m;
    m.network = std::make_unique<Llama>(c, g);
    m.source_dtype = "BF16";
    m.visit([&](const std::string& name, Tensor&) {
      size_t at = name.find("layers.");
      int64_t block = at == std::string::npos ? 0 : std::atoll(name.c_str() + at + 7);
      int64_t shards = (c.num_hidden_layers + 1) / 2;
      m.source_shards[name] = fmt::format("model-{:05d}-of-{:05d}.safetensors", block / 2 + 1, shards);
    });
    export_checkpoint(m, argv[1], {}, Layout::Original);
    std::printf("%s: %.0f parameters, bf16\n", argv[1], c.parameter_count());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}

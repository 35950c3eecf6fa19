#include "fuzz/targets.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "models/checkpoint.h"
#include "models/data.h"
#include "permute/sites.h"

namespace nmperm::fuzz {

namespace {

using json = nlohmann::json;

// Malformed JSON is the parser's to report; the loaders turn it into nmperm::Error
// with the file name (read_json in models/checkpoint.cpp).
bool parse_json(const std::string& text, json& out) {
  out = json::parse(text, nullptr, /*allow_exceptions=*/false);
  return !out.is_discarded();
}

// A safetensors file: every tensor is read in full, so bad offsets would show.
void safetensors(const uint8_t* data, size_t size) {
  SafeTensors st = parse_safetensors(data, size, "fuzz");
  double sum = 0;
  for (auto& [name, t] : st.tensors) {
    Tensor f = t.to(DType::F64);
    const double* p = f.data<double>();
    for (int64_t i = 0; i < f.numel(); ++i) sum += p[i];
  }
  (void)sum;
}

// config.json and preprocessor_config.json fields.
void config(const uint8_t* data, size_t size) {
  json j;
  if (!parse_json(std::string(reinterpret_cast<const char*>(data), size), j)) return;
  auto attempt = [](auto&& f) {
    try {
      f();
    } catch (const Error&) {
    }
  };
  attempt([&] { ViTConfig::from_json(j).parameter_count(); });
  attempt([&] { LlamaConfig::from_json(j).parameter_count(); });
  attempt([&] { ImagePreprocess::from_json(j); });
}

// A whole checkpoint: config.json, a NUL byte, then model.safetensors.
void checkpoint(const uint8_t* data, size_t size) {
  const uint8_t* nul = static_cast<const uint8_t*>(std::memchr(data, 0, size));
  if (!nul) return;
  json cfg;
  if (!parse_json(std::string(reinterpret_cast<const char*>(data), size_t(nul - data)), cfg)) return;
  SafeTensors st = parse_safetensors(nul + 1, size - size_t(nul - data) - 1, "fuzz");
  model_from(cfg, st, "fuzz");
}

// An IDX file (Fashion-MNIST), possibly gzip-compressed.
void idx(const uint8_t* data, size_t size) {
  parse_idx(gunzip_if_needed(std::string(reinterpret_cast<const char*>(data), size), "fuzz"), "fuzz");
}

// A token file; the first byte picks how it is read (auto by name, or a forced format).
void tokens(const uint8_t* data, size_t size) {
  if (size == 0) return;
  static const char* const kFormats[][2] = {{"auto", "fuzz.bin"}, {"auto", "fuzz.u16"}, {"auto", "fuzz.u32"},
                                            {"llmc", "fuzz"},     {"u16", "fuzz"},      {"u32", "fuzz"}};
  const auto& f = kFormats[data[0] % 6];
  parse_tokens(gunzip_if_needed(std::string(reinterpret_cast<const char*>(data) + 1, size - 1), f[1]), f[0], f[1]);
}

// A permutation file (safetensors of int32 index vectors).
void permutations(const uint8_t* data, size_t size) { permutations_from(parse_safetensors(data, size, "fuzz"), "fuzz"); }

}  // namespace

const std::vector<NamedTarget>& targets() {
  static const std::vector<NamedTarget> all = {{"safetensors", safetensors}, {"config", config},
                                               {"checkpoint", checkpoint},   {"idx", idx},
                                               {"tokens", tokens},           {"permutations", permutations}};
  return all;
}

Target find_target(const std::string& name) {
  for (auto& t : targets())
    if (t.name == name) return t.run;
  NMPERM_FAIL("unknown fuzz target '{}'", name);
}

}  // namespace nmperm::fuzz

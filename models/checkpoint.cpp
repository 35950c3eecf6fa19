#include "models/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <set>
#include <sstream>

#include "core/safetensors.h"
#include "core/storage.h"

namespace nmperm {

namespace fs = std::filesystem;
using json = nlohmann::json;

json read_json(const fs::path& p) {
  std::ifstream f(p);
  NMPERM_CHECK(f, "cannot open '{}'", p.string());
  try {
    return json::parse(f);
  } catch (const json::exception& e) {
    NMPERM_FAIL("'{}' is not valid JSON: {}", p.string(), e.what());
  }
}

namespace {

// Tensors some exporters include that carry no parameters of these architectures.
bool ignorable(const std::string& name) {
  return name.starts_with("vit.pooler.") || name.ends_with(".rotary_emb.inv_freq");
}

void check_finite(const Tensor& t, const std::string& name, const std::string& what) {
  Tensor c = t.detach().to(Device::CPU).contiguous().to(DType::F32);
  const float* p = c.data<float>();
  int64_t bad = 0;
  for (int64_t i = 0; i < c.numel(); ++i) bad += !std::isfinite(p[i]);
  NMPERM_CHECK(bad == 0, "{}: tensor '{}' holds {} NaN or infinite values (of {}); the checkpoint is corrupt", what,
               name, bad, t.numel());
}

}  // namespace

ImagePreprocess ImagePreprocess::from_json(const json& j) {
  ImagePreprocess p;
  try {
    if (j.contains("do_rescale")) p.do_rescale = j["do_rescale"].get<bool>();
    if (j.contains("do_normalize")) p.do_normalize = j["do_normalize"].get<bool>();
    if (j.contains("rescale_factor")) p.rescale_factor = j["rescale_factor"].get<double>();
    auto vec = [](const json& v) {
      return v.is_array() ? v.get<std::vector<double>>() : std::vector<double>{v.get<double>()};
    };
    if (j.contains("image_mean")) p.image_mean = vec(j["image_mean"]);
    if (j.contains("image_std")) p.image_std = vec(j["image_std"]);
    auto hw = [](const json& s, const char* what, int64_t& h, int64_t& w) {
      if (s.is_number_integer()) {
        h = w = s.get<int64_t>();
        return;
      }
      NMPERM_CHECK(s.is_object() && s.contains("height") && s.contains("width"),
                   "preprocessor_config.json: {} {} is not supported (height and width)", what, s.dump());
      h = s["height"].get<int64_t>(), w = s["width"].get<int64_t>();
      NMPERM_CHECK(h > 0 && w > 0 && h < 65536 && w < 65536, "preprocessor_config.json: {} out of range", what);
    };
    json_get(j, "do_resize", p.do_resize);
    json_get(j, "do_center_crop", p.do_center_crop);
    json_get(j, "resample", p.resample);
    if (p.do_resize) {
      NMPERM_CHECK(j.contains("size"), "preprocessor_config.json: do_resize without size");
      hw(j["size"], "size", p.size_h, p.size_w);
      NMPERM_CHECK(p.resample == 2 || p.resample == 3,
                   "preprocessor_config.json: resample {} is not supported (2 bilinear, 3 bicubic)", p.resample);
    }
    if (p.do_center_crop) {
      NMPERM_CHECK(j.contains("crop_size"), "preprocessor_config.json: do_center_crop without crop_size");
      hw(j["crop_size"], "crop_size", p.crop_h, p.crop_w);
    }
  } catch (const json::exception& e) {
    NMPERM_FAIL("preprocessor_config.json: {}", e.what());
  }
  NMPERM_CHECK(!p.image_mean.empty() && p.image_mean.size() == p.image_std.size(),
               "preprocessor_config.json: image_mean and image_std must have the same non-zero length");
  for (double s : p.image_std) NMPERM_CHECK(s > 0, "preprocessor_config.json: image_std must be positive");
  return p;
}

json ImagePreprocess::to_json() const {
  json j = {{"image_processor_type", "ViTImageProcessor"}, {"do_rescale", do_rescale},
            {"rescale_factor", rescale_factor},          {"do_normalize", do_normalize},
            {"image_mean", image_mean},                  {"image_std", image_std},
            {"do_resize", do_resize}};
  if (do_resize) j["size"] = {{"height", size_h}, {"width", size_w}}, j["resample"] = resample;
  if (do_center_crop) j["do_center_crop"] = true, j["crop_size"] = {{"height", crop_h}, {"width", crop_w}};
  return j;
}

Tensor ImagePreprocess::apply(const Tensor& images01) const {
  NoGradGuard ng;
  int64_t C = images01.shape(1);
  Tensor x = do_rescale ? mul(images01, 255.0 * rescale_factor) : mul(images01, 255.0);
  if (!do_normalize) return x;
  NMPERM_CHECK(image_mean.size() == 1 || int64_t(image_mean.size()) == C,
               "preprocessor: {} mean values for {} channels", image_mean.size(), C);
  std::vector<float> m(static_cast<size_t>(C)), s(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    m[size_t(c)] = float(image_mean[image_mean.size() == 1 ? 0 : size_t(c)]);
    s[size_t(c)] = float(image_std[image_std.size() == 1 ? 0 : size_t(c)]);
  }
  Device d = images01.device();
  return div(sub(x, from_vector(m, {1, C, 1, 1}).to(d)), from_vector(s, {1, C, 1, 1}).to(d));
}

int64_t Model::store_linear_weights(DType dtype) {
  std::map<const Storage*, std::set<std::string>> names;  // who uses each storage
  visit([&](const std::string& n, Tensor& t) {
    if (t.defined()) names[t.storage().get()].insert(n);
  });
  int64_t saved = 0;
  visit_linears([&](const std::string& prefix, Linear& l) {
    if (!l.weight.defined() || l.weight.dtype() == dtype) return;
    auto it = names.find(l.weight.storage().get());
    if (it != names.end() && (it->second.size() > 1 || !it->second.count(prefix + ".weight"))) return;  // shared
    saved += l.weight.numel() * int64_t(dtype_size(l.weight.dtype())) - l.weight.numel() * int64_t(dtype_size(dtype));
    l.weight = l.weight.to(dtype);
  });
  return saved;
}

void Model::to(Device d) {
  if (d == device_) return;
  NMPERM_CHECK(d != Device::CUDA || cuda_available(),
               "the model cannot move to the GPU: no CUDA device is available (or this build has no CUDA)");
  visit([&](const std::string&, Tensor& t) {
    if (!t.defined()) return;  // a block not in memory (model_shell)
    bool grad = t.requires_grad();
    t = t.detach().to(d);
    if (grad) t.set_requires_grad();
  });
  visit_linears([&](const std::string&, Linear& l) {
    if (l.input_perm.defined()) l.input_perm = l.input_perm.to(d);
  });
  network->tie_weights();
  device_ = d;
}

std::vector<Tensor> Model::parameters() {
  std::vector<Tensor> out;
  visit([&](const std::string&, Tensor& t) { out.push_back(t); });
  return out;
}

int64_t Model::num_parameters() {
  int64_t n = 0;
  visit([&](const std::string&, Tensor& t) { n += t.numel(); });
  return n;
}

namespace {

// A tensor source by name: what assign_from needs of a parsed file or of mapped shards.
struct WeightSource {
  std::function<std::optional<std::pair<Shape, bool>>(const std::string&)> find;  // shape, floating
  std::function<Tensor(const std::string&)> read;
  std::vector<std::string> names;
};

WeightSource source_of(const SafeTensors& st) {
  WeightSource w;
  w.find = [&st](const std::string& n) -> std::optional<std::pair<Shape, bool>> {
    const Tensor* t = st.find(n);
    if (!t) return std::nullopt;
    return std::make_pair(t->shape(), is_floating(t->dtype()));
  };
  w.read = [&st](const std::string& n) { return st.at(n); };
  for (auto& [n, t] : st.tensors) w.names.push_back(n);
  return w;
}

bool floating_disk(const std::string& dt) { return dt == "F32" || dt == "F64" || dt == "BF16" || dt == "F16"; }

WeightSource source_of(const CheckpointFiles& files) {
  WeightSource w;
  w.find = [&files](const std::string& n) -> std::optional<std::pair<Shape, bool>> {
    const TensorEntry* e = files.find(n);
    if (!e) return std::nullopt;
    return std::make_pair(e->shape, floating_disk(e->dtype));
  };
  w.read = [&files](const std::string& n) { return files.read(n); };
  for (auto& [n, at] : files.tensors) w.names.push_back(n);
  return w;
}

void check_parameter(const WeightSource& src, const std::string& name, const Tensor& p, const std::string& what,
                     const std::string& arch) {
  auto t = src.find(name);
  NMPERM_CHECK(t, "{}: tensor '{}' is missing (the {} architecture needs it)", what, name, arch);
  NMPERM_CHECK(t->first == p.shape(), "{}: tensor '{}' has shape {}, the model needs {}", what, name, t->first,
               p.shape());
  NMPERM_CHECK(t->second, "{}: tensor '{}' is not floating point", what, name);
}

void load_parameter(const WeightSource& src, const std::string& name, Tensor& p, const std::string& what) {
  p.copy_from(src.read(name));  // in place: tied weights stay tied
  check_finite(p, name, what);
}

void load_input_permutation(const WeightSource& src, const std::string& prefix, Linear& l, const std::string& what) {
  std::string name = prefix + ".input_permutation";
  auto t = src.find(name);
  if (!t) return;
  NMPERM_CHECK(t->first == Shape{l.in()} && !t->second,
               "{}: tensor '{}' must be an integer vector of {} channel indices, got shape {}", what, name, l.in(),
               t->first);
  Tensor p = src.read(name).to(DType::I64);
  check_permutation(p.to_vector<int64_t>(), l.in(), fmt::format("{}: tensor '{}'", what, name));
  l.input_perm = p;
}

// Fills every parameter of `model` from `src`; every tensor of src must be used.
void assign_from(Model& model, const WeightSource& src, const std::string& what) {
  const std::map<std::string, std::string> tied = model.network->tied_weights();  // files may hold a copy: ignored
  std::set<std::string> used;
  model.visit([&](const std::string& name, Tensor& p) {
    check_parameter(src, name, p, what, model.arch());
    load_parameter(src, name, p, what);
    used.insert(name);
  });
  model.visit_linears([&](const std::string& prefix, Linear& l) {
    load_input_permutation(src, prefix, l, what);
    used.insert(prefix + ".input_permutation");
  });
  for (const std::string& name : src.names) {
    NMPERM_CHECK(used.count(name) || ignorable(name) || tied.count(name),
                 "{}: unexpected tensor '{}' for a {} model (is this checkpoint for another architecture?)", what, name,
                 model.arch());
  }
}

// The registry: every config.json model_type nmperm computes, the class-name prefix that
// stands for it in `architectures` when config.json has no model_type, and its
// architecture. Adding an architecture: its file (models/<name>.h, .cpp) and a line here.
struct Registered {
  const char* model_type;
  const char* class_prefix;
  const Architecture& (*architecture)();
};
const Registered kRegistry[] = {
    {"vit", "ViT", vit_architecture},
    {"llama", "Llama", llama_architecture},
    {"mistral", "Mistral", llama_architecture},
    {"qwen2", "Qwen2", llama_architecture},
};

const Registered& registered(const std::string& model_type) {
  for (const Registered& r : kRegistry)
    if (model_type == r.model_type) return r;
  NMPERM_FAIL("model_type '{}' is not registered", model_type);  // model_type_of refuses it first
}

// The registered model_types (only those worked block by block, when asked), for messages.
std::string model_types(bool block_by_block_only = false) {
  std::vector<std::string> types;
  for (const Registered& r : kRegistry)
    if (!block_by_block_only || r.architecture().block_by_block) types.push_back(r.model_type);
  return fmt::format("{}", fmt::join(types, ", "));
}

struct ParsedConfig {
  std::string type;
  const Architecture* arch = nullptr;
  NetworkSpec spec;
};

ParsedConfig parse_config(const json& cfg, const std::string& what) {
  ParsedConfig pc;
  pc.type = model_type_of(cfg, what);
  pc.arch = &registered(pc.type).architecture();
  pc.spec = pc.arch->read(cfg, pc.type);
  return pc;
}

Model model_from_source(const json& cfg, const WeightSource& src, const std::string& what) {
  ParsedConfig pc = parse_config(cfg, what);
  // Every parameter must come from the weights, so a config that needs far more values
  // than the files hold is refused before anything that size is allocated. Small
  // differences pass on to assign_from, which names the missing or mis-shaped tensor.
  double held = 0;
  for (const std::string& n : src.names) held += double(numel(src.find(n)->first));
  NMPERM_CHECK(pc.spec.parameters <= 4 * held + (1 << 20),
               "{}: config.json describes a {} of {:.0f} parameters, the weights hold only {:.0f} values", what,
               pc.type, pc.spec.parameters, held);
  Model m;
  m.network = pc.spec.build(nullptr);  // filled from the weights next
  assign_from(m, src, what);
  return m;
}

}  // namespace

std::string model_type_of(const json& cfg, const std::string& what) {
  NMPERM_CHECK(cfg.is_object(), "{}: config.json must be a JSON object", what);
  std::string type;
  if (cfg.contains("model_type") && cfg["model_type"].is_string()) {
    type = cfg["model_type"].get<std::string>();
  } else if (cfg.contains("architectures") && cfg["architectures"].is_array() && !cfg["architectures"].empty() &&
             cfg["architectures"][0].is_string()) {
    std::string a = cfg["architectures"][0].get<std::string>();
    type = a;
    for (const Registered& r : kRegistry)
      if (a.starts_with(r.class_prefix)) {
        type = r.model_type;
        break;
      }
  }
  NMPERM_CHECK(std::any_of(std::begin(kRegistry), std::end(kRegistry),
                           [&](const Registered& r) { return type == r.model_type; }),
               "{}: model_type '{}' is not supported ({})", what, type, model_types());
  return type;
}

const Architecture& architecture_of(const json& cfg, const std::string& what) {
  return registered(model_type_of(cfg, what)).architecture();
}

const Architecture* find_architecture(const std::string& name) {
  for (const Registered& r : kRegistry)
    if (r.architecture().name == name) return &r.architecture();
  return nullptr;
}

const Architecture& architecture(const std::string& name) {
  const Architecture* a = find_architecture(name);
  NMPERM_CHECK(a, "architecture '{}' is not supported ({})", name, fmt::join(architecture_names(), ", "));
  return *a;
}

std::vector<std::string> architecture_names() {
  std::vector<std::string> names;
  for (const Registered& r : kRegistry)
    if (std::find(names.begin(), names.end(), r.architecture().name) == names.end())
      names.push_back(r.architecture().name);
  return names;
}

void assign_parameters(Model& model, const SafeTensors& st, const std::string& what) {
  assign_from(model, source_of(st), what);
}

Model model_from(const json& cfg, const SafeTensors& weights, const std::string& what) {
  return model_from_source(cfg, source_of(weights), what);
}

CheckpointFiles CheckpointFiles::open(const std::string& path) {
  CheckpointFiles c;
  c.path = path;
  fs::path p(path);
  NMPERM_CHECK(fs::exists(p), "checkpoint '{}' does not exist", path);
  c.dir = fs::is_directory(p) ? p : p.parent_path();
  if (c.dir.empty()) c.dir = ".";
  fs::path cfg_path = c.dir / "config.json";
  NMPERM_CHECK(fs::exists(cfg_path), "checkpoint '{}': no config.json in '{}'", path, c.dir.string());
  c.config = read_json(cfg_path);

  // Weights: the given file, model.safetensors, or the shards of an index.
  std::vector<fs::path> files;
  json weight_map;
  if (!fs::is_directory(p)) files.push_back(p);
  else if (fs::exists(c.dir / "model.safetensors")) files.push_back(c.dir / "model.safetensors");
  else if (fs::exists(c.dir / "model.safetensors.index.json")) {
    json idx = read_json(c.dir / "model.safetensors.index.json");
    NMPERM_CHECK(idx.is_object() && idx.contains("weight_map") && idx["weight_map"].is_object(),
                 "'{}': model.safetensors.index.json has no weight_map", path);
    weight_map = idx["weight_map"];
    std::set<std::string> shards;
    for (auto& [k, v] : weight_map.items()) {
      NMPERM_CHECK(v.is_string() && !v.get<std::string>().empty() && v.get<std::string>().find('/') == std::string::npos,
                   "'{}': model.safetensors.index.json maps '{}' to {}, not a file name in the checkpoint folder", path,
                   k, v.dump());
      shards.insert(v.get<std::string>());
    }
    for (auto& s : shards) {
      NMPERM_CHECK(fs::exists(c.dir / s), "checkpoint '{}': shard '{}' (listed in model.safetensors.index.json) is missing",
                   path, s);
      files.push_back(c.dir / s);
    }
  } else {
    NMPERM_FAIL("checkpoint '{}': no model.safetensors (or index) in '{}'", path, c.dir.string());
  }
  std::map<std::string, std::string> shard_of;
  for (auto& f : files) {
    c.files.push_back(std::make_unique<MappedSafeTensors>(f.string()));
    const MappedSafeTensors* m = c.files.back().get();
    for (auto& e : m->header().entries) {
      NMPERM_CHECK(!c.tensors.count(e.name), "checkpoint '{}': tensor '{}' appears in two shards", path, e.name);
      c.tensors[e.name] = {m, &e};
      shard_of[e.name] = f.filename().string();
    }
  }
  if (files.size() > 1) c.shards = shard_of;
  for (auto& [name, shard] : weight_map.items()) {
    auto it = shard_of.find(name);
    NMPERM_CHECK(it != shard_of.end() && it->second == shard.get<std::string>(),
                 "checkpoint '{}': model.safetensors.index.json puts '{}' in '{}', which does not hold it", path, name,
                 shard.get<std::string>());
  }
  for (auto& [name, at] : c.tensors)  // the dtype of its floating weights
    if (at.second->dtype == "BF16" || at.second->dtype == "F16" || at.second->dtype == "F32") {
      c.float_dtype = at.second->dtype;
      if (!name.ends_with("norm.weight")) break;  // some exporters keep norms in f32
    }
  return c;
}

const TensorEntry* CheckpointFiles::find(const std::string& name) const {
  auto it = tensors.find(name);
  return it == tensors.end() ? nullptr : it->second.second;
}

Tensor CheckpointFiles::read(const std::string& name) const {
  auto it = tensors.find(name);
  NMPERM_CHECK(it != tensors.end(), "checkpoint '{}': tensor '{}' not found", path, name);
  return it->second.first->read(*it->second.second);
}

Model model_shell(const CheckpointFiles& files) {
  std::string what = fmt::format("checkpoint '{}'", files.path);
  ParsedConfig pc = parse_config(files.config, what);
  NMPERM_CHECK(pc.arch->block_by_block, "{}: block-by-block work is for decoder models ({}), not {}", what,
               model_types(true), pc.type);
  Model m;
  m.network = pc.spec.shell();
  m.source_dir = files.dir.string();
  m.source_dtype = files.float_dtype;
  m.source_shards = files.shards;
  // Every tensor's name and shape, checked now without reading any (one block's shapes
  // stand for all: they differ only in the index).
  Llama& L = m.as<Llama>();
  auto expect = [&](const std::string& name, const Shape& shape) {
    const TensorEntry* e = files.find(name);
    NMPERM_CHECK(e, "{}: tensor '{}' is missing (the {} architecture needs it)", what, name, pc.type);
    NMPERM_CHECK(e->shape == shape, "{}: tensor '{}' has shape {}, the model needs {}", what, name, e->shape, shape);
    NMPERM_CHECK(floating_disk(e->dtype), "{}: tensor '{}' is not floating point", what, name);
  };
  const Shape emb{L.cfg.vocab_size, L.cfg.hidden_size};
  std::set<std::string> known{"model.embed_tokens.weight", "model.norm.weight"};
  expect("model.embed_tokens.weight", emb);
  expect("model.norm.weight", {L.cfg.hidden_size});
  if (!L.cfg.tie_word_embeddings) expect("lm_head.weight", emb);
  known.insert("lm_head.weight");  // a tied head may come with its own copy, which is ignored
  for (size_t i = 0; i < L.layers.size(); ++i) {
    Llama one = Llama::shell(L.cfg);
    one.layers[i] = L.make_layer(nullptr);  // allocated, never touched: no memory in use
    one.visit_block(i, [&](const std::string& name, Tensor& t) {
      expect(name, t.shape());
      known.insert(name);
    });
    one.visit_block_linears(i, [&](const std::string& prefix, Linear&) { known.insert(prefix + ".input_permutation"); });
  }
  for (auto& [name, at] : files.tensors)
    NMPERM_CHECK(known.count(name) || ignorable(name),
                 "{}: unexpected tensor '{}' for a {} model (is this checkpoint for another architecture?)", what, name,
                 pc.type);
  return m;
}

void load_block(Model& model, const CheckpointFiles& files, size_t i) {
  Llama& L = model.as<Llama>();
  std::string what = fmt::format("checkpoint '{}'", files.path);
  L.layers.at(i) = L.make_layer(nullptr);
  WeightSource src = source_of(files);
  L.visit_block(i, [&](const std::string& name, Tensor& p) { load_parameter(src, name, p, what); });
  L.visit_block_linears(i, [&](const std::string& prefix, Linear& l) { load_input_permutation(src, prefix, l, what); });
  if (model.device() != Device::CPU) {
    Device d = model.device();
    L.visit_block(i, [&](const std::string&, Tensor& t) { t = t.detach().to(d).set_requires_grad(); });
    L.visit_block_linears(i, [&](const std::string&, Linear& l) {
      if (l.input_perm.defined()) l.input_perm = l.input_perm.to(d);
    });
  }
}

void free_block(Model& model, size_t i) {
  Llama& L = model.as<Llama>();
  L.layers.at(i) = Llama::shell(L.cfg).layers.at(i);
}

Tensor load_tensor(Model& model, const CheckpointFiles& files, const std::string& name) {
  std::string what = fmt::format("checkpoint '{}'", files.path);
  Tensor t = files.read(name);
  check_finite(t, name, what);
  return t.to(model.device());
}

Model load_checkpoint(const std::string& path) {
  CheckpointFiles files = CheckpointFiles::open(path);
  Model m = model_from_source(files.config, source_of(files), fmt::format("checkpoint '{}'", path));
  m.source_dir = files.dir.string();
  m.source_shards = files.shards;
  m.source_dtype = files.float_dtype;
  if (m.network->takes_images() && fs::exists(files.dir / "preprocessor_config.json"))
    m.preprocess = ImagePreprocess::from_json(read_json(files.dir / "preprocessor_config.json"));
  return m;
}

void save_checkpoint(Model& model, const std::string& dir, const std::map<std::string, std::string>& metadata) {
  fs::create_directories(dir);
  std::vector<std::pair<std::string, Tensor>> tensors;
  model.visit([&](const std::string& name, Tensor& t) { tensors.emplace_back(name, t.detach()); });
  model.visit_linears([&](const std::string& prefix, Linear& l) {
    if (l.input_perm.defined()) tensors.emplace_back(prefix + ".input_permutation", l.input_perm.to(DType::I32));
  });
  std::map<std::string, std::string> meta = metadata;
  meta["format"] = "pt";  // what transformers expects in the safetensors metadata
  save_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, meta);
  json config = model.config_json();
  config[config.contains("dtype") ? "dtype" : "torch_dtype"] = "float32";  // what was written
  write_file_atomic((fs::path(dir) / "config.json").string(), config.dump(2) + "\n");
  if (model.network->takes_images())
    write_file_atomic((fs::path(dir) / "preprocessor_config.json").string(), model.preprocess.to_json().dump(2) + "\n");
}

Layout parse_layout(const std::string& name) {
  NMPERM_CHECK(name == "original" || name == "permuted", "layout '{}' (original, permuted)", name);
  return name == "original" ? Layout::Original : Layout::Permuted;
}

Tensor weight_in_original_order(const Linear& l) {
  NoGradGuard ng;
  std::vector<int64_t> p = l.input_perm.to(Device::CPU).to_vector<int64_t>(), inv(p.size());
  for (size_t j = 0; j < p.size(); ++j) inv[size_t(p[j])] = int64_t(j);
  return index_select(l.weight.detach().to(Device::CPU), 1, from_vector(inv, {l.in()}));
}

void write_export_files(const Model& model, const std::string& dir) {
  const fs::path out(dir);
  json config = model.config_json();
  const char* torch_name = model.source_dtype == "BF16" ? "bfloat16" : model.source_dtype == "F16" ? "float16" : "float32";
  config[config.contains("torch_dtype") && !config.contains("dtype") ? "torch_dtype" : "dtype"] = torch_name;
  write_file_atomic((out / "config.json").string(), config.dump(2) + "\n");
  // What tools load beside the weights, copied from the source as it was.
  bool wrote_preprocessor = false;
  if (!model.source_dir.empty() && fs::absolute(model.source_dir) != fs::absolute(out))
    for (const char* f : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                          "added_tokens.json", "vocab.json", "merges.txt", "generation_config.json",
                          "chat_template.jinja", "chat_template.json", "preprocessor_config.json"})
      if (fs::exists(fs::path(model.source_dir) / f)) {
        fs::copy_file(fs::path(model.source_dir) / f, out / f, fs::copy_options::overwrite_existing);
        wrote_preprocessor |= std::string(f) == "preprocessor_config.json";
      }
  if (model.network->takes_images() && !wrote_preprocessor)
    write_file_atomic((out / "preprocessor_config.json").string(), model.preprocess.to_json().dump(2) + "\n");
}

void export_checkpoint(Model& model, const std::string& dir, const std::map<std::string, std::string>& metadata,
                       Layout layout) {
  NoGradGuard ng;
  fs::create_directories(dir);
  // Layers with an input gather: in the original layout their columns go back to the
  // original channel order, W[:, p[j]] = W'[:, j].
  std::map<std::string, const Linear*> gathers;  // by weight name
  std::vector<std::pair<std::string, Tensor>> perm_tensors;
  const std::map<std::string, std::string> tied = model.network->tied_weights();
  model.visit_linears([&](const std::string& prefix, Linear& l) {
    if (!l.input_perm.defined()) return;
    if (layout == Layout::Permuted) {
      perm_tensors.emplace_back(prefix + ".input_permutation", l.input_perm.to(DType::I32));
      return;
    }
    NMPERM_CHECK(!tied.count(prefix + ".weight"),
                 "export: a gathered lm_head tied to the embeddings has no original-order form");
    gathers[prefix + ".weight"] = &l;
  });
  std::vector<std::pair<std::string, Tensor>> tensors;
  model.visit([&](const std::string& name, Tensor& t) {
    auto g = gathers.find(name);
    tensors.emplace_back(name, g == gathers.end() ? t.detach() : weight_in_original_order(*g->second));
  });
  tensors.insert(tensors.end(), perm_tensors.begin(), perm_tensors.end());
  std::map<std::string, std::string> meta = metadata;
  meta["format"] = "pt";
  meta["layout"] = layout == Layout::Original ? "original" : "permuted";
  // Shards as the source had them (tensors it did not have go to the first shard).
  const fs::path out(dir);
  if (model.source_shards.empty()) {
    save_safetensors((out / "model.safetensors").string(), tensors, meta, model.source_dtype);
  } else {
    std::map<std::string, std::vector<std::pair<std::string, Tensor>>> by_shard;
    const std::string first = model.source_shards.begin()->second;
    json weight_map = json::object();
    uint64_t total = 0;
    for (auto& [name, t] : tensors) {
      auto it = model.source_shards.find(name);
      std::string shard = it == model.source_shards.end() ? first : it->second;
      weight_map[name] = shard;
      total += uint64_t(t.numel()) * (is_floating(t.dtype()) && model.source_dtype != "F32" ? 2 : dtype_size(t.dtype()));
      by_shard[shard].emplace_back(name, t);
    }
    for (auto& [shard, ts] : by_shard) save_safetensors((out / shard).string(), ts, meta, model.source_dtype);
    json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    write_file_atomic((out / "model.safetensors.index.json").string(), index.dump(2) + "\n");
  }
  write_export_files(model, dir);
}

}  // namespace nmperm

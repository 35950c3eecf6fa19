#include "models/calibrate.h"

#include <cmath>
#include <unordered_map>

namespace nmperm {

namespace {

struct SumSquares : LinearObserver {
  std::unordered_map<const void*, std::vector<double>> sums;  // keyed by weight storage
  void observe(const Tensor& weight, const Tensor& input) override {
    int64_t in = weight.shape(1);
    Tensor x = input.to(Device::CPU).to(DType::F32).contiguous();
    const float* p = x.data<float>();
    auto& s = sums[weight.storage().get()];
    s.resize(size_t(in), 0.0);
    for (int64_t r = 0; r < x.numel() / in; ++r)
      for (int64_t j = 0; j < in; ++j) s[size_t(j)] += double(p[r * in + j]) * double(p[r * in + j]);
  }
};

}  // namespace

std::map<std::string, Tensor> activation_norms(Model& model, const TrainData& data, const CalibrationOptions& opt) {
  NMPERM_CHECK(opt.batches > 0 && opt.batch > 0, "calibration needs at least one batch");
  NoGradGuard ng;
  SumSquares obs;
  set_linear_observer(&obs);
  try {
    const int64_t n = opt.batches * opt.batch;
    if (model.vit) {
      const ImageSet& s = data.train_images;
      NMPERM_CHECK(n <= s.size(), "calibration wants {} images, the data has {}", n, s.size());
      std::vector<int64_t> at = spread_indices(s.size(), n);
      for (int64_t b = 0; b < opt.batches; ++b) {
        Tensor ix = from_vector(std::vector<int64_t>(at.begin() + b * opt.batch, at.begin() + (b + 1) * opt.batch),
                                {opt.batch});
        model.vit->forward(model.preprocess.apply(index_select(s.images, 0, ix).to(model.device())));
      }
    } else {
      const auto& tok = data.tokens.train;
      int64_t T = context_of(model, data), slots = int64_t(tok.size()) / T;
      std::vector<int64_t> at;  // token offsets of the windows
      if (data.tokens.field_protocol) {  // random starts, as Wanda / SparseGPT draw them
        NMPERM_CHECK(int64_t(tok.size()) > T, "calibration wants windows of {} tokens, the calibration text has {}", T,
                     tok.size());
        Generator gen(data.tokens.calib_seed);
        for (int64_t i = 0; i < n; ++i) at.push_back(gen.randint(int64_t(tok.size()) - T));
      } else {
        NMPERM_CHECK(n <= slots, "calibration wants {} windows of {} tokens, the training data has {} tokens", n, T,
                     tok.size());
        for (int64_t s : spread_indices(slots, n)) at.push_back(s * T);
      }
      for (int64_t b = 0; b < opt.batches; ++b) {
        Tensor ids = Tensor::empty({opt.batch, T}, DType::I64);
        int64_t* p = ids.data<int64_t>();
        for (int64_t r = 0; r < opt.batch; ++r)
          for (int64_t t = 0; t < T; ++t) p[r * T + t] = tok[size_t(at[size_t(b * opt.batch + r)] + t)];
        model.llama->forward(ids.to(model.device()));
      }
    }
  } catch (...) {
    set_linear_observer(nullptr);
    throw;
  }
  set_linear_observer(nullptr);
  std::map<std::string, Tensor> out;
  model.visit([&](const std::string& name, Tensor& t) {
    auto it = obs.sums.find(t.storage().get());
    if (it == obs.sums.end() || t.ndim() != 2) return;
    std::vector<float> v(it->second.size());
    for (size_t j = 0; j < v.size(); ++j) v[j] = float(std::sqrt(it->second[j]));
    // A tied lm_head shares the embedding's storage: its inputs are the lm_head's.
    bool tied_head = model.llama && model.llama->cfg.tie_word_embeddings && name == "model.embed_tokens.weight";
    out[tied_head ? "lm_head.weight" : name] = from_vector(v, {int64_t(v.size())});
  });
  return out;
}

}  // namespace nmperm

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
    for (int64_t b = 0; b < opt.batches; ++b) {
      if (model.vit) {
        const ImageSet& s = data.train_images;
        int64_t at = b * opt.batch;
        NMPERM_CHECK(at + opt.batch <= s.size(), "calibration wants {} images, the data has {}",
                     opt.batches * opt.batch, s.size());
        model.vit->forward(model.preprocess.apply(contiguous(narrow(s.images, 0, at, opt.batch)).to(model.device())));
      } else {
        int64_t T = context_of(model), need = (b + 1) * opt.batch * T;
        NMPERM_CHECK(need <= int64_t(data.tokens.train.size()), "calibration wants {} tokens, the data has {}",
                     opt.batches * opt.batch * T, data.tokens.train.size());
        Tensor ids = Tensor::empty({opt.batch, T}, DType::I64);
        for (int64_t k = 0; k < opt.batch * T; ++k) ids.data<int64_t>()[k] = data.tokens.train[size_t(b * opt.batch * T + k)];
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

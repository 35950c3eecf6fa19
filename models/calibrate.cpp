#include "models/calibrate.h"

#include <cmath>
#include <unordered_map>

namespace nmperm {

void InputSumSquares::observe(const Tensor& weight, const Tensor& input) { add(weight.storage().get(), input); }

void InputSumSquares::add(const void* key, const Tensor& input) {
  int64_t in = input.shape(-1);
  Tensor x = input.to(Device::CPU).to(DType::F32).contiguous();
  const float* p = x.data<float>();
  auto& s = sums[key];
  s.resize(size_t(in), 0.0);
  for (int64_t r = 0; r < x.numel() / in; ++r)
    for (int64_t j = 0; j < in; ++j) s[size_t(j)] += double(p[r * in + j]) * double(p[r * in + j]);
}

Tensor InputSumSquares::norms(const Tensor& weight) const { return norms(weight.storage().get()); }

Tensor InputSumSquares::norms(const void* key) const {
  auto it = sums.find(key);
  if (it == sums.end()) return Tensor();
  std::vector<float> v(it->second.size());
  for (size_t j = 0; j < v.size(); ++j) v[j] = float(std::sqrt(it->second[j]));
  return from_vector(v, {int64_t(v.size())});
}

ObserverGuard::ObserverGuard(LinearObserver* o) { set_linear_observer(o); }
ObserverGuard::~ObserverGuard() { set_linear_observer(nullptr); }

std::vector<Tensor> calibration_windows(const Model& model, const TrainData& data, const CalibrationOptions& opt) {
  NMPERM_CHECK(opt.batches > 0 && opt.batch > 0, "calibration needs at least one batch");
  const int64_t n = opt.batches * opt.batch;
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
  std::vector<Tensor> out;
  for (int64_t b = 0; b < opt.batches; ++b) {
    Tensor ids = Tensor::empty({opt.batch, T}, DType::I64);
    int64_t* p = ids.data<int64_t>();
    for (int64_t r = 0; r < opt.batch; ++r)
      for (int64_t t = 0; t < T; ++t) p[r * T + t] = tok[size_t(at[size_t(b * opt.batch + r)] + t)];
    out.push_back(ids);
  }
  return out;
}

std::map<std::string, Tensor> activation_norms(Model& model, const TrainData& data, const CalibrationOptions& opt) {
  NMPERM_CHECK(opt.batches > 0 && opt.batch > 0, "calibration needs at least one batch");
  NoGradGuard ng;
  InputSumSquares obs;
  {
    ObserverGuard guard(&obs);
    if (model.network->takes_images()) {
      const int64_t n = opt.batches * opt.batch;
      const ImageSet& s = data.train_images;
      NMPERM_CHECK(n <= s.size(), "calibration wants {} images, the data has {}", n, s.size());
      std::vector<int64_t> at = spread_indices(s.size(), n);
      for (int64_t b = 0; b < opt.batches; ++b) {
        Tensor ix = from_vector(std::vector<int64_t>(at.begin() + b * opt.batch, at.begin() + (b + 1) * opt.batch),
                                {opt.batch});
        model.forward(model.preprocess.apply(index_select(s.images, 0, ix).to(model.device())));
      }
    } else {
      for (const Tensor& ids : calibration_windows(model, data, opt)) model.forward(ids.to(model.device()));
    }
  }
  // A tied weight (an lm_head) shares its parameter's storage (the embeddings): the inputs
  // seen there are the tied layer's.
  std::map<std::string, std::string> tied_as;  // parameter -> the weight tied to it
  for (auto& [weight, param] : model.network->tied_weights()) tied_as[param] = weight;
  std::map<std::string, Tensor> out;
  model.visit([&](const std::string& name, Tensor& t) {
    if (t.ndim() != 2) return;
    Tensor n = obs.norms(t);
    if (!n.defined()) return;
    auto tied = tied_as.find(name);
    out[tied != tied_as.end() ? tied->second : name] = n;
  });
  return out;
}

}  // namespace nmperm

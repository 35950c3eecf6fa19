// Building blocks of the transformers, made only of autograd ops. Each block is a plain
// struct of parameter tensors plus a forward; `visit` walks the parameters with their
// Hugging Face names, which is how checkpoints load and save and how optimizers find them.
// Dimension names: B batch, T tokens, C channels, H heads, D head dim.
#pragma once
#include <cmath>
#include <limits>
#include <type_traits>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "autograd/ops.h"

namespace nmperm {

using ParamVisitor = std::function<void(const std::string& name, Tensor& param)>;
struct Linear;
// Walks linear layers with their Hugging Face prefixes ("model.layers.0.mlp.down_proj").
using LinearVisitor = std::function<void(const std::string& prefix, Linear& layer)>;

// Reads j[key] into out when present and not null (config.json fields are optional).
// Integers must be integral values in range (1e30 or 2.5 for a size is an error, not a
// silent wrap); other mismatches throw nlohmann's type_error, which callers rename.
template <class T> void json_get(const nlohmann::json& j, const char* key, T& out) {
  if (!j.contains(key) || j[key].is_null()) return;
  const nlohmann::json& v = j[key];
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    bool ok = v.is_number_unsigned() ? v.get<uint64_t>() <= uint64_t(std::numeric_limits<T>::max())
              : v.is_number_integer() ? v.get<int64_t>() >= int64_t(std::numeric_limits<T>::min())
              : v.is_number_float()   ? std::abs(v.get<double>()) < 9e15 && v.get<double>() == std::floor(v.get<double>())
                                      : true;  // not a number: get<T> below names the type
    NMPERM_CHECK(ok, "'{}' must be an integer in range, got {}", key, v.dump());
    if (v.is_number_float()) {
      out = T(v.get<double>());
      return;
    }
  }
  out = v.get<T>();
}

// Sees the input of every Linear while installed (calibration): see models/calibrate.h.
struct LinearObserver {
  virtual ~LinearObserver() = default;
  virtual void observe(const Tensor& weight, const Tensor& input) = 0;
};
void set_linear_observer(LinearObserver* observer);  // nullptr removes it (per thread)
LinearObserver* linear_observer();

// y = x[..., p] W^T + b; W (out, in), b optional. The input gather p (i64, (in)) is set
// only on models whose input channels were permuted where the permutation could not be
// folded into the layer that produces them (see permute/sites.h).
struct Linear {
  Tensor weight, bias;
  Tensor input_perm;
  Tensor operator()(const Tensor& x) const {
    Tensor xi = input_perm.defined() ? index_select(x, x.ndim() - 1, input_perm) : x;
    if (LinearObserver* o = linear_observer()) o->observe(weight, xi);
    return linear(xi, weight, bias);
  }
  void visit(const std::string& prefix, const ParamVisitor& f);
  int64_t in() const { return weight.shape(1); }
  int64_t out() const { return weight.shape(0); }
};

// Checks that p is a permutation of 0..n-1; `what` names it in the error.
void check_permutation(const std::vector<int64_t>& p, int64_t n, const std::string& what);

// LayerNorm (weight and bias) or RMSNorm (weight only) over the last dim.
struct Norm {
  Tensor weight, bias;
  double eps = 1e-5;
  bool rms = false;
  Tensor operator()(const Tensor& x) const { return rms ? rms_norm(x, weight, eps) : layer_norm(x, weight, bias, eps); }
  void visit(const std::string& prefix, const ParamVisitor& f);
};

// Multi-head attention with grouped-query heads and optional RoPE.
struct Attention {
  Linear q, k, v, o;
  int64_t heads = 1, kv_heads = 1;
  bool causal = false;
  std::vector<double> rope_inv_freq;  // empty: no RoPE
  Tensor operator()(const Tensor& x) const;  // (B, T, C) -> (B, T, C)
};

// Initialisers (Hugging Face's defaults: normal(0, std) weights, zero biases, unit norms).
// Parameters are created requiring grad (like PyTorch's nn.Parameter), so every copy of
// the Tensor handle shares the gradient slot; evaluate under NoGradGuard.
// A null generator allocates the weights without initialising them (to be loaded).
Linear make_linear(int64_t in, int64_t out, bool bias, double std, Generator& gen);
Linear make_linear(int64_t in, int64_t out, bool bias, double std, Generator* gen);
Norm make_norm(int64_t dim, double eps, bool rms);
Tensor normal_tensor(const Shape& shape, double std, Generator& gen);
Tensor normal_tensor(const Shape& shape, double std, Generator* gen);

}  // namespace nmperm

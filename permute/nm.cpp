#include "permute/nm.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <type_traits>
#include <vector>

#include "autograd/ops.h"

namespace nmperm {

Score parse_score(const std::string& name) {
  if (name == "magnitude") return Score::Magnitude;
  if (name == "wanda") return Score::Wanda;
  if (name == "ria") return Score::RIA;
  NMPERM_FAIL("unknown score '{}' (magnitude, wanda, ria)", name);
}

const char* score_name(Score s) {
  return s == Score::Magnitude ? "magnitude" : s == Score::Wanda ? "wanda" : "ria";
}

NMPattern NMPattern::parse(const std::string& text) {
  NMPattern p;
  auto colon = text.find(':');
  NMPERM_CHECK(colon != std::string::npos, "N:M pattern '{}' must look like 2:4", text);
  try {
    p.n = std::stoll(text.substr(0, colon));
    p.m = std::stoll(text.substr(colon + 1));
  } catch (const std::exception&) {
    NMPERM_FAIL("N:M pattern '{}' must look like 2:4", text);
  }
  NMPERM_CHECK(p.m > 0 && p.n > 0 && p.n < p.m, "N:M pattern '{}' needs 0 < N < M", text);
  return p;
}

void NMPattern::check_fits(int64_t in, const std::string& what) const {
  NMPERM_CHECK(in % m == 0, "{}: {} input channels are not a multiple of M = {} (pattern {}:{})", what, in, m, n, m);
}

Tensor importance(const Tensor& weight, const Tensor& act_norms, Score score) {
  NMPERM_CHECK(weight.ndim() == 2, "importance: weight must be (out, in), got {}", describe(weight));
  if (weight.device() != Device::CPU)  // once per site: computed on the host, in double, as for CPU weights
    return importance(weight.to(Device::CPU), act_norms.defined() ? act_norms.to(Device::CPU) : act_norms, score)
        .to(weight.device());
  int64_t O = weight.shape(0), I = weight.shape(1);
  Tensor w = weight.to(DType::F32).contiguous();
  Tensor s = Tensor::empty({O, I});
  const float* wp = w.data<float>();
  float* sp = s.data<float>();
  for (int64_t k = 0; k < O * I; ++k) sp[k] = std::abs(wp[k]);
  if (score == Score::Magnitude) return s;
  NMPERM_CHECK(act_norms.defined() && act_norms.numel() == I,
               "importance: {} needs activation norms for the {} input channels, got {}", score_name(score), I,
               describe(act_norms));
  std::vector<float> a = act_norms.to_vector<float>();
  if (score == Score::Wanda) {
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < I; ++i) sp[o * I + i] *= a[size_t(i)];
    return s;
  }
  std::vector<double> row(size_t(O), 0.0), col(size_t(I), 0.0);
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i) {
      row[size_t(o)] += sp[o * I + i];
      col[size_t(i)] += sp[o * I + i];
    }
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i) {
      double v = sp[o * I + i];
      double r = (row[size_t(o)] > 0 ? v / row[size_t(o)] : 0.0) + (col[size_t(i)] > 0 ? v / col[size_t(i)] : 0.0);
      sp[o * I + i] = float(r * std::sqrt(double(a[size_t(i)])));
    }
  return s;
}

namespace {

// 0/1 mask keeping the `keep` highest scores of every run of `group` consecutive inputs of
// every row (ties keep the lower index; NaN ranks below every number, so exactly `keep`
// are kept).
Tensor top_in_groups(const Tensor& scores, int64_t group, int64_t keep) {
  int64_t O = scores.shape(0), I = scores.shape(1);
  if (scores.device() != Device::CPU) {
    // The device's top-k (the same tie rule) and a scatter of ones; the CPU keeps the
    // loops below, which rank each short group in place without building index tensors.
    NoGradGuard ng;
    Device d = scores.device();
    int64_t R = O * I / group;
    Tensor idx = topk(reshape(scores.to(DType::F32), {R, group}), keep, true).second;
    Tensor mask = scatter_add(zeros({R, group}, DType::F32, d), 1, idx, ones({R, keep}, DType::F32, d));
    return reshape(mask, {O, I}).contiguous();
  }
  Tensor s = scores.to(DType::F32).contiguous();
  const float* sp = s.data<float>();
  auto key = [](float x) { return x != x ? -INFINITY : x; };
  if (group <= 8) {  // N:M groups: rank each entry by counting (the same order, no sort)
    Tensor mask = Tensor::empty({O, I});
    float* mp = mask.data<float>();
    auto by_rank = [&]<int64_t M>(std::integral_constant<int64_t, M>) {
      const int64_t m = M ? M : group;
#pragma omp parallel for if (O * I > 65536)
      for (int64_t g = 0; g < O * I; g += m) {
        float v[8];
        for (int64_t a = 0; a < m; ++a) v[a] = key(sp[g + a]);
        for (int64_t a = 0; a < m; ++a) {
          int64_t above = 0;  // entries ranked before a: higher, or equal at a lower index
          for (int64_t b = 0; b < m; ++b) above += v[b] > v[a] || (v[b] == v[a] && b < a);
          mp[g + a] = above < keep ? 1.0f : 0.0f;
        }
      }
    };
    if (group == 4) by_rank(std::integral_constant<int64_t, 4>{});
    else by_rank(std::integral_constant<int64_t, 0>{});
    return mask;
  }
  Tensor mask = zeros({O, I});
  float* mp = mask.data<float>();
#pragma omp parallel for if (O * I > 65536)
  for (int64_t o = 0; o < O; ++o) {
    std::vector<int64_t> idx(static_cast<size_t>(group));
    for (int64_t g = 0; g < I; g += group) {
      const float* grp = sp + o * I + g;
      std::iota(idx.begin(), idx.end(), 0);
      std::partial_sort(idx.begin(), idx.begin() + keep, idx.end(), [&](int64_t a, int64_t b) {
        float x = key(grp[a]), y = key(grp[b]);
        return x != y ? x > y : a < b;
      });
      for (int64_t k = 0; k < keep; ++k) mp[o * I + g + idx[size_t(k)]] = 1.0f;
    }
  }
  return mask;
}

}  // namespace

Tensor nm_mask(const Tensor& scores, NMPattern p) {
  NMPERM_CHECK(scores.ndim() == 2, "nm_mask: scores must be (out, in), got {}", describe(scores));
  p.check_fits(scores.shape(1), "nm_mask");
  return top_in_groups(scores, p.m, p.n);
}

Tensor unstructured_mask(const Tensor& scores, NMPattern p) {
  NMPERM_CHECK(scores.ndim() == 2, "unstructured_mask: scores must be (out, in), got {}", describe(scores));
  int64_t I = scores.shape(1);
  return top_in_groups(scores, I, I * p.n / p.m);
}

double kept_fraction(const Tensor& scores, const Tensor& mask) {
  NMPERM_CHECK(scores.shape() == mask.shape(), "kept_fraction: scores {} and mask {} differ", describe(scores),
               describe(mask));
  auto s = scores.to_vector<double>(), m = mask.to_vector<double>();
  double kept = 0, total = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    kept += s[i] * m[i];
    total += s[i];
  }
  return total > 0 ? kept / total : 0.0;
}

Sparsity measure_sparsity(const Tensor& weight, NMPattern pattern) {
  Tensor w = weight.detach().to(Device::CPU).contiguous().to(DType::F64);
  NMPERM_CHECK(w.ndim() == 2 && w.shape(1) % pattern.m == 0, "measure_sparsity: {} does not split into runs of {}",
               describe(w), pattern.m);
  const double* p = w.data<double>();
  Sparsity s;
  s.total = w.numel();
  for (int64_t at = 0; at < s.total; at += pattern.m) {
    int64_t nz = 0;
    for (int64_t k = 0; k < pattern.m; ++k) nz += p[at + k] != 0;
    s.zeros += pattern.m - nz;
    s.violations += nz > pattern.n;
  }
  return s;
}

}  // namespace nmperm

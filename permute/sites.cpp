#include "permute/sites.h"

#include "core/safetensors.h"

namespace nmperm {

namespace {

Tensor perm_tensor(const Perm& p) { return from_vector(p, {int64_t(p.size())}); }

// t <- t.index_select(dim, p), in place so every handle on the parameter sees it.
void permute_in_place(Tensor& t, int64_t dim, const Perm& p) {
  if (!t.defined()) return;
  NoGradGuard ng;
  t.copy_from(index_select(t, dim, perm_tensor(p).to(t.device())));
}

}  // namespace

std::vector<Site> permutation_sites(Model& model) {
  std::vector<Site> sites;
  for (size_t i = 0; i < model.num_blocks(); ++i)
    for (Site& s : permutation_sites(model, i)) sites.push_back(std::move(s));
  return sites;
}

std::vector<Site> permutation_sites(Model& model, size_t i) { return model.network->block_sites(i); }

bool foldable(const Site& s, const Perm& p) {
  if (s.producers.empty()) return false;
  if (s.head_dim == 0) return true;
  // Attention output: channel (h, d) may only move to (h, sigma_g(d)), with one sigma per
  // key/value head g shared by its heads_per_kv query heads.
  int64_t D = s.head_dim, H = s.channels / D;
  for (int64_t h = 0; h < H; ++h) {
    int64_t lead = h - h % s.heads_per_kv;  // first query head of the group
    for (int64_t d = 0; d < D; ++d) {
      int64_t src = p[size_t(h * D + d)];
      if (src / D != h || src - h * D != p[size_t(lead * D + d)] - lead * D) return false;
    }
  }
  return true;
}

bool apply_permutation(Site& s, const Perm& p) {
  check_permutation(p, s.channels, "permutation for site '" + s.name + "'");
  for (size_t c = 0; c < s.consumers.size(); ++c)
    NMPERM_CHECK(!s.consumers[c]->input_perm.defined(), "site '{}': layer '{}' is already permuted", s.name,
                 s.consumer_names[c]);
  for (Linear* c : s.consumers) permute_in_place(c->weight, 1, p);
  if (!foldable(s, p)) {
    Tensor pt = perm_tensor(p).to(s.consumers[0]->weight.device());
    for (Linear* c : s.consumers) c->input_perm = pt;
    return false;
  }
  Perm rows = p;
  if (s.head_dim > 0) {
    // The value projection has one row block per key/value head: permute each by the
    // within-head permutation of the first query head that reads it.
    int64_t D = s.head_dim, kv = s.channels / D / s.heads_per_kv;
    rows.assign(size_t(kv * D), 0);
    for (int64_t g = 0; g < kv; ++g)
      for (int64_t d = 0; d < D; ++d) {
        int64_t h = g * s.heads_per_kv;
        rows[size_t(g * D + d)] = g * D + (p[size_t(h * D + d)] - h * D);
      }
  }
  for (Linear* pr : s.producers) {
    permute_in_place(pr->weight, 0, rows);
    permute_in_place(pr->bias, 0, rows);
  }
  return true;
}

Perm inverse_permutation(const Perm& p) {
  Perm inv(p.size());
  for (size_t j = 0; j < p.size(); ++j) inv[size_t(p[j])] = int64_t(j);
  return inv;
}

void save_permutations(const std::string& path, const std::map<std::string, Perm>& perms,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [name, p] : perms) tensors.emplace_back(name, perm_tensor(p).to(DType::I32));
  save_safetensors(path, tensors, metadata);
}

std::map<std::string, Perm> load_permutations(const std::string& path) {
  return permutations_from(load_safetensors(path), path);
}

std::map<std::string, Perm> permutations_from(const SafeTensors& st, const std::string& path) {
  std::map<std::string, Perm> out;
  for (auto& [name, t] : st.tensors) {
    NMPERM_CHECK(t.ndim() == 1 && !is_floating(t.dtype()), "permutation file '{}': '{}' must be an integer vector, got {}",
                 path, name, describe(t));
    Perm p = t.to(DType::I64).to_vector<int64_t>();
    check_permutation(p, int64_t(p.size()), fmt::format("permutation file '{}': '{}'", path, name));
    out[name] = std::move(p);
  }
  return out;
}

}  // namespace nmperm

#include "permute/methods.h"

#include <fmt/format.h>

#include "core/error.h"

namespace nmperm {

const std::vector<PermuteMethod>& permute_methods() {
  static const std::vector<PermuteMethod> methods = {
      {"none", "identity: N:M pruning in the original channel order", false, false,
       [](const Tensor& s, NMPattern, const SearchOptions&) { return identity_perm(s.shape(1)); }},
      {"random", "a seeded random permutation (the control)", false, true,
       [](const Tensor& s, NMPattern, const SearchOptions& o) { return random_perm(s.shape(1), o.seed); }},
      {"channel-swap", "greedy channel swaps with random escapes (Pool & Yu 2021, Apex ASP)", false, true,
       channel_swap},
      {"ria", "RIA's channel reallocation + linear sum assignment (Zhang et al. 2024)", false, false,
       ria_permutation},
      {"permllm", "PermLLM's block-wise Sinkhorn permutations (Zou et al. 2025)", true, true, nullptr},
      {"learned", "learned permutation costs (Li et al. 2026), warm-started from RIA", true, true, nullptr},
  };
  return methods;
}

std::vector<std::string> permute_method_names(bool search_only) {
  std::vector<std::string> names;
  for (const PermuteMethod& m : permute_methods())
    if (!search_only || !m.learned) names.push_back(m.name);
  return names;
}

const PermuteMethod& permute_method(const std::string& name) {
  for (const PermuteMethod& m : permute_methods())
    if (name == m.name) return m;
  NMPERM_FAIL("unknown permutation method '{}' ({})", name, fmt::join(permute_method_names(), ", "));
}

std::string permute_methods_help(bool search_only) {
  std::string s;
  for (const PermuteMethod& m : permute_methods())
    if (!search_only || !m.learned) s += fmt::format("\n  {:13} {}", m.name, m.help);
  return s;
}

}  // namespace nmperm

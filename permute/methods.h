// Every permutation method, once. The CLI's choices and its help, the demo's comparison,
// the search dispatch and the learned/seeded rules of `prune` all read this table; adding
// a method is one row here (and its code in baselines.cpp or learned.cpp).
#pragma once
#include <string>
#include <vector>

#include "permute/baselines.h"

namespace nmperm {

struct PermuteMethod {
  const char* name;
  const char* help;  // one line for --help
  bool learned;      // trains permutation costs against the model; the others search on scores
  bool seeded;       // its result depends on --seed (so `prune --seeds` repeats it)
  // A search method's permutation of one site's scores (S (out, in)); null when learned.
  Perm (*search)(const Tensor& scores, NMPattern pattern, const SearchOptions& opt);
};

const std::vector<PermuteMethod>& permute_methods();  // in the order tables print them
// The method called `name`, else an error naming the known ones.
const PermuteMethod& permute_method(const std::string& name);
// Their names (only the search methods when asked), for choices and defaults.
std::vector<std::string> permute_method_names(bool search_only = false);
// "none (identity: ...)\nrandom (...)..." for --help.
std::string permute_methods_help(bool search_only = false);

}  // namespace nmperm

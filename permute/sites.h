// Permutation sites of a model and how a permutation is deployed.
//
// A site is a set of input channels shared by one or more linear layers (its consumers);
// one permutation p serves them all, W_c <- W_c[:, p]. The channels must then arrive in
// permuted order, x' = x[..., p]. Where the channels are the output rows of another
// linear layer (the producer) and only elementwise ops sit between, permuting the
// producer's rows (and bias) does that for free ("folded"):
//   ViT   output.dense        <- rows of intermediate.dense (GELU between)
//   Llama down_proj           <- rows of gate_proj and up_proj (SiLU(gate) * up between)
//   both  attention output    <- rows of value, when p keeps every channel in its head and
//                                moves channels the same way in all query heads that share
//                                a key/value head (attention mixes tokens, not channels)
// Otherwise (the inputs of q/k/v and of the MLP come from a norm of the residual stream)
// the consumers gather their input at run time ("gathered"; Linear::input_perm), which a
// saved checkpoint records as "<layer>.input_permutation".
//
// Site names: "<block prefix>.attention.attention.qkv", ".attention.output.dense",
// ".intermediate.dense", ".output.dense" (ViT); ".self_attn.qkv_proj", ".self_attn.o_proj",
// ".mlp.gate_up_proj", ".mlp.down_proj" (Llama).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "models/checkpoint.h"
#include "permute/baselines.h"

namespace nmperm {

// struct Site (models/network.h): a site's name, block, consumers and producers; each
// architecture lists its blocks' sites (Network::block_sites).

// Every site of every block, in block order. The pointers refer into `model`.
std::vector<Site> permutation_sites(Model& model);
std::vector<Site> permutation_sites(Model& model, size_t block);  // the sites of one block

// True when p can be folded into the site's producers (see above).
bool foldable(const Site& site, const Perm& p);

// Applies p to the site: consumers' columns are permuted, then the permutation is folded
// into the producers or set as the consumers' input gather. The model computes the same
// function afterwards (up to float rounding). Returns true when folded.
bool apply_permutation(Site& site, const Perm& p);

Perm inverse_permutation(const Perm& p);

// Permutation files: safetensors with one int32 index vector per site, named by site.
void save_permutations(const std::string& path, const std::map<std::string, Perm>& perms,
                       const std::map<std::string, std::string>& metadata = {});
std::map<std::string, Perm> load_permutations(const std::string& path);
// The same from a parsed file; `what` names it in errors.
std::map<std::string, Perm> permutations_from(const SafeTensors& file, const std::string& what);

}  // namespace nmperm

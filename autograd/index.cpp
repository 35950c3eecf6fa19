// Indexing ops. Gathers scatter their gradient back (index_add / scatter_add), scatters
// gather theirs; indices never get a gradient.
#include "autograd/ops.h"
#include "core/view.h"
#include "kernels/index.h"
#include "kernels/topk.h"

namespace nmperm {

namespace {

void check_index(const Tensor& idx, const char* op) {
  NMPERM_CHECK(idx.defined() && !is_floating(idx.dtype()), "{}: indices must be i32 or i64, got {}", op, describe(idx));
}

// Backward of the gathering ops: the gradient is added back where it was read from.
// index_select reads rows idx[i] (its backward is index_add); gather reads element-wise
// (its backward is scatter_add).
struct GatherBackNode : Node {
  using AddBack = void (*)(Tensor&, int64_t, const Tensor&, const Tensor&);
  const char* label;
  AddBack add_back;
  int64_t dim;
  Tensor idx;
  GatherBackNode(const char* l, AddBack f, int64_t d, Tensor i) : label(l), add_back(f), dim(d), idx(std::move(i)) {}
  const char* name() const override { return label; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor gx = zeros(inputs[0].shape, g.dtype(), g.device());
    add_back(gx, dim, idx, g.contiguous());
    return {gx};
  }
  void release() override { idx = Tensor(); }
};

std::shared_ptr<Node> index_select_node(int64_t d, Tensor idx) {
  return std::make_shared<GatherBackNode>("index_select", kernels::index_add, d, std::move(idx));
}
std::shared_ptr<Node> gather_node(const char* label, int64_t d, Tensor idx) {
  return std::make_shared<GatherBackNode>(label, kernels::scatter_add, d, std::move(idx));
}

struct ScatterAddNode : Node {
  int64_t dim;
  Tensor idx;
  ScatterAddNode(int64_t d, Tensor i) : dim(d), idx(std::move(i)) {}
  const char* name() const override { return "scatter_add"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor gx, gs;
    if (needs(0)) gx = g;
    if (needs(2)) {
      gs = Tensor::empty(idx.shape(), g.dtype(), g.device());
      kernels::gather(g.contiguous(), dim, idx, gs);
    }
    return {gx, Tensor(), gs};
  }
  void release() override { idx = Tensor(); }
};

// idx must match x in every dim but `dim` (a stricter rule than PyTorch's, which allows
// smaller index tensors; it keeps the kernels simple and catches shape mistakes).
void check_gather_shapes(const Tensor& x, int64_t dim, const Tensor& idx, const char* op) {
  NMPERM_CHECK(idx.ndim() == x.ndim(), "{}: index {} and input {} differ in rank", op, describe(idx), describe(x));
  for (int64_t d = 0; d < x.ndim(); ++d)
    NMPERM_CHECK(d == dim || idx.shape(d) == x.shape(d), "{}: index {} must match input {} outside dim {}", op,
                 describe(idx), describe(x), dim);
}

}  // namespace

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& idx) {
  check_index(idx, "index_select");
  NMPERM_CHECK(idx.ndim() == 1, "index_select: index must be 1-d, got {}", describe(idx));
  int64_t d = wrap_dim(dim, x.ndim(), "index_select");
  Shape s = x.shape();
  s[size_t(d)] = idx.shape(0);
  Tensor out = Tensor::empty(s, x.dtype(), x.device());
  Tensor ic = idx.contiguous();
  kernels::index_select(x.contiguous(), d, ic, out);
  if (any_requires_grad({&x})) attach(out, index_select_node(d, ic), {&x});
  return out;
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  NMPERM_CHECK(weight.ndim() == 2, "embedding: weight must be (V, C), got {}", describe(weight));
  check_index(ids, "embedding");
  Tensor flat = view::reshape(ids.contiguous(), {ids.numel()});
  Tensor rows = index_select(weight, 0, flat);  // (N, C)
  Shape s = ids.shape();
  s.push_back(weight.shape(1));
  return reshape(rows, s);
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& idx) {
  check_index(idx, "gather");
  int64_t d = wrap_dim(dim, x.ndim(), "gather");
  check_gather_shapes(x, d, idx, "gather");
  Tensor out = Tensor::empty(idx.shape(), x.dtype(), x.device());
  Tensor ic = idx.contiguous();
  kernels::gather(x.contiguous(), d, ic, out);
  if (any_requires_grad({&x})) attach(out, gather_node("gather", d, ic), {&x});
  return out;
}

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& idx, const Tensor& src) {
  check_index(idx, "scatter_add");
  int64_t d = wrap_dim(dim, x.ndim(), "scatter_add");
  check_gather_shapes(x, d, idx, "scatter_add");
  NMPERM_CHECK(src.shape() == idx.shape() && src.dtype() == x.dtype(), "scatter_add: src {} must match index {}",
               describe(src), describe(idx));
  Tensor out = x.clone();
  Tensor ic = idx.contiguous();
  kernels::scatter_add(out, d, ic, src.contiguous());
  if (any_requires_grad({&x, &src})) attach(out, std::make_shared<ScatterAddNode>(d, ic), {&x, nullptr, &src});
  return out;
}

std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k, bool largest) {
  NMPERM_CHECK(x.ndim() >= 1, "topk: needs at least one dim, got {}", describe(x));
  int64_t K = x.shape(-1);
  Tensor rows = view::reshape(x.contiguous(), {-1, K});
  Shape s = x.shape();
  s.back() = k;
  NMPERM_CHECK(k >= 0 && k <= K, "topk: k = {} must lie in [0, {}] for input {}", k, K, describe(x));
  Tensor values = Tensor::empty(s, x.dtype(), x.device()), indices = Tensor::empty(s, DType::I64, x.device());
  Tensor v2 = view::reshape(values, {rows.shape(0), k}), i2 = view::reshape(indices, {rows.shape(0), k});
  kernels::topk(rows, k, largest, v2, i2);
  if (any_requires_grad({&x})) attach(values, gather_node("topk", x.ndim() - 1, indices), {&x});
  return {values, indices};
}

}  // namespace nmperm

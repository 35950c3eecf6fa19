// Shape ops: views over the same storage (reshape, transpose, permute, narrow, expand,
// (un)squeeze) and copies (contiguous, cat, stack). Their backwards are shape ops too.
#include <numeric>

#include "autograd/ops.h"
#include "core/view.h"

namespace nmperm {

namespace {

// A node whose backward is a function of the incoming gradient only.
template <class F> struct LambdaNode : Node {
  const char* label;
  F fn;
  LambdaNode(const char* l, F f) : label(l), fn(std::move(f)) {}
  const char* name() const override { return label; }
  std::vector<Tensor> backward(const Tensor& g) override { return fn(this, g); }
};

template <class F> void record(Tensor& out, const char* label, F fn, std::initializer_list<const Tensor*> inputs) {
  attach(out, std::make_shared<LambdaNode<F>>(label, std::move(fn)), inputs);
}

}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape) {
  Tensor y = view::reshape(x, shape);
  if (any_requires_grad({&x})) {
    Shape xs = x.shape();
    record(y, "reshape", [xs](Node*, const Tensor& g) { return std::vector<Tensor>{reshape(g, xs)}; }, {&x});
  }
  return y;
}

Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  if (x.ndim() == 0) return reshape(x, {1});
  int64_t s = wrap_dim(start_dim, x.ndim(), "flatten"), e = wrap_dim(end_dim, x.ndim(), "flatten");
  NMPERM_CHECK(s <= e, "flatten: start_dim {} after end_dim {}", start_dim, end_dim);
  Shape shape(x.shape().begin(), x.shape().begin() + s);
  int64_t n = 1;
  for (int64_t d = s; d <= e; ++d) n *= x.shape(d);
  shape.push_back(n);
  shape.insert(shape.end(), x.shape().begin() + e + 1, x.shape().end());
  return reshape(x, shape);
}

Tensor transpose(const Tensor& x, int64_t a, int64_t b) {
  Tensor y = view::transpose(x, a, b);
  if (any_requires_grad({&x}))
    record(y, "transpose", [a, b](Node*, const Tensor& g) { return std::vector<Tensor>{transpose(g, a, b)}; }, {&x});
  return y;
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  Tensor y = view::permute(x, dims);
  if (any_requires_grad({&x})) {
    std::vector<int64_t> inv(dims.size());
    for (size_t i = 0; i < dims.size(); ++i) inv[size_t(wrap_dim(dims[i], x.ndim()))] = int64_t(i);
    record(y, "permute", [inv](Node*, const Tensor& g) { return std::vector<Tensor>{permute(g, inv)}; }, {&x});
  }
  return y;
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  Tensor y = view::narrow(x, dim, start, length);
  if (any_requires_grad({&x})) {
    int64_t d = wrap_dim(dim, x.ndim());
    int64_t s = start < 0 ? start + x.shape(d) : start;
    record(y, "narrow", [d, s](Node* n, const Tensor& g) {
      Tensor gx = zeros(n->inputs[0].shape, g.dtype(), g.device());
      view::narrow(gx, d, s, g.shape(d)).copy_from(g);
      return std::vector<Tensor>{gx};
    }, {&x});
  }
  return y;
}

Tensor expand(const Tensor& x, const Shape& shape) {
  Tensor y = view::expand(x, shape);
  if (any_requires_grad({&x}))
    record(y, "expand", [](Node* n, const Tensor& g) { return std::vector<Tensor>{sum_to(g, n->inputs[0].shape)}; },
           {&x});
  return y;
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  Shape s = view::unsqueeze(x, dim).shape();
  return reshape(x, s);
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  Shape s = view::squeeze(x, dim).shape();
  return reshape(x, s);
}

Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  Tensor y = x.contiguous();
  if (any_requires_grad({&x}))
    record(y, "contiguous", [](Node*, const Tensor& g) { return std::vector<Tensor>{g}; }, {&x});
  return y;
}

Tensor cat(const std::vector<Tensor>& xs, int64_t dim) {
  NMPERM_CHECK(!xs.empty(), "cat: no tensors given");
  const Tensor& first = xs[0];
  int64_t d = wrap_dim(dim, first.ndim(), "cat");
  Shape shape = first.shape();
  shape[size_t(d)] = 0;
  std::vector<int64_t> sizes;
  for (auto& x : xs) {
    NMPERM_CHECK(x.ndim() == first.ndim() && x.dtype() == first.dtype() && x.device() == first.device(),
                 "cat: {} does not match {}", describe(x), describe(first));
    for (int64_t i = 0; i < x.ndim(); ++i)
      NMPERM_CHECK(i == d || x.shape(i) == first.shape(i), "cat: shapes {} and {} differ outside dim {}", x.shape(),
                   first.shape(), d);
    sizes.push_back(x.shape(d));
    shape[size_t(d)] += x.shape(d);
  }
  Tensor out = Tensor::empty(shape, first.dtype(), first.device());
  int64_t at = 0;
  for (auto& x : xs) {
    view::narrow(out, d, at, x.shape(d)).copy_from(x);
    at += x.shape(d);
  }
  bool grad = false;
  for (auto& x : xs) grad = grad || any_requires_grad({&x});
  if (grad) {
    auto fn = [d, sizes](Node* n, const Tensor& g) {
      std::vector<Tensor> gs;
      int64_t a = 0;
      for (size_t i = 0; i < sizes.size(); ++i) {
        if (n->needs(i)) gs.push_back(view::narrow(g, d, a, sizes[i]).contiguous());
        else gs.emplace_back();
        a += sizes[i];
      }
      return gs;
    };
    attach(out, std::make_shared<LambdaNode<decltype(fn)>>("cat", fn), xs);
  }
  return out;
}

Tensor stack(const std::vector<Tensor>& xs, int64_t dim) {
  NMPERM_CHECK(!xs.empty(), "stack: no tensors given");
  std::vector<Tensor> u;
  for (auto& x : xs) {
    NMPERM_CHECK(x.shape() == xs[0].shape(), "stack: shapes {} and {} differ", x.shape(), xs[0].shape());
    u.push_back(unsqueeze(x, wrap_dim(dim, x.ndim() + 1, "stack")));
  }
  return cat(u, dim);
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  int64_t d = wrap_dim(dim, x.ndim(), "split");
  int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t(0));
  NMPERM_CHECK(total == x.shape(d), "split: sizes {} sum to {}, dim {} has {}", sizes, total, d, x.shape(d));
  std::vector<Tensor> out;
  int64_t at = 0;
  for (int64_t s : sizes) {
    out.push_back(narrow(x, d, at, s));
    at += s;
  }
  return out;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  int64_t d = wrap_dim(dim, x.ndim(), "chunk");
  NMPERM_CHECK(chunks > 0 && x.shape(d) % chunks == 0, "chunk: dim {} of size {} does not split into {} equal chunks",
               d, x.shape(d), chunks);
  return split(x, std::vector<int64_t>(size_t(chunks), x.shape(d) / chunks), d);
}

}  // namespace nmperm

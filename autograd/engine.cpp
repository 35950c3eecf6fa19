#include <unordered_map>

#include "autograd/node.h"
#include "autograd/ops.h"

namespace nmperm {

namespace {
thread_local bool grad_enabled = true;
}

bool GradMode::enabled() { return grad_enabled; }
void GradMode::set(bool on) { grad_enabled = on; }

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

namespace {
Edge edge_for(const Tensor& t) {
  Edge e;
  if (t.defined() && t.requires_grad()) {
    if (t.grad_fn()) e.fn = t.grad_fn();
    else e.leaf = t.meta();
    e.shape = t.shape();
  }
  return e;
}
void finish(Tensor& out, std::shared_ptr<Node> node) {
  auto meta = std::make_shared<AutogradMeta>();
  meta->requires_grad = true;
  meta->grad_fn = std::move(node);
  out.set_meta(std::move(meta));
}
}  // namespace

void attach(Tensor& out, std::shared_ptr<Node> node, std::initializer_list<const Tensor*> inputs) {
  for (const Tensor* t : inputs) node->inputs.push_back(t ? edge_for(*t) : Edge{});
  finish(out, std::move(node));
}

void attach(Tensor& out, std::shared_ptr<Node> node, const std::vector<Tensor>& inputs) {
  for (const Tensor& t : inputs) node->inputs.push_back(edge_for(t));
  finish(out, std::move(node));
}

void backward(const Tensor& root, const Tensor& seed, bool retain_graph) {
  NMPERM_CHECK(root.defined() && root.requires_grad(),
               "backward() on a tensor that does not require grad ({}); did an op run under NoGradGuard?",
               describe(root));
  Tensor g0 = seed;
  if (!g0.defined()) {
    NMPERM_CHECK(root.numel() == 1, "backward() on a non-scalar {} needs a seed gradient of the same shape",
                 describe(root));
    g0 = ones(root.shape(), root.dtype(), root.device());
  }
  NMPERM_CHECK(g0.shape() == root.shape(), "backward(): seed {} does not match root {}", describe(g0), describe(root));
  NoGradGuard no_grad;

  auto accumulate_leaf = [](AutogradMeta& m, Tensor&& g) {
    // Out of place: several leaves may receive the very same gradient tensor. A gradient
    // nothing else references (the usual case) is adopted without a copy.
    if (m.grad.defined()) m.grad = add(m.grad, g);
    else if (g.storage().use_count() == 1 && g.is_contiguous() &&
             size_t(g.numel()) * dtype_size(g.dtype()) == g.storage()->nbytes)
      m.grad = std::move(g);
    else m.grad = g.clone();
  };
  if (!root.grad_fn()) {
    accumulate_leaf(*root.meta(), g0.clone());
    return;
  }

  // Dependency counts over the reachable graph (iterative DFS).
  std::unordered_map<Node*, int> deps;
  std::vector<Node*> stack{root.grad_fn().get()};
  deps[root.grad_fn().get()] = 0;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (auto& e : n->inputs) {
      if (!e.fn) continue;
      auto [it, fresh] = deps.try_emplace(e.fn.get(), 0);
      ++it->second;
      if (fresh) stack.push_back(e.fn.get());
    }
  }

  std::unordered_map<Node*, Tensor> grads;
  grads[root.grad_fn().get()] = g0;
  std::vector<Node*> ready{root.grad_fn().get()};
  while (!ready.empty()) {
    Node* n = ready.back();
    ready.pop_back();
    NMPERM_CHECK(!n->released,
                 "backward through {} a second time: the graph was freed by an earlier backward(); "
                 "pass retain_graph = true to the first one",
                 n->name());
    Tensor g = std::move(grads[n]);
    grads.erase(n);
    std::vector<Tensor> in_grads = n->backward(g);
    NMPERM_CHECK(in_grads.size() == n->inputs.size(), "{} backward returned {} gradients for {} inputs", n->name(),
                 in_grads.size(), n->inputs.size());
    for (size_t i = 0; i < in_grads.size(); ++i) {
      Edge& e = n->inputs[i];
      if (!e.wanted()) continue;
      Tensor& gi = in_grads[i];
      if (gi.defined())
        NMPERM_CHECK(gi.shape() == e.shape, "{} backward: gradient {} for input {} of shape {}", n->name(),
                     describe(gi), i, e.shape);
      if (e.fn) {
        if (gi.defined()) {
          auto it = grads.find(e.fn.get());
          if (it == grads.end() || !it->second.defined()) grads[e.fn.get()] = gi;
          else it->second = add(it->second, gi);
        }
        if (--deps[e.fn.get()] == 0) {
          if (!grads[e.fn.get()].defined()) grads[e.fn.get()] = zeros(e.shape, g.dtype(), g.device());
          ready.push_back(e.fn.get());
        }
      } else if (gi.defined()) {
        accumulate_leaf(*e.leaf, std::move(gi));
      }
    }
    if (!retain_graph) {
      n->release();
      n->released = true;
    }
  }
}

}  // namespace nmperm

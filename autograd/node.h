// The whole autodiff engine fits here and in engine.cpp (micrograd's idea, tensor-sized):
// every op whose inputs require grad attaches a Node to its output; the Node remembers
// where each input's gradient goes (Edge) and what it saved for its backward.
// backward() walks the nodes in reverse topological order, summing fan-in gradients.
#pragma once
#include <initializer_list>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace nmperm {

struct Edge {
  std::shared_ptr<Node> fn;          // the producer's node, or
  std::shared_ptr<AutogradMeta> leaf;  // a leaf's gradient slot; both null: no gradient wanted
  Shape shape;                       // the input's shape (gradients must match it)
  bool wanted() const { return fn || leaf; }
};

struct Node {
  std::vector<Edge> inputs;  // one per op input, in the op's argument order
  bool released = false;
  virtual ~Node() = default;
  virtual const char* name() const = 0;
  // Gradient of the loss w.r.t. each input, given the gradient w.r.t. the output.
  // Undefined tensors mean "no gradient" (allowed for inputs not wanted()).
  virtual std::vector<Tensor> backward(const Tensor& grad) = 0;
  // Frees what the node saved (called after a backward without retain_graph).
  virtual void release() {}
  bool needs(size_t i) const { return i < inputs.size() && inputs[i].wanted(); }
};

// Gradient recording is on by default and per thread.
struct GradMode {
  static bool enabled();
  static void set(bool on);
};
struct NoGradGuard {
  bool prev;
  NoGradGuard() : prev(GradMode::enabled()) { GradMode::set(false); }
  ~NoGradGuard() { GradMode::set(prev); }
};

// True when recording is on and any input requires grad.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
// Makes `out` the output of `node`, with one edge per input (in order).
void attach(Tensor& out, std::shared_ptr<Node> node, std::initializer_list<const Tensor*> inputs);
void attach(Tensor& out, std::shared_ptr<Node> node, const std::vector<Tensor>& inputs);

// Runs backpropagation from `root`. A one-element root may omit `seed` (taken as 1);
// otherwise seed has root's shape. Gradients accumulate into leaves' grad() until they
// are zeroed. The graph's saved tensors are freed unless retain_graph is set.
void backward(const Tensor& root, const Tensor& seed = Tensor(), bool retain_graph = false);

}  // namespace nmperm

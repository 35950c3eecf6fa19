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

// The rules of a Node, in one place (PyTorch keeps its in the header of derivatives.yaml):
//  1. Save only what the backward reads, and save it detached (`x.detach()`, `y.detach()`):
//     a saved tensor that still carried its grad_fn would keep the graph above it alive
//     and, for a saved output, make a cycle output -> node -> output. Detached views share
//     storage, so saving costs no copy. Prefer small statistics (mean, rstd, lse) to whole
//     inputs, and save an input only when the gradient of an input that requires grad
//     reads it.
//  2. A saved tensor must not change after the forward: there are no version counters, so
//     an in-place update of a saved input would silently give a wrong gradient.
//  3. backward(grad) runs with recording off (the engine holds a NoGradGuard), returns one
//     gradient per input in argument order, each of its input's shape (the engine checks),
//     and may return an undefined Tensor for an input that is not needs(i). It must not
//     write into `grad`: other consumers may share it.
//  4. release() drops every saved tensor (assign Tensor()); the engine calls it after the
//     node's backward unless retain_graph is set, and refuses a second backward after it.
//     Plain data (shapes, scalars, the op) may stay.
//  5. Cheap gradients are written with tensor ops (they run on any device); a dedicated
//     backward kernel is worth it only where a benchmark shows it pays.
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

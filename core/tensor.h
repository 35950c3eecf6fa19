// Tensor: a small value type over shared storage (shape, strides in elements, offset,
// dtype, device) plus an optional handle to autograd bookkeeping. Copying a Tensor is
// cheap and aliases the same data and the same gradient slot, as in PyTorch.
//
// Everything here is raw data plumbing: views made by the functions in this header are
// not recorded on the autograd tape. Differentiable ops (reshape, transpose, add, ...)
// live in autograd/ops.h and are what models and users call.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/rng.h"
#include "core/shape.h"
#include "core/storage.h"

namespace nmperm {

struct Node;
struct AutogradMeta;

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t shape(int64_t dim) const { return shape_[wrap_dim(dim, ndim())]; }
  int64_t stride(int64_t dim) const { return strides_[wrap_dim(dim, ndim())]; }
  int64_t ndim() const { return int64_t(shape_.size()); }
  int64_t numel() const { return nmperm::numel(shape_); }
  int64_t offset() const { return offset_; }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device : Device::CPU; }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  bool is_contiguous() const;

  // Typed pointer to the first element (checks the dtype).
  template <class T> T* data() const {
    NMPERM_CHECK(dtype_of<T>() == dtype_, "data<{}>() on a {} tensor of shape {}", dtype_name(dtype_of<T>()),
                 dtype_, shape_);
    return static_cast<T*>(storage_->data) + offset_;
  }
  void* raw_data() const { return static_cast<char*>(storage_->data) + offset_ * dtype_size(dtype_); }

  // Raw views and copies (not recorded by autograd; see the header comment).
  Tensor as_strided(const Shape& shape, const Shape& strides, int64_t offset) const;
  Tensor contiguous() const;  // this tensor if already contiguous, else a packed copy
  Tensor clone() const;       // always a packed copy
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  Tensor detach() const;      // same data, no autograd history
  void copy_from(const Tensor& src);  // elementwise copy, same shape, converts dtype
  double item() const;        // the value of a one-element tensor
  template <class T> std::vector<T> to_vector() const;  // elements in row-major order
  std::string str(int64_t max_per_dim = 6) const;      // readable printing

  // Autograd state (the engine is in autograd/).
  bool requires_grad() const;
  Tensor& set_requires_grad(bool on = true);
  Tensor grad() const;  // undefined until a backward reaches this tensor
  void set_grad(const Tensor& g);
  void zero_grad();
  const std::shared_ptr<Node>& grad_fn() const;
  const std::shared_ptr<AutogradMeta>& meta() const { return meta_; }
  void set_meta(std::shared_ptr<AutogradMeta> m) { meta_ = std::move(m); }
  bool is_leaf() const { return !grad_fn(); }

  // Identity of the data (same storage and layout), used by tests and the optimizer.
  bool same_data(const Tensor& o) const {
    return storage_ == o.storage_ && offset_ == o.offset_ && shape_ == o.shape_ && strides_ == o.strides_;
  }

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_, strides_;
  int64_t offset_ = 0;
  DType dtype_ = DType::F32;
  std::shared_ptr<AutogradMeta> meta_;
};

struct AutogradMeta {
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;  // null for leaves
};

// Factories.
Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
Tensor full(const Shape& shape, double value, DType dtype = DType::F32, Device device = Device::CPU);
Tensor arange(int64_t start, int64_t end, int64_t step = 1, DType dtype = DType::I64);
Tensor rand(const Shape& shape, Generator& gen, DType dtype = DType::F32);   // U[0, 1)
Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::F32);  // N(0, 1)
template <class T> Tensor from_vector(const std::vector<T>& values, const Shape& shape);
Tensor scalar_tensor(double value, DType dtype = DType::F32);
Tensor zeros_like(const Tensor& t);

std::string describe(const Tensor& t);  // "f32[2, 3] cpu" for error messages

// dst = src elementwise (same shape, any strides, converting dtype) with both on one
// device: the one operation core asks of the layer above it. Declared here, implemented
// by the kernels (kernels/dispatch.cpp), so core includes nothing from above.
void copy_elements(const Tensor& src, Tensor& dst);

}  // namespace nmperm

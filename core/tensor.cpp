#include "core/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/profile.h"

namespace nmperm {

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) NMPERM_CHECK(d >= 0, "negative dimension in shape {}", shape);
  profile::Scope timed(profile::Family::Allocation);
  Tensor t;
  t.storage_ = Storage::allocate(size_t(nmperm::numel(shape)) * dtype_size(dtype), device);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

bool Tensor::is_contiguous() const {
  int64_t expect = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expect) return false;
    expect *= shape_[i];
  }
  return true;
}

Tensor Tensor::as_strided(const Shape& shape, const Shape& strides, int64_t offset) const {
  NMPERM_CHECK(defined(), "as_strided on an undefined tensor");
  Tensor t;
  t.storage_ = storage_;
  t.shape_ = shape;
  t.strides_ = strides;
  t.offset_ = offset;
  t.dtype_ = dtype_;
  return t;
}

Tensor Tensor::detach() const { return as_strided(shape_, strides_, offset_); }

void Tensor::copy_from(const Tensor& src) {
  NMPERM_CHECK(src.shape_ == shape_, "copy_from: shape {} into {}", src.shape_, shape_);
  if (device() != src.device()) {
    // Convert and pack on the source's device, move the bytes, then unpack here if needed.
    Tensor packed = src;
    if (src.dtype_ != dtype_ || !src.is_contiguous()) {
      packed = empty(src.shape_, dtype_, src.device());
      packed.copy_from(src);
    }
    Tensor landed = is_contiguous() ? *this : empty(shape_, dtype_, device());
    cuda_copy(landed.raw_data(), packed.raw_data(), size_t(numel()) * dtype_size(dtype_),
              src.device() == Device::CPU ? CopyKind::HostToDevice : CopyKind::DeviceToHost);
    if (!is_contiguous()) copy_from(landed);
    return;
  }
  if (device() == Device::CPU && dtype_ == src.dtype_ && is_contiguous() && src.is_contiguous()) {
    std::memcpy(raw_data(), src.raw_data(), size_t(numel()) * dtype_size(dtype_));
    return;
  }
  copy_elements(src, *this);  // any strides and dtypes, on either device
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return detach();
  return clone();
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device());
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return detach();
  Tensor t = empty(shape_, dtype, device());
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return detach();
  Tensor src = contiguous();
  Tensor t = empty(shape_, dtype_, device);
  t.copy_from(src);
  return t;
}

double Tensor::item() const {
  NMPERM_CHECK(numel() == 1, "item() needs a one-element tensor, got shape {}", shape_);
  Tensor c = to(Device::CPU);
  return dispatch_all(dtype_, [&]<class T>() { return double(c.data<T>()[0]); });
}

template <class T> std::vector<T> Tensor::to_vector() const {
  Tensor c = to(Device::CPU).contiguous();
  std::vector<T> out(static_cast<size_t>(numel()));
  dispatch_all(dtype_, [&]<class S>() {
    const S* s = c.data<S>();
    for (size_t i = 0; i < out.size(); ++i) out[i] = T(s[i]);
  });
  return out;
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;

std::string describe(const Tensor& t) {
  if (!t.defined()) return "undefined tensor";
  return fmt::format("{}{} {}", t.dtype(), t.shape(), t.device());
}

std::string Tensor::str(int64_t max_per_dim) const {
  if (!defined()) return "tensor(undefined)";
  std::vector<double> v = to_vector<double>();
  bool is_int = !is_floating(dtype_);
  Shape st = contiguous_strides(shape_);
  std::string out = "tensor(";
  // Recursive printer that elides the middle of long dims like NumPy.
  auto rec = [&](auto&& self, size_t dim, int64_t base) -> void {
    if (dim == shape_.size()) {
      double x = v[size_t(base)];
      out += is_int ? fmt::format("{}", int64_t(x)) : fmt::format("{:.4f}", x);
      return;
    }
    out += "[";
    int64_t n = shape_[dim];
    for (int64_t i = 0; i < n; ++i) {
      if (n > max_per_dim && i == max_per_dim / 2) {
        out += "..., ";
        i = n - max_per_dim / 2 - 1;
        continue;
      }
      self(self, dim + 1, base + i * st[dim]);
      if (i + 1 < n) out += dim + 1 == shape_.size() ? ", " : ",\n" + std::string(7 + dim + 1, ' ');
    }
    out += "]";
  };
  if (numel() > 0 || shape_.empty()) rec(rec, 0, 0);
  else out += "[]";
  out += fmt::format(", shape={}, dtype={}", shape_, dtype_);
  if (device() != Device::CPU) out += fmt::format(", device={}", device());
  if (requires_grad()) out += ", requires_grad";
  return out + ")";
}

bool Tensor::requires_grad() const { return meta_ && meta_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool on) {
  NMPERM_CHECK(!on || !is_half(dtype_),
               "a {} tensor ({}) cannot train: 16-bit dtypes are for storage; train an f32 master copy under "
               "mixed precision (--precision {})", dtype_, describe(*this), dtype_);
  NMPERM_CHECK(!on || is_floating(dtype_), "only floating tensors can require grad, got {}", describe(*this));
  if (!meta_) meta_ = std::make_shared<AutogradMeta>();
  meta_->requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return meta_ ? meta_->grad : Tensor(); }

void Tensor::set_grad(const Tensor& g) {
  if (!meta_) meta_ = std::make_shared<AutogradMeta>();
  meta_->grad = g;
}

void Tensor::zero_grad() {
  if (meta_) meta_->grad = Tensor();
}

const std::shared_ptr<Node>& Tensor::grad_fn() const {
  static const std::shared_ptr<Node> none;
  return meta_ ? meta_->grad_fn : none;
}

// --- factories

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = Tensor::empty(shape, dtype, Device::CPU);
  int64_t n = t.numel();
  profile::Scope timed(profile::Family::Allocation);  // zeros() is part of allocating a gradient
  dispatch_all(dtype, [&]<class T>() {
    T* p = t.data<T>();
    std::fill(p, p + n, T(value));
  });
  return device == Device::CPU ? t : t.to(device);
}
Tensor zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }
Tensor scalar_tensor(double value, DType dtype) { return full({}, value, dtype); }

Tensor arange(int64_t start, int64_t end, int64_t step, DType dtype) {
  NMPERM_CHECK(step != 0, "arange: step must be non-zero");
  int64_t n = std::max<int64_t>(0, (end - start + step - (step > 0 ? 1 : -1)) / step);
  Tensor t = Tensor::empty({n}, dtype);
  dispatch_all(dtype, [&]<class T>() {
    T* p = t.data<T>();
    for (int64_t i = 0; i < n; ++i) p[i] = T(start + i * step);
  });
  return t;
}

template <class T> Tensor from_vector(const std::vector<T>& values, const Shape& shape) {
  NMPERM_CHECK(int64_t(values.size()) == numel(shape), "from_vector: {} values for shape {}", values.size(), shape);
  Tensor t = Tensor::empty(shape, dtype_of<T>());
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(T));
  return t;
}
template Tensor from_vector<float>(const std::vector<float>&, const Shape&);
template Tensor from_vector<double>(const std::vector<double>&, const Shape&);
template Tensor from_vector<int32_t>(const std::vector<int32_t>&, const Shape&);
template Tensor from_vector<int64_t>(const std::vector<int64_t>&, const Shape&);

// Element i of a rand/randn fill comes from Philox counter (first + i / 4), so the
// result does not depend on the thread count.
Tensor rand(const Shape& shape, Generator& gen, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype);
  int64_t n = t.numel();
  uint64_t first = gen.reserve(uint64_t((n + 3) / 4));
  dispatch_float(dtype, [&]<class T>() {
    T* p = t.data<T>();
#pragma omp parallel for if (n > 65536)
    for (int64_t b = 0; b < (n + 3) / 4; ++b) {
      auto r = philox4x32(gen.seed, first + uint64_t(b));
      for (int k = 0; k < 4 && b * 4 + k < n; ++k) {
        if constexpr (std::is_same_v<T, float>) p[b * 4 + k] = u32_to_unit_float(r[k]);
        else p[b * 4 + k] = double(r[k]) * (1.0 / 4294967296.0);
      }
    }
  });
  return t;
}

Tensor randn(const Shape& shape, Generator& gen, DType dtype) {
  // Box-Muller on each Philox block: 4 uniforms -> 4 normals.
  Tensor t = Tensor::empty(shape, dtype);
  int64_t n = t.numel();
  uint64_t first = gen.reserve(uint64_t((n + 3) / 4));
  dispatch_float(dtype, [&]<class T>() {
    T* p = t.data<T>();
#pragma omp parallel for if (n > 65536)
    for (int64_t b = 0; b < (n + 3) / 4; ++b) {
      auto r = philox4x32(gen.seed, first + uint64_t(b));
      double z[4];
      for (int k = 0; k < 2; ++k) {
        double u1 = (double(r[2 * k]) + 1.0) * (1.0 / 4294967297.0);  // (0, 1]
        double u2 = double(r[2 * k + 1]) * (1.0 / 4294967296.0);
        double rad = std::sqrt(-2.0 * std::log(u1));
        z[2 * k] = rad * std::cos(2.0 * M_PI * u2);
        z[2 * k + 1] = rad * std::sin(2.0 * M_PI * u2);
      }
      for (int k = 0; k < 4 && b * 4 + k < n; ++k) p[b * 4 + k] = T(z[k]);
    }
  });
  return t;
}

}  // namespace nmperm

#include "core/view.h"

namespace nmperm::view {

Shape infer_shape(const Shape& shape, int64_t n) {
  Shape out = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      NMPERM_CHECK(infer < 0, "reshape: more than one -1 in {}", shape);
      infer = int64_t(i);
    } else {
      NMPERM_CHECK(out[i] >= 0, "reshape: bad dimension in {}", shape);
      known *= out[i];
    }
  }
  if (infer >= 0) {
    NMPERM_CHECK(known > 0 && n % known == 0, "reshape: cannot infer -1 in {} for {} elements", shape, n);
    out[size_t(infer)] = n / known;
  }
  NMPERM_CHECK(numel(out) == n, "reshape: shape {} does not hold {} elements", shape, n);
  return out;
}

namespace {

// Strides for viewing t as `shape` without a copy, or empty if impossible (PyTorch's
// computeStride: split t into runs of dims that are contiguous among themselves).
bool view_strides(const Tensor& t, const Shape& shape, Shape& out) {
  if (t.numel() == 0) { out = contiguous_strides(shape); return true; }
  const Shape &os = t.shape(), &ot = t.strides();
  out.assign(shape.size(), 0);
  if (os.empty()) { for (auto& s : out) s = 1; return true; }
  int64_t view_d = int64_t(shape.size()) - 1;
  int64_t base_stride = ot.back(), tensor_numel = 1, view_numel = 1;
  for (int64_t d = int64_t(os.size()) - 1; d >= 0; --d) {
    tensor_numel *= os[size_t(d)];
    // A chunk ends where the next-outer dim is not laid out right after this run.
    if (d == 0 || (os[size_t(d - 1)] != 1 && ot[size_t(d - 1)] != tensor_numel * base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[size_t(view_d)] == 1)) {
        out[size_t(view_d)] = view_numel * base_stride;
        view_numel *= shape[size_t(view_d)];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (d > 0) {
        base_stride = ot[size_t(d - 1)];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

}  // namespace

Tensor reshape(const Tensor& t, Shape shape) {
  shape = infer_shape(shape, t.numel());
  if (t.is_contiguous()) return t.as_strided(shape, contiguous_strides(shape), t.offset());
  Shape st;
  if (view_strides(t, shape, st)) return t.as_strided(shape, st, t.offset());
  Tensor c = t.contiguous();
  return c.as_strided(shape, contiguous_strides(shape), c.offset());
}

Tensor transpose(const Tensor& t, int64_t a, int64_t b) {
  a = wrap_dim(a, t.ndim(), "transpose");
  b = wrap_dim(b, t.ndim(), "transpose");
  Shape s = t.shape(), st = t.strides();
  std::swap(s[size_t(a)], s[size_t(b)]);
  std::swap(st[size_t(a)], st[size_t(b)]);
  return t.as_strided(s, st, t.offset());
}

Tensor permute(const Tensor& t, const std::vector<int64_t>& dims) {
  NMPERM_CHECK(int64_t(dims.size()) == t.ndim(), "permute: {} dims given for a {}-d tensor", dims.size(), t.ndim());
  Shape s(dims.size()), st(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], t.ndim(), "permute");
    NMPERM_CHECK(!seen[size_t(d)], "permute: dim {} repeated in {}", d, dims);
    seen[size_t(d)] = true;
    s[i] = t.shape()[size_t(d)];
    st[i] = t.strides()[size_t(d)];
  }
  return t.as_strided(s, st, t.offset());
}

Tensor narrow(const Tensor& t, int64_t dim, int64_t start, int64_t length) {
  dim = wrap_dim(dim, t.ndim(), "narrow");
  int64_t n = t.shape()[size_t(dim)];
  if (start < 0) start += n;
  NMPERM_CHECK(start >= 0 && length >= 0 && start + length <= n, "narrow: [{}, {}) out of range for dim {} of size {}",
               start, start + length, dim, n);
  Shape s = t.shape();
  s[size_t(dim)] = length;
  return t.as_strided(s, t.strides(), t.offset() + start * t.strides()[size_t(dim)]);
}

Tensor expand(const Tensor& t, const Shape& shape) {
  NMPERM_CHECK(shape.size() >= t.shape().size(), "expand: cannot expand {} to fewer dims {}", t.shape(), shape);
  size_t lead = shape.size() - t.shape().size();
  Shape st(shape.size(), 0);
  for (size_t i = 0; i < t.shape().size(); ++i) {
    int64_t have = t.shape()[i], want = shape[lead + i];
    NMPERM_CHECK(have == want || have == 1, "expand: shape {} cannot broadcast to {}", t.shape(), shape);
    st[lead + i] = have == want ? t.strides()[i] : 0;
  }
  return t.as_strided(shape, st, t.offset());
}

Tensor unsqueeze(const Tensor& t, int64_t dim) {
  dim = wrap_dim(dim, t.ndim() + 1, "unsqueeze");
  Shape s = t.shape(), st = t.strides();
  int64_t stride = size_t(dim) < s.size() ? s[size_t(dim)] * st[size_t(dim)] : 1;
  s.insert(s.begin() + dim, 1);
  st.insert(st.begin() + dim, stride);
  return t.as_strided(s, st, t.offset());
}

Tensor squeeze(const Tensor& t, int64_t dim) {
  dim = wrap_dim(dim, t.ndim(), "squeeze");
  NMPERM_CHECK(t.shape()[size_t(dim)] == 1, "squeeze: dim {} has size {}, not 1", dim, t.shape()[size_t(dim)]);
  Shape s = t.shape(), st = t.strides();
  s.erase(s.begin() + dim);
  st.erase(st.begin() + dim);
  return t.as_strided(s, st, t.offset());
}

}  // namespace nmperm::view

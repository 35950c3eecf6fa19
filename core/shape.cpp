#include "core/shape.h"

#include <algorithm>

namespace nmperm {

void throw_error(const char* file, int line, const std::string& msg) {
  const char* base = file;
  for (const char* p = file; *p; ++p)
    if (*p == '/') base = p + 1;
  throw Error(fmt::format("{} ({}:{})", msg, base, line));
}

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) NMPERM_CHECK(!__builtin_mul_overflow(n, d, &n), "shape {} has too many elements", s);
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    // Strides skip zero dims, so a shape like (0, 2^32, 2^32) must be refused here too.
    NMPERM_CHECK(!__builtin_mul_overflow(acc, std::max<int64_t>(s[i], 1), &acc), "shape {} is too large", s);
  }
  return st;
}

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  int64_t d = dim < 0 ? dim + ndim : dim;
  NMPERM_CHECK(d >= 0 && d < ndim, "{}: dim {} out of range for a tensor with {} dims", op, dim, ndim);
  return d;
}

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    NMPERM_CHECK(da == db || da == 1 || db == 1, "shapes {} and {} do not broadcast", a, b);
    out[i] = da == 1 ? db : da;
  }
  return out;
}

}  // namespace nmperm

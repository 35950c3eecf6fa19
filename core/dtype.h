// Element types and devices: the two tags every Tensor carries.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "core/error.h"
#include "core/half.h"

namespace nmperm {

// BF16 and F16 are storage types: kernels read them and accumulate in f32 (see core/half.h).
enum class DType : uint8_t { F32, F64, I32, I64, BF16, F16 };
enum class Device : uint8_t { CPU, CUDA };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::F64: case DType::I64: return 8;
    case DType::BF16: case DType::F16: return 2;
  }
  return 0;
}
constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
  }
  return "?";
}
constexpr bool is_floating(DType t) { return t == DType::F32 || t == DType::F64; }  // compute dtypes
constexpr bool is_half(DType t) { return t == DType::BF16 || t == DType::F16; }
constexpr std::string_view device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

template <class T> constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::F32;
  else if constexpr (std::is_same_v<T, double>) return DType::F64;
  else if constexpr (std::is_same_v<T, int32_t>) return DType::I32;
  else if constexpr (std::is_same_v<T, bf16>) return DType::BF16;
  else if constexpr (std::is_same_v<T, f16>) return DType::F16;
  else { static_assert(std::is_same_v<T, int64_t>); return DType::I64; }
}

// Calls f.template operator()<T>() with T = float or double for a floating dtype.
template <class F> decltype(auto) dispatch_float(DType t, F&& f) {
  switch (t) {
    case DType::F32: return f.template operator()<float>();
    case DType::F64: return f.template operator()<double>();
    default: NMPERM_FAIL("expected a floating dtype (f32 or f64), got {}", dtype_name(t));
  }
}
// Same for integer index dtypes.
template <class F> decltype(auto) dispatch_index(DType t, F&& f) {
  switch (t) {
    case DType::I32: return f.template operator()<int32_t>();
    case DType::I64: return f.template operator()<int64_t>();
    default: NMPERM_FAIL("expected an index dtype (i32 or i64), got {}", dtype_name(t));
  }
}
// Every dtype, the 16-bit storage types included (copies, gathers, factories).
template <class F> decltype(auto) dispatch_all(DType t, F&& f) {
  switch (t) {
    case DType::F32: return f.template operator()<float>();
    case DType::F64: return f.template operator()<double>();
    case DType::I32: return f.template operator()<int32_t>();
    case DType::I64: return f.template operator()<int64_t>();
    case DType::BF16: return f.template operator()<bf16>();
    case DType::F16: return f.template operator()<f16>();
  }
  NMPERM_FAIL("bad dtype");
}

}  // namespace nmperm

template <> struct fmt::formatter<nmperm::DType> : fmt::formatter<std::string_view> {
  auto format(nmperm::DType t, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(nmperm::dtype_name(t), ctx);
  }
};
template <> struct fmt::formatter<nmperm::Device> : fmt::formatter<std::string_view> {
  auto format(nmperm::Device d, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(nmperm::device_name(d), ctx);
  }
};

#include "core/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

namespace nmperm {

using json = nlohmann::json;

const Tensor* SafeTensors::find(const std::string& name) const {
  for (auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

const Tensor& SafeTensors::at(const std::string& name) const {
  const Tensor* t = find(name);
  NMPERM_CHECK(t, "tensor '{}' not found", name);
  return *t;
}

float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

uint16_t f32_to_f16(float f) {
  _Float16 h = static_cast<_Float16>(f);  // the compiler's IEEE conversion, round to nearest even
  uint16_t u;
  std::memcpy(&u, &h, 2);
  return u;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0) {
    if (man == 0) u = sign;
    else {  // subnormal: normalise
      int e = -1;
      do { ++e; man <<= 1; } while (!(man & 0x400));
      u = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

namespace {

struct DiskType {
  const char* name;
  size_t size;
  DType dtype;  // in memory
};
const DiskType kDiskTypes[] = {{"F32", 4, DType::F32}, {"F64", 8, DType::F64}, {"BF16", 2, DType::F32},
                               {"F16", 2, DType::F32}, {"I32", 4, DType::I32}, {"I64", 8, DType::I64}};

const char* disk_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
  }
  return "?";
}

}  // namespace

SafeTensors parse_safetensors(const uint8_t* data, size_t size, const std::string& what) {
  NMPERM_CHECK(size >= 8, "{}: not a safetensors file: {} bytes is shorter than the 8-byte header length", what,
               size);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = hlen << 8 | data[i];
  NMPERM_CHECK(hlen <= size - 8, "{}: header length {} runs past the end of the file ({} bytes)", what, hlen, size);
  json header;
  try {
    header = json::parse(data + 8, data + 8 + hlen);
  } catch (const json::exception& e) {
    NMPERM_FAIL("{}: header is not valid JSON: {}", what, e.what());
  }
  NMPERM_CHECK(header.is_object(), "{}: header is not a JSON object", what);
  const uint8_t* body = data + 8 + hlen;
  const uint64_t body_size = size - 8 - hlen;

  SafeTensors out;
  struct Entry { std::string name; uint64_t begin, end; const DiskType* type; Shape shape; };
  std::vector<Entry> entries;
  for (auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      NMPERM_CHECK(v.is_object(), "{}: __metadata__ is not an object", what);
      for (auto& [k, s] : v.items()) {
        NMPERM_CHECK(s.is_string(), "{}: __metadata__ value for '{}' is not a string", what, k);
        out.metadata[k] = s.get<std::string>();
      }
      continue;
    }
    NMPERM_CHECK(v.is_object(), "{}: entry for tensor '{}' is not an object", what, name);
    NMPERM_CHECK(v.contains("dtype") && v["dtype"].is_string(), "{}: tensor '{}' has no dtype string", what, name);
    NMPERM_CHECK(v.contains("shape") && v["shape"].is_array(), "{}: tensor '{}' has no shape array", what, name);
    NMPERM_CHECK(v.contains("data_offsets") && v["data_offsets"].is_array() && v["data_offsets"].size() == 2,
                 "{}: tensor '{}' needs data_offsets [begin, end]", what, name);
    std::string dt = v["dtype"].get<std::string>();
    const DiskType* type = nullptr;
    for (auto& d : kDiskTypes)
      if (dt == d.name) type = &d;
    NMPERM_CHECK(type, "{}: tensor '{}' has unsupported dtype '{}' (supported: F32, F64, BF16, F16, I32, I64)", what,
                 name, dt);
    Shape shape;
    uint64_t count = 1;
    for (auto& d : v["shape"]) {
      NMPERM_CHECK(d.is_number_unsigned(), "{}: tensor '{}' has a shape entry that is not a non-negative integer",
                   what, name);
      uint64_t x = d.get<uint64_t>();
      NMPERM_CHECK(x == 0 || count <= (uint64_t(1) << 62) / x, "{}: tensor '{}' has an absurdly large shape", what,
                   name);
      count *= x;
      shape.push_back(int64_t(x));
    }
    auto& off = v["data_offsets"];
    NMPERM_CHECK(off[0].is_number_unsigned() && off[1].is_number_unsigned(),
                 "{}: tensor '{}' data_offsets are not non-negative integers", what, name);
    uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    NMPERM_CHECK(b <= e, "{}: tensor '{}' data_offsets [{}, {}] run backwards", what, name, b, e);
    NMPERM_CHECK(e <= body_size, "{}: tensor '{}' data_offsets [{}, {}] run past the data section ({} bytes)", what,
                 name, b, e, body_size);
    NMPERM_CHECK(e - b == count * type->size,
                 "{}: tensor '{}' holds {} bytes but dtype {} x shape {} needs {} bytes", what, name, e - b, dt,
                 shape, count * type->size);
    entries.push_back({name, b, e, type, shape});
    out.disk_dtypes[name] = dt;
  }
  std::sort(entries.begin(), entries.end(), [](auto& a, auto& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < entries.size(); ++i)
    NMPERM_CHECK(entries[i].begin >= entries[i - 1].end, "{}: tensors '{}' and '{}' overlap in the data section",
                 what, entries[i - 1].name, entries[i].name);

  for (auto& en : entries) {
    Tensor t = Tensor::empty(en.shape, en.type->dtype);
    const uint8_t* src = body + en.begin;
    size_t n = size_t(t.numel());
    std::string_view dt = en.type->name;
    if (dt == "BF16" || dt == "F16") {
      float* dst = t.data<float>();
      for (size_t i = 0; i < n; ++i) {
        uint16_t h = uint16_t(src[2 * i] | src[2 * i + 1] << 8);
        dst[i] = dt == "BF16" ? bf16_to_f32(h) : f16_to_f32(h);
      }
    } else if (n > 0) {
      std::memcpy(t.raw_data(), src, en.end - en.begin);
    }
    out.tensors.emplace_back(en.name, std::move(t));
  }
  return out;
}

SafeTensors load_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  NMPERM_CHECK(f, "cannot open '{}': {}", path, std::strerror(errno));
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  NMPERM_CHECK(!f.bad(), "error reading '{}'", path);
  return parse_safetensors(bytes.data(), bytes.size(), path);
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  std::string tmp = fmt::format("{}.tmp.{}", path, getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  NMPERM_CHECK(fd >= 0, "cannot create '{}': {}", tmp, std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      NMPERM_FAIL("writing '{}' failed after {} of {} bytes: {}; the previous file is untouched", path, done,
                  bytes.size(), std::strerror(err));
    }
    done += size_t(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    NMPERM_FAIL("flushing '{}' failed: {}; the previous file is untouched", path, std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    NMPERM_FAIL("renaming into '{}' failed: {}", path, std::strerror(err));
  }
  // The rename itself survives a power loss only once the folder is flushed too.
  std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/') + 1);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata, const std::string& float_dtype) {
  NMPERM_CHECK(float_dtype == "F32" || float_dtype == "BF16" || float_dtype == "F16",
               "save_safetensors: float dtype '{}' (F32, BF16, F16)", float_dtype);
  const bool narrow = float_dtype != "F32";
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<Tensor> packed;
  std::vector<uint64_t> sizes;
  for (auto& [name, t] : tensors) {
    NMPERM_CHECK(t.defined(), "save_safetensors: tensor '{}' is undefined", name);
    NMPERM_CHECK(!header.contains(name), "save_safetensors: duplicate tensor name '{}'", name);
    Tensor c = t.to(Device::CPU).contiguous();
    if (narrow && c.dtype() == DType::F32) {  // packed as 16-bit values in an I32 buffer
      const float* src = c.data<float>();
      Tensor h = Tensor::empty({(c.numel() + 1) / 2}, DType::I32);
      uint16_t* dst = reinterpret_cast<uint16_t*>(h.raw_data());
      for (int64_t i = 0; i < c.numel(); ++i) dst[i] = float_dtype == "BF16" ? f32_to_bf16(src[i]) : f32_to_f16(src[i]);
      uint64_t nbytes = uint64_t(c.numel()) * 2;
      header[name] = {{"dtype", float_dtype}, {"shape", c.shape()}, {"data_offsets", {offset, offset + nbytes}}};
      offset += nbytes;
      sizes.push_back(nbytes);
      packed.push_back(h);
      continue;
    }
    uint64_t nbytes = uint64_t(c.numel()) * dtype_size(c.dtype());
    sizes.push_back(nbytes);
    header[name] = {{"dtype", disk_name(c.dtype())}, {"shape", c.shape()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    packed.push_back(c);
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8) h += ' ';  // keep the data 8-byte aligned, as the format recommends
  std::string bytes;
  bytes.reserve(8 + h.size() + offset);
  uint64_t hl = h.size();
  for (int i = 0; i < 8; ++i) bytes += char((hl >> (8 * i)) & 0xff);
  bytes += h;
  for (size_t i = 0; i < packed.size(); ++i) bytes.append(static_cast<const char*>(packed[i].raw_data()), sizes[i]);
  write_file_atomic(path, bytes);
}

}  // namespace nmperm

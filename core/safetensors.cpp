#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
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

namespace {

// Every safetensors dtype nmperm reads is one of its own dtypes (element size: dtype_size).
struct DiskType {
  const char* name;
  DType dtype;
};
const DiskType kDiskTypes[] = {{"F32", DType::F32}, {"F64", DType::F64}, {"BF16", DType::BF16},
                               {"F16", DType::F16}, {"I32", DType::I32}, {"I64", DType::I64}};

const DiskType& disk_type(const std::string& name) {
  for (auto& d : kDiskTypes)
    if (name == d.name) return d;
  NMPERM_FAIL("safetensors dtype '{}' (F32, F64, BF16, F16, I32, I64)", name);
}

const char* disk_name(DType t) {
  for (auto& d : kDiskTypes)
    if (d.dtype == t) return d.name;
  return "?";
}

}  // namespace

SafeTensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& what) {
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
  const uint64_t body_size = size - 8 - hlen;

  SafeTensorsHeader out;
  out.data_start = 8 + hlen;
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
    NMPERM_CHECK(e <= body_size,
                 "{}: tensor '{}' data_offsets [{}, {}] run past the data section ({} bytes; is the file truncated?)",
                 what, name, b, e, body_size);
    NMPERM_CHECK(e - b == count * dtype_size(type->dtype),
                 "{}: tensor '{}' holds {} bytes but dtype {} x shape {} needs {} bytes", what, name, e - b, dt,
                 shape, count * dtype_size(type->dtype));
    out.entries.push_back({name, dt, shape, b, e});
  }
  std::sort(out.entries.begin(), out.entries.end(), [](auto& a, auto& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < out.entries.size(); ++i)
    NMPERM_CHECK(out.entries[i].begin >= out.entries[i - 1].end, "{}: tensors '{}' and '{}' overlap in the data section",
                 what, out.entries[i - 1].name, out.entries[i].name);
  return out;
}

Tensor decode_tensor(const TensorEntry& en, const uint8_t* src, bool keep_half) {
  const DiskType& type = disk_type(en.dtype);
  const bool widen = is_half(type.dtype) && !keep_half;
  Tensor t = Tensor::empty(en.shape, widen ? DType::F32 : type.dtype);
  size_t n = size_t(t.numel());
  if (widen) {
    float* dst = t.data<float>();
    const bool bf = type.dtype == DType::BF16;
    for (size_t i = 0; i < n; ++i) {
      uint16_t h = uint16_t(src[2 * i] | src[2 * i + 1] << 8);
      dst[i] = bf ? half_bits::bf16_to_float(h) : half_bits::f16_to_float(h);
    }
  } else if (n > 0) {
    std::memcpy(t.raw_data(), src, en.end - en.begin);
  }
  return t;
}

SafeTensors parse_safetensors(const uint8_t* data, size_t size, const std::string& what) {
  SafeTensorsHeader h = parse_safetensors_header(data, size, what);
  SafeTensors out;
  out.metadata = h.metadata;
  for (auto& en : h.entries) {
    out.disk_dtypes[en.name] = en.dtype;
    out.tensors.emplace_back(en.name, decode_tensor(en, data + h.data_start + en.begin));
  }
  return out;
}

MappedSafeTensors::MappedSafeTensors(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  NMPERM_CHECK(fd >= 0, "cannot open '{}': {}", path, std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    NMPERM_FAIL("cannot stat '{}': {}", path, std::strerror(err));
  }
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    ::close(fd);
    NMPERM_CHECK(p != MAP_FAILED, "cannot map '{}' ({} bytes): {}", path, size_, std::strerror(err));
    data_ = static_cast<const uint8_t*>(p);
  } else {
    ::close(fd);
  }
  try {
    header_ = parse_safetensors_header(data_ ? data_ : reinterpret_cast<const uint8_t*>(""), size_, path);
  } catch (...) {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
    throw;
  }
  for (size_t i = 0; i < header_.entries.size(); ++i) index_[header_.entries[i].name] = i;
}

MappedSafeTensors::~MappedSafeTensors() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

const TensorEntry* MappedSafeTensors::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.entries[it->second];
}

const uint8_t* MappedSafeTensors::bytes(const TensorEntry& en) const { return data_ + header_.data_start + en.begin; }

Tensor MappedSafeTensors::read(const TensorEntry& en, bool keep_half) const {
  Tensor t = decode_tensor(en, bytes(en), keep_half);
  release(en);
  return t;
}

void MappedSafeTensors::release(const TensorEntry& en) const {
  // Whole pages inside the tensor's bytes only: a neighbour's data may share the edges.
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  uintptr_t b = (uintptr_t(bytes(en)) + page - 1) / page * page, e = uintptr_t(bytes(en) + (en.end - en.begin)) / page * page;
  if (e > b) ::madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
}

SafeTensors load_safetensors(const std::string& path) {
  MappedSafeTensors m(path);
  SafeTensors out;
  out.metadata = m.header().metadata;
  for (auto& en : m.header().entries) {
    out.disk_dtypes[en.name] = en.dtype;
    out.tensors.emplace_back(en.name, m.read(en));
  }
  return out;
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

namespace {

// The values of t in a disk dtype: F32 tensors as F32, BF16 or F16 (rounded to nearest
// even); other dtypes as they are.
std::string encode_tensor(const Tensor& t, const std::string& dtype) {
  Tensor c = t.to(Device::CPU).contiguous();
  if (is_half(c.dtype()) && dtype != disk_name(c.dtype())) c = c.to(DType::F32);  // bf16 written as F16, say
  std::string out;
  if (c.dtype() == DType::F32 && (dtype == "BF16" || dtype == "F16")) {
    const float* src = c.data<float>();
    out.resize(size_t(c.numel()) * 2);
    const bool bf = dtype == "BF16";
    for (int64_t i = 0; i < c.numel(); ++i) {
      uint16_t h = bf ? half_bits::bf16_from_float(src[i]) : half_bits::f16_from_float(src[i]);
      out[size_t(2 * i)] = char(h & 0xff), out[size_t(2 * i + 1)] = char(h >> 8);
    }
    return out;
  }
  NMPERM_CHECK(dtype == disk_name(c.dtype()), "safetensors: cannot write a {} tensor as {}", c.dtype(), dtype);
  out.assign(static_cast<const char*>(c.raw_data()), size_t(c.numel()) * dtype_size(c.dtype()));
  return out;
}

// The header bytes (length prefix included) for entries whose offsets are set.
std::string header_bytes(const std::vector<TensorEntry>& entries, const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  for (auto& e : entries) {
    NMPERM_CHECK(!header.contains(e.name), "save_safetensors: duplicate tensor name '{}'", e.name);
    header[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {e.begin, e.end}}};
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8) h += ' ';  // keep the data 8-byte aligned, as the format recommends
  std::string out;
  uint64_t hl = h.size();
  for (int i = 0; i < 8; ++i) out += char((hl >> (8 * i)) & 0xff);
  return out + h;
}

// Sets every entry's offsets, in order, from its dtype and shape.
void lay_out(std::vector<TensorEntry>& entries) {
  uint64_t offset = 0;
  for (auto& e : entries) {
    e.begin = offset;
    e.end = offset += uint64_t(numel(e.shape)) * dtype_size(disk_type(e.dtype).dtype);
  }
}

std::string disk_dtype_of(const Tensor& t, const std::string& float_dtype) {
  return t.dtype() == DType::F32 ? float_dtype : disk_name(t.dtype());
}

void write_all(int fd, const char* p, size_t n, uint64_t at, const std::string& what) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = ::pwrite(fd, p + done, n - done, off_t(at + done));
    if (w < 0 && errno == EINTR) continue;
    NMPERM_CHECK(w > 0, "writing '{}' failed after {} of {} bytes: {}", what, done, n, std::strerror(errno));
    done += size_t(w);
  }
}

}  // namespace

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata, const std::string& float_dtype) {
  NMPERM_CHECK(float_dtype == "F32" || float_dtype == "BF16" || float_dtype == "F16",
               "save_safetensors: float dtype '{}' (F32, BF16, F16)", float_dtype);
  std::vector<TensorEntry> entries;
  for (auto& [name, t] : tensors) {
    NMPERM_CHECK(t.defined(), "save_safetensors: tensor '{}' is undefined", name);
    entries.push_back({name, disk_dtype_of(t, float_dtype), t.shape(), 0, 0});
  }
  lay_out(entries);
  std::string bytes = header_bytes(entries, metadata);
  bytes.reserve(bytes.size() + (entries.empty() ? 0 : entries.back().end));
  for (size_t i = 0; i < tensors.size(); ++i) bytes += encode_tensor(tensors[i].second, entries[i].dtype);
  write_file_atomic(path, bytes);
}

SafeTensorsWriter::SafeTensorsWriter(const std::string& path, std::vector<TensorEntry> plan,
                                     const std::map<std::string, std::string>& metadata, bool resume)
    : path_(path), temp_(path + ".partial"), entries_(std::move(plan)) {
  lay_out(entries_);
  for (size_t i = 0; i < entries_.size(); ++i) index_[entries_[i].name] = i;
  const std::string header = header_bytes(entries_, metadata);
  data_start_ = header.size();
  const uint64_t total = data_start_ + (entries_.empty() ? 0 : entries_.back().end);
  if (resume) {
    fd_ = ::open(temp_.c_str(), O_RDWR);
    NMPERM_CHECK(fd_ >= 0, "resume: cannot open '{}': {}", temp_, std::strerror(errno));
    std::string have(header.size(), '\0');
    ssize_t got = ::pread(fd_, have.data(), have.size(), 0);
    struct stat st;
    bool same = got == ssize_t(have.size()) && have == header && ::fstat(fd_, &st) == 0 && uint64_t(st.st_size) == total;
    if (!same) {
      ::close(fd_);
      fd_ = -1;
      NMPERM_FAIL("resume: '{}' was written for other tensors or settings; remove it to start afresh", temp_);
    }
    return;
  }
  fd_ = ::open(temp_.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  NMPERM_CHECK(fd_ >= 0, "cannot create '{}': {}", temp_, std::strerror(errno));
  // The whole file at once, so that a full disk shows now and not after hours of work.
  int err = ::posix_fallocate(fd_, 0, off_t(total));
  if (err != 0 && err != EOPNOTSUPP && err != EINVAL) {
    ::close(fd_);
    ::unlink(temp_.c_str());
    fd_ = -1;
    NMPERM_FAIL("cannot reserve {} bytes for '{}': {}", total, temp_, std::strerror(err));
  }
  if (err != 0) NMPERM_CHECK(::ftruncate(fd_, off_t(total)) == 0, "cannot size '{}': {}", temp_, std::strerror(errno));
  write_all(fd_, header.data(), header.size(), 0, temp_);
}

SafeTensorsWriter::~SafeTensorsWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void SafeTensorsWriter::write(const std::string& name, const Tensor& t) {
  auto it = index_.find(name);
  NMPERM_CHECK(it != index_.end(), "'{}': tensor '{}' is not in its plan", path_, name);
  const TensorEntry& e = entries_[it->second];
  NMPERM_CHECK(t.shape() == e.shape, "'{}': tensor '{}' has shape {}, its plan says {}", path_, name, t.shape(), e.shape);
  std::string bytes = encode_tensor(t, e.dtype);
  write_all(fd_, bytes.data(), bytes.size(), data_start_ + e.begin, temp_);
}

void SafeTensorsWriter::write_bytes(const std::string& name, const uint8_t* data, size_t n) {
  auto it = index_.find(name);
  NMPERM_CHECK(it != index_.end(), "'{}': tensor '{}' is not in its plan", path_, name);
  const TensorEntry& e = entries_[it->second];
  NMPERM_CHECK(n == e.end - e.begin, "'{}': tensor '{}' gets {} bytes, its plan says {}", path_, name, n, e.end - e.begin);
  write_all(fd_, reinterpret_cast<const char*>(data), n, data_start_ + e.begin, temp_);
}

void SafeTensorsWriter::sync() {
  NMPERM_CHECK(::fsync(fd_) == 0, "flushing '{}' failed: {}", temp_, std::strerror(errno));
}

void SafeTensorsWriter::finish() {
  sync();
  ::close(fd_);
  fd_ = -1;
  NMPERM_CHECK(::rename(temp_.c_str(), path_.c_str()) == 0, "renaming '{}' to '{}' failed: {}", temp_, path_,
               std::strerror(errno));
}

}  // namespace nmperm
